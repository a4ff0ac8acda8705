"""What a rendered widget is: a Panel object plus a ``refresh()`` pulled by its session.

A :class:`WidgetContext` carries what views read: the server-wide live
cache, the store (for history), the language, and the optional parts
(cameras, alarms). Views never subscribe to ingest; the dashboard's one
periodic callback per session calls ``refresh()`` on each view, inside one
``pn.io.hold()``, so a session costs one message a tick whatever its size.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import panel as pn
from bokeh.models import Div

from app.dashboard.spec import title_in
from app.i18n import t

if TYPE_CHECKING:
    from app.dashboard.spec import WidgetSpec
    from app.live import LiveCache
    from app.store.base import StoreEngine


@dataclass
class WidgetContext:
    """What a widget view may read."""

    live: LiveCache
    store: StoreEngine | None = None
    lang: str = "en"
    tz: str = "UTC"  # the zone times are shown in (server.timezone)
    cameras: Any = None
    alarms: Any = None
    limits: Any = None  # callable(series_key) -> list of (value, label, colour), from alarm rules
    tile_url: str | None = None
    image_url: Any = None  # callable(camera, time_ns) -> URL of a kept frame; None: frames are inlined
    extra: dict[str, Any] = field(default_factory=dict)

    def known(self, key: str) -> bool:
        """Return whether a series was ever seen (live) or is in the store's catalogue."""
        return self.live.get(key) is not None or key in self.extra.get("catalogue", ())

    def unknown(self, keys: list[str]) -> list[str]:
        """Return the series of ``keys`` nothing is known of (a typo in a layout, a removed device)."""
        return [k for k in keys if not self.known(k)]


# Inline styles: the page's stylesheet does not reach into Panel's shadow roots.
CARD_STYLE = {"background": "#fff", "border": "1px solid #dde3e8", "border-radius": "4px", "box-sizing": "border-box"}
ERROR_STYLE = "color:#b71c1c;background:#fdecea;padding:8px;border-radius:4px"


class LiveHTML:
    """A piece of HTML a view rewrites on its refreshes, as a plain Bokeh ``Div``.

    Setting ``pn.pane.HTML.object`` goes through Panel's pane machinery
    (re-deriving every property, design and stylesheet) for each session on
    each change: 13 % of the server's time with 50 sessions of the "Flood
    dams" dashboard went to its four value tiles (bench/README.md). Setting
    the ``text`` of a ``Div`` the view owns is one property change in one
    patch message. Each session builds its own views, so the model is never
    shared between documents.
    """

    def __init__(self, text: str = "", *, css_class: str = "", visible: bool = True, stretch: str = "both",
                 margin: tuple[int, int] = (0, 0)) -> None:
        self.div = Div(text=text, css_classes=[css_class] if css_class else [], visible=visible,
                       sizing_mode=f"stretch_{stretch}", margin=margin, styles={"overflow": "hidden"})
        self.panel = pn.pane.Bokeh(self.div, sizing_mode=f"stretch_{stretch}", margin=0)

    @property
    def object(self) -> str:
        """The HTML shown."""
        return self.div.text

    @object.setter
    def object(self, text: str) -> None:
        if text != self.div.text:
            self.div.text = text

    @property
    def visible(self) -> bool:
        """Whether it is shown."""
        return self.div.visible

    @visible.setter
    def visible(self, value: bool) -> None:
        if value != self.div.visible:
            self.div.visible = value


class WidgetView:
    """Base view: a titled card around the widget's own content."""

    def __init__(self, spec: WidgetSpec, ctx: WidgetContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.lang = ctx.lang
        self.notes = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 5), visible=False,
                                  css_classes=["vigie-widget-note"])
        body = self.build()
        title = pn.pane.HTML(f"<b>{html.escape(title_in(spec, self.lang))}</b>", margin=(2, 8),
                             css_classes=["vigie-widget-title"]) if spec.title else None
        parts = [p for p in (title, self.header(), self.notes, body) if p is not None]
        self.panel = pn.Column(*parts, sizing_mode="stretch_both", margin=0,
                               css_classes=["vigie-widget", f"vigie-widget-{spec.spec_type}"],
                               styles=CARD_STYLE,
                               name=spec.id)
        self.check_series()

    def build(self) -> pn.viewable.Viewable:
        """Return the widget's content."""
        raise NotImplementedError

    def header(self) -> pn.viewable.Viewable | None:
        """Return controls shown under the title (window selector...)."""
        return None

    def refresh(self) -> None:
        """Pull new data from the live cache; called by the session's periodic callback."""

    def check_series(self) -> None:
        """Show which configured series are unknown (a hand-edited typo, a removed device)."""
        unknown = self.ctx.unknown(self.spec.series_keys())
        if unknown:
            self.notes.object = (f"<span class='vigie-unknown' style='color:#b71c1c;font-size:.85em'>"
                                 f"{t('Unknown series', self.lang)}: "
                                 f"{html.escape(', '.join(unknown))}</span>")
            self.notes.visible = True
        elif self.notes.visible:
            self.notes.visible = False

    def dispose(self) -> None:
        """Drop references when the session ends."""


class ErrorView:
    """What a widget that failed to load shows in its place."""

    def __init__(self, widget_id: str, reasons: list[str]) -> None:
        text = "<br>".join(html.escape(r) for r in reasons)
        self.panel = pn.pane.HTML(f"<div class='vigie-widget-error' style='{ERROR_STYLE}'>⚠ {text}</div>",
                                  sizing_mode="stretch_both",
                                  name=widget_id)

    def refresh(self) -> None:
        """Nothing to refresh."""

    def dispose(self) -> None:
        """Nothing held."""


def age_seconds(time_ns: int) -> float:
    """Return how old an instant is, in seconds (never negative)."""
    return max(0.0, (time.time_ns() - time_ns) / 1e9)
