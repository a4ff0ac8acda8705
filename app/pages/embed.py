"""Embeds for the municipal portal: one layout or one widget, read-only, no chrome.

``/embed/<layout>`` and ``/embed/<layout>/<widget>`` redirect to this app
(``/embed-app?layout=..&widget=..``), which renders the dashboard or the one
widget alone, sized to the iframe, streaming live, never editable. Which
origins may frame it is the server's ``frame_ancestors`` setting
(:mod:`app.security`).
"""

from __future__ import annotations

import dataclasses
import html
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import panel as pn
import tornado.web

from app.api import camera_frame_url
from app.dashboard.dashboard import Dashboard
from app.dashboard.layouts import LayoutNameError, LayoutStore
from app.i18n import t
from app.pages.dashboards import widget_context
from app.pages.light_embed import LightViews, refuse_embed, serve_light
from app.pages.shell import session_arg, session_lang
from app.web.auth import EMBED_ARG

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth


def embed_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> pn.viewable.Viewable:
    """Build one embed session: only the layout (or the one widget) its link names."""
    lang = session_lang()
    name = session_arg("layout") or ""
    widget = session_arg("widget")
    identity = auth.page_identity()
    if identity is None or (identity.kind == "embed" and (identity.layout != name or (
            identity.widget is not None and identity.widget != widget))):
        return pn.pane.HTML(f"<p class='vigie-embed-error'>"
                            f"{html.escape(t('This embed link is missing, revoked or expired.', lang))}</p>")
    try:
        loaded = layouts.load(name)
    except (LayoutNameError, FileNotFoundError) as exc:
        return pn.pane.HTML(f"<p class='vigie-embed-error'>{html.escape(str(exc))}</p>")
    ctx = widget_context(services, lang)
    token = session_arg(EMBED_ARG)
    if identity.kind == "embed" and token:
        # The portal's iframe sends no cookie: a webcam's frames carry the embed link, as the page did.
        ctx = dataclasses.replace(ctx, image_url=lambda camera, time_ns: f"{camera_frame_url(camera, time_ns)}?"
                                                                           f"{urlencode({EMBED_ARG: token})}")
    dashboard = Dashboard(loaded, ctx, editable=False, only=widget, pulse=services.pulse)
    dashboard.start()
    pn.state.on_session_destroyed(lambda _ctx: dashboard.stop())
    return pn.Column(dashboard.grid, sizing_mode="stretch_both", margin=0, css_classes=["vigie-embed"])


class EmbedRedirect(tornado.web.RequestHandler):
    """``/embed/<layout>[/<widget>]`` → the embed app with query arguments; ``?mode=light`` → a light embed."""

    def initialize(self, light: LightViews | None = None) -> None:
        self.light = light

    def get(self, layout: str, widget: str | None = None) -> None:
        from urllib.parse import urlencode

        if self.settings["vigie_auth"].embed_request_identity(self, layout, widget) is None:
            refuse_embed(self)
            return
        if self.get_query_argument("mode", None) == "light" and self.light is not None:
            serve_light(self, self.light, layout, widget)
            return
        if self.light is not None and not known_layout(self.light.layouts, layout):
            self.set_status(404)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"no layout named {layout[:80]!r}")
            return

        args = {"layout": layout}
        if widget:
            args["widget"] = widget
        lang = self.get_query_argument("lang", None)
        if lang:
            args["lang"] = lang
        token = self.get_query_argument(EMBED_ARG, None)
        if token:
            args[EMBED_ARG] = token
        self.redirect(f"/embed-app?{urlencode(args)}")



def known_layout(layouts: LayoutStore, name: str) -> bool:
    """Return whether ``name`` is a layout that exists (False for a name that cannot be one)."""
    try:
        return layouts.exists(name)
    except LayoutNameError:
        return False


def guard_embed_app(application: tornado.web.Application, layouts: LayoutStore) -> None:
    """Answer 404 for ``/embed-app?layout=<unknown>`` before Panel builds a session for it."""
    for rule in application.wildcard_router.rules:
        regex = getattr(rule.matcher, "regex", None)
        if regex is None or regex.pattern != "/embed-app/?$":
            continue
        page_handler = rule.target

        class EmbedAppHandler(page_handler):  # type: ignore[misc, valid-type]
            async def get(self, *args, **kwargs):
                name = self.get_argument("layout", "")
                if not known_layout(layouts, name):
                    self.set_status(404)
                    self.set_header("Content-Type", "text/plain; charset=utf-8")
                    self.finish(f"no layout named {name[:80]!r}")
                    return None
                return await super().get(*args, **kwargs)

        rule.target = EmbedAppHandler
        return
    log.warning("no /embed-app route found: unknown layouts there answer 200 with a message, not 404")
