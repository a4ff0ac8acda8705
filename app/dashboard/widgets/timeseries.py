"""Streaming time series: one or several series, limit lines, a window, pause, history.

The plot is a Bokeh figure built once per session and fed by streaming only
the new points into each curve's ``ColumnDataSource``. FIELD-NOTES measured
this at ~1.4 % of a core per session, where HoloViews ``Buffer`` streams
cost ~22 % and rebuilding the pane ~91 %. It is built with Bokeh directly,
not rendered from a HoloViews overlay: HoloViews gave every curve selection,
non-selection and muted glyphs and made 184 models per chart; this figure
has 80 for five series (bench/README.md, sessions), and every session's
document, each patch message and each garbage collection pays per model.

The live ring holds about the last hour. Whatever the view shows beyond it
(a longer window, or a pan or zoom into the past) is drawn from the store,
already reduced to ``HISTORY_BUCKETS`` min/mean/max buckets: a faint band
and a mean line under the live curve.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.document import without_document_lock
from bokeh.events import RangesUpdate, Reset
from bokeh.models import (
    AllIndices,
    CDSView,
    ColumnDataSource,
    DataRange1d,
    GlyphRenderer,
    Label,
    Legend,
    LegendItem,
    Line,
    MultiLine,
    Patches,
    Range1d,
    Scatter,
    Span,
)
from bokeh.plotting import figure

from app.dashboard.spec import WidgetSpec
from app.dashboard.time_axis import localize_time_axis
from app.dashboard.view import WidgetContext, WidgetView
from app.i18n import N_, t

WINDOWS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400}
HISTORY_BUCKETS = 600
# Series colours leave out red, orange and green: operators read those as alarm, warning and normal
# (the tiles and the status grid use them so), so a series must not look like a limit or a state.
PALETTE = ["#1f77b4", "#17becf", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79"]
LIMIT_COLOR = "#b2182b"


class TimeSeriesSpec(WidgetSpec):
    """A live line chart of one or several series."""

    spec_type = "timeseries"
    label = N_("Time series")

    series = param.List(default=[], item_type=str, doc="Series keys (device/metric).")
    window = param.Selector(default="15m", objects=list(WINDOWS), doc="Time window shown.")
    limits = param.List(default=[], item_type=dict,
                        doc="Extra limit lines: {value, label, color}. Alarm rule limits are added.")
    show_alarm_limits = param.Boolean(default=True, doc="Draw the limits of the series' alarm rules.")
    y_label = param.String(default="", doc="Y axis label (default: the unit).")
    colors = param.List(default=[], item_type=str, doc="One colour per series (default palette).")

    def series_keys(self) -> list[str]:
        return list(self.series)

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        for i, limit in enumerate(self.limits):
            unknown = set(limit) - {"value", "label", "color"}
            if unknown:
                problems.append((("limits", i), f"unknown key(s) {', '.join(sorted(unknown))}; "
                                 "use value, label, color"))
            if not isinstance(limit.get("value"), int | float):
                problems.append((("limits", i, "value"), "expected a number"))
        return problems

    def view(self, ctx: WidgetContext) -> TimeSeriesView:
        """Return the live view."""
        return TimeSeriesView(self, ctx)


def bare_renderer(source: ColumnDataSource, glyph: Any, **kwargs: Any) -> GlyphRenderer:
    """Return a renderer without selection, non-selection, hover or muted glyphs.

    Nothing on these charts selects; each of those glyphs would be one more
    model per curve in every session's document.
    """
    return GlyphRenderer(data_source=source, glyph=glyph, selection_glyph=None, nonselection_glyph=None,
                         hover_glyph=None, muted_glyph=None, **kwargs)


class TimeSeriesView(WidgetView):
    """Streams new points of each series into its curve's data source."""

    spec: TimeSeriesSpec

    def build(self) -> pn.viewable.Viewable:
        self.window_s = WINDOWS[self.spec.window]
        self.paused = False
        self._seq: dict[str, int] = {}
        self.colors = {key: self.spec.colors[i] if i < len(self.spec.colors) else PALETTE[i % len(PALETTE)]
                       for i, key in enumerate(self.spec.series)}
        unit = next((ring.unit for ring in map(self.ctx.live.get, self.spec.series) if ring and ring.unit), "")
        # The x range trails the newest point by the window; both ranges follow the streamed data.
        fig = figure(
            x_axis_type="datetime", sizing_mode="stretch_both", width=None, height=None, min_height=150,
            toolbar_location="above",
            tools="xpan,xwheel_zoom,reset,save", active_drag="xpan", active_scroll="xwheel_zoom",
            reset_policy="event_only",  # Reset sends only its event; the server gives a fresh range
            y_range=DataRange1d(range_padding=0.1), y_axis_label=self.spec.y_label or unit or t("value", self.ctx.lang),
        )
        fig.toolbar.logo = None
        localize_time_axis(fig, self.lang, self.ctx.tz)
        fig.xgrid.grid_line_alpha = fig.ygrid.grid_line_alpha = 0.5
        self.figure = fig
        self.sources: dict[str, ColumnDataSource] = {}
        items = []
        every_point = AllIndices()  # stateless: one filter for all the curves' views
        for key, color in self.colors.items():
            src = self.sources[key] = ColumnDataSource(
                {"time": np.array([], dtype="datetime64[ns]"), "value": np.array([], dtype=float)})
            renderer = bare_renderer(src, Line(x="time", y="value", line_color=color, line_width=2),
                                     view=CDSView(filter=every_point))
            fig.renderers.append(renderer)
            items.append(LegendItem(label=key, renderers=[renderer]))
        if items:
            # Beside the plot, not over the newest points; a click hides a curve.
            fig.add_layout(Legend(items=items, click_policy="hide", spacing=0, padding=2, margin=4,
                                  label_text_font_size="8pt", glyph_width=14, border_line_alpha=0), "right")
        lines = [(lim["value"], lim.get("label", ""), lim.get("color", LIMIT_COLOR)) for lim in self.spec.limits]
        if self.spec.show_alarm_limits and self.ctx.limits is not None:
            for key in self.spec.series:
                lines += list(self.ctx.limits(key))
        lines = list(dict.fromkeys(lines))  # a glob rule over several series of the chart: one line
        for value, label, color in lines:
            fig.add_layout(Span(location=value, dimension="width", line_color=color, line_dash="dashed",
                                line_width=1.5))
            if label:
                fig.add_layout(Label(x=4, y=value, x_units="screen", text=label, text_color=color,
                                     text_font_size="8pt", y_offset=-12))  # under the line: never clipped
        if lines:  # keep the limits in view: an invisible point at each widens the y range to them
            marks = ColumnDataSource({"time": np.full(len(lines), np.datetime64(time.time_ns(), "ns")),
                                      "value": np.array([v for v, _, _ in lines], dtype=float)})
            fig.renderers.append(bare_renderer(marks, Scatter(x="time", y="value", size=0, line_alpha=0,
                                                              fill_alpha=0)))
        self.limit_lines = lines
        self._curves = [r for r in fig.renderers if isinstance(r.glyph, Line)]
        self.history: dict[str, dict[str, np.ndarray]] = {}
        self._history_renderers: list[GlyphRenderer] = []  # band and mean line, once history was drawn
        self._view: tuple[float, float] | None = None  # the browser's x range (ms) after the last pan or zoom
        fig.x_range = self._following_range()
        fig.on_event(RangesUpdate, self._on_ranges)
        fig.on_event(Reset, self._on_reset)
        self._target: tuple[int, int] | None = None  # the time range of the history drawn or being queried
        self._loading = False
        self._history_next: tuple[int, int] | None = None
        self._history_wanted: tuple[int, int] | None = self._gap(time.time_ns() - self.window_s * 10**9)
        self.history_loads = 0
        self.refresh()
        return pn.pane.Bokeh(fig, sizing_mode="stretch_both", min_height=150)

    # -- history from the store ------------------------------------------------
    def _oldest_live_ns(self) -> int:
        oldest = time.time_ns()
        for key in self.spec.series:
            ring = self.ctx.live.get(key)
            if ring is not None and ring.seq:
                times, _ = ring.window()
                oldest = min(oldest, int(times.min()))
        return oldest

    def _gap(self, start_ns: int) -> tuple[int, int] | None:
        """Return the part of [start, now) the live ring does not cover, if any."""
        end_ns = self._oldest_live_ns()
        return (start_ns, end_ns) if self.ctx.store is not None and start_ns < end_ns else None

    def _follow(self) -> None:
        """Trail the newest point by the window again, with a fresh x range, and draw its history.

        A fresh model, because BokehJS stops auto-ranging an x range the user
        panned or zoomed. The range follows the curves and the history, not
        the limit marks.
        """
        self._view = None
        self.figure.x_range = self._following_range()
        gap = self._gap(time.time_ns() - self.window_s * 10**9)
        if gap is not None and not self._covered(gap):
            self._schedule_history(gap)

    def _following_range(self) -> DataRange1d:
        """Return an x range trailing the newest point by the window (curves and history only)."""
        return DataRange1d(follow="end", follow_interval=self.window_s * 1000, range_padding=0,
                           renderers=self._history_renderers + self._curves)

    def _covered(self, gap: tuple[int, int]) -> bool:
        """Whether the history drawn (or being queried) holds ``gap`` at a resolution fine enough for it."""
        if self._target is None:
            return False
        lo, hi = self._target
        return lo <= gap[0] and gap[1] <= hi and (gap[1] - gap[0]) * 4 > hi - lo

    def _on_ranges(self, event: RangesUpdate) -> None:
        """After a pan or zoom: stop following (as the browser does), draw what lies before the live data.

        Only the user's tools send this: the figure's reset policy makes the
        Reset tool send its own event instead of a range update.
        """
        if event.x0 is None or event.x1 is None:
            return
        self._view = (float(event.x0), float(event.x1))
        if not self.paused:
            self.pause_button.value = True
        start_ns, end_ns = int(event.x0 * 1e6), int(event.x1 * 1e6)
        gap = self._gap(start_ns)
        if gap is None:
            return
        gap = (gap[0], min(gap[1], max(end_ns, gap[0] + 1)))
        if not self._covered(gap):
            self._schedule_history(gap)

    def _on_reset(self, _event: Reset) -> None:
        """The Reset tool: follow the newest data over the window again."""
        if self.paused:
            self.pause_button.value = False  # follows (_on_pause)
        else:
            self._follow()

    def _schedule_history(self, gap: tuple[int, int]) -> None:
        self._history_wanted = gap
        doc = self.figure.document
        if doc is None:
            return
        self._history_wanted = None
        self._target = gap
        if self._loading:  # one query at a time per chart; the latest wish waits for it
            self._history_next = gap
            return
        self._loading = True
        try:
            # A callback of the session's own, without its document lock: the views keep refreshing
            # while the store answers; the answer is applied under the lock (load_history).
            doc.add_next_tick_callback(without_document_lock(functools.partial(self.load_history, *gap)))
        except Exception:
            self._loading = False
            raise

    async def load_history(self, start_ns: int, end_ns: int) -> None:
        """Query the store for [start, end) of every series and draw it under the live curves."""
        data: dict[str, dict] = {}
        try:
            for key in self.spec.series:
                env = await self.ctx.store.envelope(key, start_ns, end_ns, HISTORY_BUCKETS)
                data[key] = {"time": np.asarray(env.time_ns, dtype="int64").astype("datetime64[ns]"),
                             "min": env.min, "mean": env.mean, "max": env.max}
        except Exception:
            self._target = None  # nothing drawn for it: a later view may ask again
            raise
        finally:
            self._loading = False
            if self._history_next is not None:
                wanted, self._history_next = self._history_next, None
                self._schedule_history(wanted)
        doc = self.figure.document
        if doc is not None:
            doc.add_next_tick_callback(lambda: self._apply_history(data))
        else:
            self._apply_history(data)

    def _apply_history(self, data: dict[str, dict]) -> None:
        """Draw the store's envelopes: one band glyph and one mean glyph for all series.

        Created on the first load only: most sessions never look past the live ring,
        and two renderers per series would double the models of every session.
        """
        self.history.update(data)
        xs, band_ys, mean_ys, colors = [], [], [], []
        for key, columns in self.history.items():
            t_ms = columns["time"].astype("datetime64[ns]").astype("int64") / 1e6
            lo, mean, hi = (np.asarray(columns[c], dtype=float) for c in ("min", "mean", "max"))
            xs.append(t_ms)
            band_ys.append(np.concatenate([lo, hi[::-1]]))
            mean_ys.append(mean)
            colors.append(self.colors.get(key, PALETTE[0]))
        bands = {"xs": [np.concatenate([x, x[::-1]]) for x in xs], "ys": band_ys, "color": colors}
        means = {"xs": xs, "ys": mean_ys, "color": colors}
        if not self._history_renderers:
            under = [
                bare_renderer(ColumnDataSource(bands),
                              Patches(xs="xs", ys="ys", fill_color="color", fill_alpha=0.15, line_color=None)),
                bare_renderer(ColumnDataSource(means), MultiLine(xs="xs", ys="ys", line_color="color", line_alpha=0.6)),
            ]
            self.figure.renderers = under + list(self.figure.renderers)
            self._history_renderers = under
            if isinstance(self.figure.x_range, DataRange1d):
                self.figure.x_range.renderers = under + self._curves
        else:
            band, mean = self._history_renderers
            band.data_source.data = bands
            mean.data_source.data = means
        self.history_loads += 1

    def header(self) -> pn.viewable.Viewable:
        self.window_select = pn.widgets.Select(
            label="", options=list(WINDOWS), value=self.spec.window, width=80, margin=(0, 5),
            css_classes=["vigie-window"])
        self.pause_button = pn.widgets.Toggle(label=t("Pause", self.lang), width=90, margin=(0, 5),
                                              css_classes=["vigie-pause"])
        self.window_select.param.watch(self._on_window, "value")
        self.pause_button.param.watch(self._on_pause, "value")
        return pn.Row(pn.pane.HTML(t("Window", self.lang), margin=(6, 5)), self.window_select,
                      self.pause_button, margin=0, height=36)

    def _on_window(self, event: param.parameterized.Event) -> None:
        """A new window: follow the newest data over it, drawn from the store where the ring ends."""
        self.window_s = WINDOWS[event.new]
        if self.paused:
            self.pause_button.value = False  # follows again, with the new window
        else:
            self._follow()

    def _on_pause(self, event: param.parameterized.Event) -> None:
        """Pause freezes the chart where it is; Resume streams what came meanwhile and follows again."""
        self.paused = bool(event.new)
        self.pause_button.label = t("Resume" if self.paused else "Pause", self.lang)
        if self.paused:
            self._freeze()
        else:
            self._view = None
            self._follow()
            self.refresh()

    def _freeze(self) -> None:
        """Hold the x range where the user put it (a fixed range: new data or history cannot move it)."""
        current = self.figure.x_range
        view = self._view
        if view is None:  # the Pause button: the range the browser last synced back, if it did
            view = (current.start, current.end)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in view):
            now_ms = time.time_ns() / 1e6
            view = (now_ms - self.window_s * 1000, now_ms)
        self.figure.x_range = Range1d(start=view[0], end=view[1])

    def refresh(self) -> None:
        if self._history_wanted is not None and self.figure.document is not None:
            self._schedule_history(self._history_wanted)
        if self.paused:
            return
        for key, source in self.sources.items():
            ring = self.ctx.live.get(key)
            if ring is None:
                continue
            times, values, seq = ring.since(self._seq.get(key, 0))
            self._seq[key] = seq
            if len(times):
                source.stream({"time": times.astype("datetime64[ns]"), "value": values},
                              rollover=ring.capacity)
