"""Light embeds: a value tile or a status grid for a public portal, without a Bokeh session.

A regular embed is a live Panel session: ~0.13 s of server time to open
one tile and ~0.6 % of a core per viewer while it is open
(bench/README.md). A city's home page may have thousands of visitors. The
light embed, ``/embed/<layout>/<widget>?mode=light``, is a small static
page whose script fetches the widget's HTML from
``/api/v1/fragments/<layout>/<widget>`` every few seconds: each viewer
costs one short HTTP request per period, rendered from the live cache by
one server-side view per widget (not per viewer).

Only widgets drawn as HTML have a light form (value tiles and gauges,
status grids); a chart or a map needs the regular embed. Read-only by
construction; framed under the same ``frame_ancestors`` policy as every
embed (the path starts with ``/embed/``).
"""

from __future__ import annotations

import html
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import tornado.web

from app.dashboard.layouts import LayoutNameError, LayoutStore
from app.dashboard.spec import title_in
from app.dashboard.view import WidgetContext
from app.i18n import negotiate

if TYPE_CHECKING:
    from app.pages.services import PageServices

LIGHT_KINDS = ("value", "status_grid")
DEFAULT_PERIOD_S = 2.0
RENDER_TTL_S = 0.5
"""A rendering is reused this long: at most two per second per widget, whatever the number of viewers."""


class LightViews:
    """One headless view per (layout, widget, language), refreshed when a fragment is asked for."""

    def __init__(self, services: PageServices, layouts: LayoutStore) -> None:
        self.services = services
        self.layouts = layouts
        self._views: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._rendered: dict[tuple[str, str, str], tuple[int, float, str]] = {}  # (mtime, when, HTML)

    def fragment(self, layout: str, widget: str, lang: str) -> tuple[int, str]:
        """Return (HTTP status, HTML): the widget as it is now, or why it cannot be shown."""
        try:
            path = self.layouts.path(layout)  # validates the name
            mtime = path.stat().st_mtime_ns
        except LayoutNameError as exc:
            return 400, html.escape(str(exc))
        except FileNotFoundError:
            return 404, html.escape(f"no layout {layout!r}")
        key = (layout, widget, lang)
        now = time.monotonic()
        rendered = self._rendered.get(key)
        if rendered is not None and rendered[0] == mtime and now - rendered[1] < RENDER_TTL_S:
            return 200, rendered[2]  # many viewers within the same instant share one rendering
        cached = self._views.get(key)
        if cached is None or cached[0] != mtime:
            loaded = self.layouts.load(layout)
            spec = loaded.spec.widget(widget)
            if spec is None:
                return 404, html.escape(f"no widget {widget!r} in layout {layout!r}")
            if spec.spec_type not in LIGHT_KINDS:
                return 400, html.escape(f"widget {widget!r} is a {spec.spec_type}: light embeds show "
                                        f"{' and '.join(LIGHT_KINDS)} widgets; use /embed/{layout}/{widget}")
            ctx = WidgetContext(live=self.services.live, lang=lang, tz=self.services.timezone,
                                alarms=self.services.alarms)
            if len(self._views) > 500:  # many edits or languages: start again
                self._views.clear()
                self._rendered.clear()
            cached = self._views[key] = (mtime, spec.view(ctx))
        view = cached[1]
        view.refresh()
        title = html.escape(title_in(view.spec, view.lang))
        heading = (f"<div class='vigie-light-title' style='font-weight:600;margin:2px 4px'>{title}</div>"
                   if title else "")
        body = heading + view.html.object
        self._rendered[key] = (mtime, now, body)
        return 200, body


class FragmentHandler(tornado.web.RequestHandler):
    """``GET /api/v1/fragments/<layout>/<widget>?lang=``: the widget's HTML now (no-store)."""

    def initialize(self, views: LightViews) -> None:
        self.views = views

    def compute_etag(self) -> str | None:
        """The fragment changes every period: no hash of it."""
        return None

    def get(self, layout: str, widget: str) -> None:
        if self.settings["vigie_auth"].embed_request_identity(self, layout, widget) is None:
            refuse_embed(self)
            return
        lang = negotiate(self.request.headers.get("Accept-Language"), self.get_query_argument("lang", None))
        status, body = self.views.fragment(layout, widget, lang)
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(body)


def refuse_embed(handler: tornado.web.RequestHandler) -> None:
    """Answer 401: the embed needs a login or a live embed link (the iframe shows this sentence)."""
    handler.set_status(401)
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.set_header("Cache-Control", "no-store")
    handler.finish("This embed link is missing, revoked or expired: ask the Vigie administrator for a new one.")


def light_page(layout: str, widget: str, lang: str, period_s: float, first: str, token: str | None = None) -> str:
    """Return the light embed's page: the first fragment and a script that fetches the next ones."""
    url = f"/api/v1/fragments/{quote(layout)}/{quote(widget)}?lang={quote(lang)}"
    if token:
        url += f"&t={quote(token)}"
    url_js = json.dumps(url).replace("<", "\\u003c")  # never a "</script>" inside the script
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Vigie · {html.escape(widget)}</title>
<style>html,body{{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}}
.vigie-stale{{opacity:.55}}</style></head>
<body><div id="vigie-light" class="vigie-light" data-layout="{html.escape(layout)}"
data-widget="{html.escape(widget)}">{first}</div>
<script>
(function () {{
  const box = document.getElementById("vigie-light");
  const url = {url_js};
  async function next() {{
    try {{
      const r = await fetch(url, {{cache: "no-store"}});
      if (r.ok) {{ box.innerHTML = await r.text(); box.classList.remove("vigie-stale"); }}
      else box.classList.add("vigie-stale");
    }} catch (e) {{ box.classList.add("vigie-stale"); }}
    setTimeout(next, {int(period_s * 1000)});
  }}
  setTimeout(next, {int(period_s * 1000)});
}})();
</script></body></html>"""


def serve_light(handler: tornado.web.RequestHandler, views: LightViews, layout: str, widget: str | None) -> None:
    """Answer ``/embed/<layout>/<widget>?mode=light`` on ``handler``."""
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    if not widget:
        handler.set_status(400)
        handler.finish("a light embed shows one widget: /embed/<layout>/<widget>?mode=light")
        return
    lang = negotiate(handler.request.headers.get("Accept-Language"), handler.get_query_argument("lang", None))
    try:
        period_s = max(1.0, min(60.0, float(handler.get_query_argument("every", str(DEFAULT_PERIOD_S)))))
    except ValueError:
        period_s = DEFAULT_PERIOD_S
    status, first = views.fragment(layout, widget, lang)
    if status != 200:
        handler.set_status(status)
        handler.finish(first)
        return
    handler.set_header("Cache-Control", "no-store")
    handler.finish(light_page(layout, widget, lang, period_s, first, handler.get_query_argument("t", None)))
