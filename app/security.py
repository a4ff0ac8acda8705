"""Who may frame Vigie's pages: a ``frame-ancestors`` policy on every response.

Panel, Bokeh and Tornado send no framing policy of their own (FIELD-NOTES).
Embeds (``/embed...``) may be framed by the configured portal origins; every
other page only by Vigie itself, so the editor can never be clickjacked
from another site.
"""

from __future__ import annotations

import re

import tornado.httputil
import tornado.web

_ORIGIN = re.compile(r"(https?://[A-Za-z0-9.\-\[\]:*]+|'self'|'none')")  # fullmatch


def validate_origins(origins: list[str]) -> list[str]:
    """Return the origins, or raise ValueError naming the first malformed one."""
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"frame_ancestors: {origin!r} is not an origin like https://portal.example.org")
    return origins


class FramingPolicy:
    """Builds the header values for a request path."""

    def __init__(self, embed_origins: list[str]) -> None:
        self.embed = "frame-ancestors " + " ".join(["'self'", *validate_origins(embed_origins)])

    def headers(self, path: str) -> dict[str, str]:
        """Return the headers a response to ``path`` must carry."""
        if path.startswith(("/embed/", "/embed-app")):
            return {"Content-Security-Policy": self.embed}
        return {"Content-Security-Policy": "frame-ancestors 'self'", "X-Frame-Options": "SAMEORIGIN"}


def install(application: tornado.web.Application, policy: FramingPolicy) -> None:
    """Add the framing headers to every response of a Tornado application."""

    class FramingTransform(tornado.web.OutputTransform):
        def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
            super().__init__(request)
            self._path = request.path

        def transform_first_chunk(self, status_code, headers, chunk, finishing):  # type: ignore[override]
            for name, value in policy.headers(self._path).items():
                headers[name] = value
            return status_code, headers, chunk

    application.transforms.append(FramingTransform)
