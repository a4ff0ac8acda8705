"""Value tile: the current value of one series, its unit, trend, age and state colour."""

from __future__ import annotations

import html

import panel as pn
import param

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import LiveHTML, WidgetContext, WidgetView, age_seconds
from app.i18n import fmt_age, fmt_number, t

STATE_COLORS = {"ok": "#2e7d32", "warning": "#ef6c00", "alarm": "#c62828", "stale": "#757575",
                "unknown": "#757575"}


class ValueSpec(WidgetSpec):
    """A big number with unit, trend arrow and colour by state."""

    spec_type = "value"
    label = "Value tile"

    series = param.String(default="", doc="Series key (device/metric).")
    decimals = param.Integer(default=2, bounds=(0, 6), doc="Decimals shown.")
    warn_above = param.Number(default=None, allow_None=True, doc="Orange above this value.")
    alarm_above = param.Number(default=None, allow_None=True, doc="Red above this value.")
    warn_below = param.Number(default=None, allow_None=True, doc="Orange below this value.")
    alarm_below = param.Number(default=None, allow_None=True, doc="Red below this value.")
    stale_after_s = param.Number(default=120.0, bounds=(1, None), doc="Grey when older than this.")
    trend_points = param.Integer(default=10, bounds=(2, 1000), doc="Points back to compare for the trend arrow.")

    def series_keys(self) -> list[str]:
        return [self.series] if self.series else []

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.series:
            problems.append((("series",), "missing (required)"))
        return problems

    def state(self, value: float, age_s: float) -> str:
        """Return ok / warning / alarm / stale for a value and its age."""
        if age_s > self.stale_after_s:
            return "stale"
        if (self.alarm_above is not None and value > self.alarm_above) or (
                self.alarm_below is not None and value < self.alarm_below):
            return "alarm"
        if (self.warn_above is not None and value > self.warn_above) or (
                self.warn_below is not None and value < self.warn_below):
            return "warning"
        return "ok"

    def view(self, ctx: WidgetContext) -> ValueView:
        """Return the live view."""
        return ValueView(self, ctx)


def trend_arrow(values, tolerance: float = 1e-9) -> str:
    """Return ↗, ↘ or → comparing the last value with the first of ``values``."""
    if len(values) < 2:
        return "→"
    delta = float(values[-1]) - float(values[0])
    scale = max(abs(float(values[0])), 1.0) * 1e-3
    if delta > max(tolerance, scale):
        return "↗"
    if delta < -max(tolerance, scale):
        return "↘"
    return "→"


class ValueView(WidgetView):
    """Re-renders its small HTML only when what it shows changed."""

    spec: ValueSpec

    def build(self) -> pn.viewable.Viewable:
        self.html = LiveHTML(css_class="vigie-value")
        self.refresh()
        return self.html.panel

    def render(self) -> str:
        """Return the tile's HTML for the latest value."""
        ring = self.ctx.live.get(self.spec.series)
        latest = ring.latest() if ring else None
        if latest is None:
            return f"<div class='vigie-tile' data-state='unknown'>{t('No data yet', self.lang)}</div>"
        age = age_seconds(latest.time_ns)
        state = self.spec.state(latest.value, age)
        if latest.quality == "bad":
            state = "stale" if state == "ok" else state
        _, values = ring.window()
        arrow = trend_arrow(values[-self.spec.trend_points:])
        color = STATE_COLORS[state]
        number = fmt_number(latest.value, self.lang, self.spec.decimals)
        return (
            f"<div class='vigie-tile' data-state='{state}' style='border-left:6px solid {color};padding:4px 10px'>"
            f"<span class='vigie-number' style='font-size:2.2em;font-weight:600;color:{color}'>{number}</span>"
            f" <span class='vigie-unit'>{html.escape(latest.unit)}</span>"
            f" <span class='vigie-trend' style='font-size:1.6em'>{arrow}</span><br>"
            f"<small class='vigie-age'>{fmt_age(age, self.lang)} · {t(str(latest.quality), self.lang)}</small>"
            "</div>"
        )

    def refresh(self) -> None:
        self.html.object = self.render()
