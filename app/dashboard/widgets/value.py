"""Value tile or gauge: the current value of one series, its unit, trend, age and state colour."""

from __future__ import annotations

import html
import math

import panel as pn
import param

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import LiveHTML, WidgetContext, WidgetView, age_seconds
from app.i18n import N_, fmt_age, fmt_number, t

STATE_COLORS = {"ok": "#2e7d32", "warning": "#ef6c00", "alarm": "#c62828", "stale": "#757575",
                "unknown": "#757575"}


class ValueSpec(WidgetSpec):
    """A big number (or a gauge) with unit, trend arrow and colour by state."""

    spec_type = "value"
    label = N_("Value tile / gauge")

    series = param.String(default="", doc="Series key (device/metric).")
    decimals = param.Integer(default=2, bounds=(0, 6), doc="Decimals shown.")
    warn_above = param.Number(default=None, allow_None=True, doc="Orange above this value.")
    alarm_above = param.Number(default=None, allow_None=True, doc="Red above this value.")
    warn_below = param.Number(default=None, allow_None=True, doc="Orange below this value.")
    alarm_below = param.Number(default=None, allow_None=True, doc="Red below this value.")
    stale_after_s = param.Number(default=120.0, bounds=(1, None), doc="Grey when older than this.")
    trend_points = param.Integer(default=10, bounds=(2, 1000), doc="Points back to compare for the trend arrow.")
    display = param.Selector(default="tile", objects=["tile", "gauge"], doc="A big number, or a half-dial gauge.")
    gauge_min = param.Number(default=0.0, doc="Gauge: value at the left end of the dial.")
    gauge_max = param.Number(default=100.0, doc="Gauge: value at the right end of the dial.")

    def series_keys(self) -> list[str]:
        return [self.series] if self.series else []

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.series:
            problems.append((("series",), "missing (required)"))
        if self.display == "gauge" and not self.gauge_min < self.gauge_max:
            problems.append((("gauge_max",), f"must be greater than gauge_min ({self.gauge_min})"))
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
        series_state = getattr(self.ctx.alarms, "series_state", None)
        ruled = series_state(self.spec.series) if series_state is not None else None
        # The worse of the tile's own thresholds and the series' alarm rules; an alarm shows even when stale.
        if ruled in ("warning", "alarm") and (state in ("ok", "stale") or (state, ruled) == ("warning", "alarm")):
            state = ruled
        if latest.quality == "bad":
            state = "stale" if state == "ok" else state
        _, values = ring.window()
        arrow = trend_arrow(values[-self.spec.trend_points:])
        color = STATE_COLORS[state]
        number = fmt_number(latest.value, self.lang, self.spec.decimals)
        quality = html.escape(t(str(latest.quality), self.lang))
        if self.spec.display == "gauge":
            return self.render_gauge(latest.value, number, html.escape(latest.unit), arrow, state, color,
                                     f"{fmt_age(age, self.lang)} · {quality}")
        unacked = getattr(self.ctx.alarms, "series_unacknowledged", None)
        unack = bool(unacked(self.spec.series)) if unacked is not None else False
        outline = "outline:3px dashed #ffd54f;" if unack else ""  # nobody acknowledged it yet
        return (
            f"<div class='vigie-tile' data-state='{state}' data-unack='{int(unack)}' "
            f"style='border-left:6px solid {color};padding:4px 10px;{outline}'>"
            f"<span class='vigie-number' style='font-size:2.2em;font-weight:600;color:{color}'>{number}</span>"
            f" <span class='vigie-unit'>{html.escape(latest.unit)}</span>"
            f" <span class='vigie-trend' style='font-size:1.6em'>{arrow}</span><br>"
            f"<small class='vigie-age'>{fmt_age(age, self.lang)} · {quality}</small>"
            "</div>"
        )

    def render_gauge(self, value: float, number: str, unit: str, arrow: str, state: str, color: str,
                     footer: str) -> str:
        """Return a half-dial SVG: the value's arc in its state colour, ticks at the thresholds."""
        spec = self.spec
        arc = _arc_point(_fraction(value, spec.gauge_min, spec.gauge_max))
        limits = ((spec.warn_above, "warning"), (spec.alarm_above, "alarm"),
                  (spec.warn_below, "warning"), (spec.alarm_below, "alarm"))
        ticks = []
        for limit, kind in limits:
            if limit is not None:
                f = _fraction(limit, spec.gauge_min, spec.gauge_max)
                (x1, y1), (x2, y2) = _arc_point(f, 66), _arc_point(f, 94)
                ticks.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                             f"stroke='{STATE_COLORS[kind]}' stroke-width='3'/>")
        lo = fmt_number(spec.gauge_min, self.lang, 0 if float(spec.gauge_min).is_integer() else spec.decimals)
        hi = fmt_number(spec.gauge_max, self.lang, 0 if float(spec.gauge_max).is_integer() else spec.decimals)
        return (
            f"<div class='vigie-tile vigie-gauge' data-state='{state}' style='text-align:center'>"
            "<svg viewBox='0 0 200 118' style='display:block;margin:auto;height:100px;max-width:100%' role='img'>"
            "<path d='M 20 100 A 80 80 0 0 1 180 100' fill='none' stroke='#e0e0e0' stroke-width='16'/>"
            f"<path d='M 20 100 A 80 80 0 0 1 {arc[0]:.1f} {arc[1]:.1f}' fill='none' stroke='{color}' "
            "stroke-width='16'/>"
            f"{''.join(ticks)}"
            f"<text x='100' y='92' text-anchor='middle' font-size='26' font-weight='600' fill='{color}' "
            f"class='vigie-number'>{number}</text>"
            f"<text x='100' y='112' text-anchor='middle' font-size='13'>{unit} {arrow}</text>"
            f"<text x='20' y='116' text-anchor='middle' font-size='10' fill='#666'>{lo}</text>"
            f"<text x='180' y='116' text-anchor='middle' font-size='10' fill='#666'>{hi}</text>"
            f"</svg><small class='vigie-age'>{footer}</small></div>"
        )

    def refresh(self) -> None:
        self.html.object = self.render()


def _fraction(value: float, low: float, high: float) -> float:
    """Return where ``value`` sits between ``low`` and ``high``, clamped to [0, 1]."""
    if not math.isfinite(value) or high <= low:
        return 0.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


def _arc_point(fraction: float, radius: float = 80.0) -> tuple[float, float]:
    """Return the point of the half dial (centre 100, 100) at ``fraction`` of the way, left to right."""
    angle = math.pi * (1 - fraction)
    return 100 + radius * math.cos(angle), 100 - radius * math.sin(angle)
