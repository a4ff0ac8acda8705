"""What a browser may load and run for Vigie's pages, and who may frame them: one Content-Security-Policy.

Panel, Bokeh and Tornado send no policy of their own (FIELD-NOTES). Every
response carries one ``Content-Security-Policy`` header: what the pages may
load (see docs/security.md for why each source is allowed) and, as its
``frame-ancestors``, who may frame them. Embeds (``/embed...``) may be
framed by the configured portal origins; every other page only by Vigie
itself, so the editor can never be clickjacked from another site.

The policy is the second line of defence: user text is escaped where it
becomes HTML (pages, widgets, embeds); the policy limits what an escape
missed could do (no plugin, no foreign script, no exfiltration by fetch,
no ``<base>`` hijack).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import tornado.httputil
import tornado.web

_ORIGIN = re.compile(r"(https?://[A-Za-z0-9.\-\[\]:*]+|'self'|'none')")  # fullmatch

# Bokeh and Panel render each session with inline <script> blocks whose content changes per request (ids,
# session token), so neither a hash nor a nonce can name them: 'unsafe-inline'. Bokeh compiles some models'
# code with new Function (Panel's templates and ReactiveHTML, Bokeh's CustomJS): 'unsafe-eval'. Panel's
# ES-module components are compiled in the browser and imported from a blob: URL (es-module-shims). Every
# component sets inline styles: style-src 'unsafe-inline'. Frames of webcams are URLs of this server; a
# notebook inlines them as data: URIs, and Bokeh's "save" tool makes a blob:.
_PAGE_SOURCES = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "'unsafe-inline'", "'unsafe-eval'", "blob:"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "blob:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],  # the session's websocket (ws: and wss: to this origin match 'self') and fetches
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
}


def validate_origins(origins: list[str]) -> list[str]:
    """Return the origins, or raise ValueError naming the first malformed one."""
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"frame_ancestors: {origin!r} is not an origin like https://portal.example.org")
    return origins


def origin_of(url: str | None) -> str | None:
    """Return ``scheme://host[:port]`` of an absolute http(s) URL, or None (a path on this server, nothing)."""
    if not url:
        return None
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class FramingPolicy:
    """Builds the ``Content-Security-Policy`` (and legacy ``X-Frame-Options``) of a request path."""

    def __init__(self, embed_origins: list[str], image_origins: list[str] = ()) -> None:
        sources = {k: list(v) for k, v in _PAGE_SOURCES.items()}
        sources["img-src"] += [o for o in image_origins if o]  # the map's tile server
        base = "; ".join(f"{k} {' '.join(v)}" for k, v in sources.items())
        self.embed = f"{base}; frame-ancestors " + " ".join(["'self'", *validate_origins(embed_origins)])
        self.page = f"{base}; frame-ancestors 'self'"

    def headers(self, path: str) -> dict[str, str]:
        """Return the headers a response to ``path`` must carry."""
        # nosniff: a text/plain or JSON answer echoing a name is never read as HTML.
        if path.startswith(("/embed/", "/embed-app")):
            return {"Content-Security-Policy": self.embed, "X-Content-Type-Options": "nosniff"}
        return {"Content-Security-Policy": self.page, "X-Frame-Options": "SAMEORIGIN",
                "X-Content-Type-Options": "nosniff"}


def install(application: tornado.web.Application, policy: FramingPolicy) -> None:
    """Add the policy headers to every response of a Tornado application (replacing any set before)."""

    class PolicyTransform(tornado.web.OutputTransform):
        def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
            super().__init__(request)
            self._path = request.path

        def transform_first_chunk(self, status_code, headers, chunk, finishing):  # type: ignore[override]
            for name, value in policy.headers(self._path).items():
                headers[name] = value
            return status_code, headers, chunk

    application.transforms.append(PolicyTransform)
