"""The wall display: the control-room screen, rotating through chosen dashboards in large type.

``/wall?layouts=flood-dams,servers&every=30`` shows each layout in turn for
``every`` seconds; without arguments, ``overview.wall_layouts`` and
``overview.wall_every_s`` from the config (else every layout, 30 s). The
name ``overview`` (unless a layout of that name exists) is the site
overview, in large type. No navigation, no editor, nothing to click that
changes anything: a viewer's login or ``server.anonymous_read`` is enough.

Every dashboard of the rotation is built once, when the page opens (off
the event loop, like every page), and stays live; turning to the next one
only changes which one is visible.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import panel as pn

from app.dashboard.dashboard import Dashboard
from app.dashboard.layouts import LayoutNameError, LayoutStore
from app.i18n import t
from app.pages.dashboards import widget_context
from app.pages.overview import REFRESH_MS, Overview
from app.pages.shell import AlarmBanner, session_arg, session_lang
from app.refresh import every
from app.web.access import allowed

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

OVERVIEW = "overview"
MAX_LAYOUTS = 20
TEXT_SIZE = "18px"  # the wall's text, against the pages' 12 px (read from across the control room)
HEADER_STYLE = ("display:flex;align-items:center;gap:1.2em;background:#0b3d5c;color:#fff;padding:10px 24px;"
                "font-family:sans-serif;")
FULLSCREEN_JS = ("document.fullscreenElement ? document.exitFullscreen() : "
                 "document.documentElement.requestFullscreen()")


def wall_settings(services: PageServices, layouts: LayoutStore) -> tuple[list[str], float]:
    """Return the layouts to rotate through and the seconds each one stays (the link's, else the config's)."""
    cfg = services.overview
    arg = session_arg("layouts")
    names = [n.strip() for n in arg.split(",") if n.strip()] if arg else list(cfg.wall_layouts) or layouts.names()
    try:
        period = float(session_arg("every") or cfg.wall_every_s)
    except ValueError:
        period = cfg.wall_every_s
    return names[:MAX_LAYOUTS], min(max(period, 1.0), 3600.0)


class Wall:
    """One wall session: its screens (dashboards, or the overview), the header, the rotation."""

    def __init__(self, services: PageServices, layouts: LayoutStore, lang: str) -> None:
        self.services = services
        self.lang = lang
        names, self.period = wall_settings(services, layouts)
        self.screens: list[tuple[str, str, pn.viewable.Viewable]] = []  # (name, title, what is shown)
        self.dashboards: list[Dashboard] = []
        self.problems: list[str] = []
        ctx = widget_context(services, lang)
        for name in names:
            if name == OVERVIEW and not _exists(layouts, name):
                overview = Overview(services, layouts, lang, large=True)
                every(overview.refresh, REFRESH_MS)
                self.screens.append((name, t("Overview", lang), overview.view))
                continue
            try:
                loaded = layouts.load(name)
            except (LayoutNameError, FileNotFoundError) as exc:
                self.problems.append(str(exc))
                continue
            dashboard = Dashboard(loaded, ctx, editable=False, pulse=services.pulse)
            dashboard.start()
            self.dashboards.append(dashboard)
            self.screens.append((name, loaded.spec.title, dashboard.grid))
        self.index = 0
        self.header = pn.pane.HTML("", sizing_mode="stretch_width", margin=0, css_classes=["vigie-wall-header"])
        self.banner = AlarmBanner(services, lang)
        # Large type: every Bokeh/Panel element sizes its text from --bokeh-font-size (12px unless set), a
        # custom property, inherited into their shadow roots; the widgets' own sizes are in em of it.
        self.body = pn.Column(*(view for _n, _t, view in self.screens), sizing_mode="stretch_width", margin=(8, 12),
                              css_classes=["vigie-wall-body"],
                              stylesheets=[f":host {{ --bokeh-font-size: {TEXT_SIZE}; font-size: {TEXT_SIZE}; }}"])
        self.show(0)
        if len(self.screens) > 1:
            every(self.rotate, int(self.period * 1000))

    def show(self, index: int) -> None:
        """Show screen ``index`` and say which it is in the header."""
        if not self.screens:
            text = t("Nothing to show: name layouts in the link (/wall?layouts=a,b) or in overview.wall_layouts",
                     self.lang)
            self.body[:] = [pn.pane.HTML("<p class='vigie-wall-empty' style='font-size:2em'>"
                                         f"{html.escape(text)}<br>{html.escape('; '.join(self.problems))}</p>")]
            return
        self.index = index % len(self.screens)
        name, title, _view = self.screens[self.index]
        position = f"{self.index + 1} / {len(self.screens)}" if len(self.screens) > 1 else ""
        # Every screen is in the page from the start, hidden but the one shown: turning is two visibility
        # changes, where swapping the grids in and out made the browser build each again (seconds, under load).
        # Not under pn.io.hold: changes made from a periodic callback inside it were sometimes never sent.
        for i, (_name, _title, view) in enumerate(self.screens):
            if view.visible != (i == self.index):
                view.visible = i == self.index
        self.header.object = (
            f"<div style='{HEADER_STYLE}'><span class='vigie-wall-title' data-layout='{html.escape(name)}' "
            f"style='font-size:2.6em;font-weight:700;flex:1'>{html.escape(title)}</span>"
            f"<span class='vigie-wall-position' style='font-size:1.6em;opacity:.8'>{position}</span>"
            f"<button class='vigie-wall-fullscreen' title='{html.escape(t('Full screen', self.lang))}' "
            f"onclick=\"{FULLSCREEN_JS}\" style='font-size:1.6em;background:none;color:#fff;border:1px solid "
            f"#cfe3f0;border-radius:4px;cursor:pointer'>⛶</button></div>")

    def rotate(self) -> None:
        """Turn to the next screen."""
        self.show(self.index + 1)

    def stop(self) -> None:
        for dashboard in self.dashboards:
            dashboard.stop()

    def view(self) -> pn.viewable.Viewable:
        top = pn.Row(self.header, *self.banner.view(), sizing_mode="stretch_width", margin=0,
                     styles={"background": "#0b3d5c"})
        return pn.Column(top, self.body, sizing_mode="stretch_width", margin=0, css_classes=["vigie-wall"])


def _exists(layouts: LayoutStore, name: str) -> bool:
    try:
        return layouts.exists(name)
    except LayoutNameError:
        return False


def wall_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> Any:
    """Build one wall session (``/wall``): read-only, for anybody who may view the pages."""
    lang = session_lang()
    identity = auth.page_identity()
    if not allowed(identity, "view") or identity is None or identity.kind == "embed":
        return pn.pane.HTML(f"<p class='vigie-wall-error'>{html.escape(t('Log in first', lang))}</p>")
    wall = Wall(services, layouts, lang)
    pn.state.on_session_destroyed(lambda _ctx: wall.stop())
    return wall.view()
