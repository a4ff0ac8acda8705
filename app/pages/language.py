"""The language switch: ``/lang/<code>`` remembers the choice in a cookie and goes back to the page.

The switch used to be a ``?lang=`` link, which replaced the page's own query
(``/dashboard?name=x`` became ``/dashboard?lang=fr``, a page with no layout)
and was forgotten on the next navigation link. A cookie keeps the choice for
every page; the handler returns to the page the link was clicked on (its
``Referer``: its local path only, so the switch cannot be used as an open redirect).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import tornado.web

from app.i18n import LANGUAGES

COOKIE = "vigie_lang"


def back_to(referer: str | None) -> str:
    """Return the local path (with its query, less any ``lang``) of the page the switch was clicked on.

    Only the Referer's path and query are kept, whatever host it names: a
    reverse proxy may pass Vigie another Host than the browser's, and a local
    path cannot lead off the site (paths that a browser would read as another
    host, ``//host`` or ``/\\host``, go to ``/``).
    """
    if not referer:
        return "/"
    parts = urlsplit(referer)
    if not parts.path.startswith("/") or parts.path.startswith(("//", "/\\")):
        return "/"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "lang"])
    return parts.path + (f"?{query}" if query else "")


class LanguageHandler(tornado.web.RequestHandler):
    """``GET /lang/<code>``: set the language cookie and return to the page the switch was clicked on."""

    def get(self, code: str) -> None:
        if code not in LANGUAGES:
            raise tornado.web.HTTPError(404, f"unknown language {code!r}; known: {', '.join(LANGUAGES)}")
        self.set_cookie(COOKIE, code, path="/", expires_days=365, samesite="Lax", httponly=True)
        self.redirect(back_to(self.request.headers.get("Referer")))
