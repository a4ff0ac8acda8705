"""The history explorer: any series, any range, reduced to screen resolution, exportable.

The store answers with at most ``BUCKETS`` min/mean/max buckets whatever
the range (an hour or years), so the browser never receives raw millions of
points. The CSV export is exactly what the plot shows.
"""

from __future__ import annotations

import asyncio
import difflib
import html
import io
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import panel as pn
from bokeh.core.properties import value
from bokeh.events import RangesUpdate
from bokeh.models import ColumnDataSource, DataRange1d, Legend, LegendItem, Range1d
from bokeh.plotting import figure

from app.dashboard.time_axis import localize_time_axis
from app.i18n import fmt_span, fmt_time, t
from app.model import Envelope, datetime_to_ns, series_problem
from app.pages.shell import page, session_arg, session_lang

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

log = logging.getLogger(__name__)

BUCKETS = 800
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "1y": 365 * 86400,
          "5y": 5 * 365 * 86400}
LOD_TIMEOUT_MS = 100
BUILD_QUERY_TIMEOUT_S = 30.0  # a page built with its plot waits this long at most for the store
CUSTOM = "custom"  # the range between the From and To fields (in the server's time zone)


def _time_arg(name: str, tz: ZoneInfo) -> datetime | None:
    """Return a ``?start=`` / ``?end=`` ISO time argument as a naive time in ``tz``, or None.

    A time with an offset (``...Z``, ``+01:00``) is converted; one without is taken as already in ``tz``.
    """
    raw = session_arg(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return value.astimezone(tz).replace(tzinfo=None) if value.tzinfo else value
    except (ValueError, OverflowError):  # not a time, or one that leaves the calendar in that zone
        return None


def envelope_frame(env: Envelope) -> pd.DataFrame:
    """Return an envelope as a table with UTC times."""
    return pd.DataFrame({"time": pd.to_datetime(np.asarray(env.time_ns, dtype="int64"), utc=True),
                         "min": env.min, "mean": env.mean, "max": env.max})


class HistoryPlot:
    """One Bokeh figure per session, built once: a min–max band and a mean line fed through their sources.

    An answer replaces the sources' columns (a patch of ~800 buckets), never
    the figure: rebuilding a HoloViews plot per answer cost ~100 ms of the
    server's time and a new figure for BokehJS to lay out and draw
    (bench/README.md). A pan or zoom (the tools' ``RangesUpdate`` event, also
    sent by Reset) asks ``on_view(start_ns, end_ns)`` for the new range.
    """

    def __init__(self, lang: str, tz: str, on_view: Callable[[int, int], None]) -> None:
        self.on_view = on_view
        empty = np.array([], dtype=float)
        self.band = ColumnDataSource({"time": empty, "min": empty, "max": empty})
        self.line = ColumnDataSource({"time": empty, "mean": empty})
        fig = figure(x_axis_type="datetime", sizing_mode="stretch_width", height=420, min_height=300,
                     x_range=Range1d(0, 1), y_range=DataRange1d(range_padding=0.05),
                     tools="xpan,xwheel_zoom,reset,save", active_drag="xpan",  # as the dashboards' charts
                     active_scroll="xwheel_zoom", toolbar_location="above", css_classes=["vigie-history-plot"],
                     y_axis_label=t("value", lang),
                     # A wheel zoom sends its RangesUpdate once no wheel event came for lod_timeout ms
                     # (BokehJS's "interactive" end): 500 by default, more than the answer itself takes.
                     lod_timeout=LOD_TIMEOUT_MS)
        fig.toolbar.logo = None
        fig.xgrid.grid_line_alpha = fig.ygrid.grid_line_alpha = 0.5
        localize_time_axis(fig, lang, tz)
        band = fig.varea(x="time", y1="min", y2="max", source=self.band, fill_color="#1f77b4", fill_alpha=0.25)
        mean = fig.line(x="time", y="mean", source=self.line, line_color="#1f77b4", line_width=1.5)
        for renderer in (band, mean):  # nothing selects here: no extra glyph models
            renderer.selection_glyph = renderer.nonselection_glyph = renderer.hover_glyph = renderer.muted_glyph = None
        # The series' name is the legend's title (plain text drawn on the canvas: never markup).
        self.legend = Legend(items=[LegendItem(label=value(t("mean", lang)), renderers=[mean]),
                                    LegendItem(label=value("min–max"), renderers=[band])],
                             location="top_left", background_fill_alpha=0.7, label_text_font_size="9pt",
                             title_text_font_size="9pt", title_text_font_style="bold")
        fig.add_layout(self.legend)
        fig.on_event(RangesUpdate, self._on_ranges)
        self.figure = fig
        self.lang = lang

    def show(self, env: Envelope, start_ns: int, end_ns: int, label: str, unit: str, *,
             move: bool = True) -> None:
        """Draw ``env``; with ``move``, also put the x range on [start, end] (a new query, not a pan)."""
        t_ms = np.asarray(env.time_ns, dtype="int64") / 1e6
        self.band.data = {"time": t_ms, "min": np.asarray(env.min, dtype=float),
                          "max": np.asarray(env.max, dtype=float)}
        self.line.data = {"time": t_ms, "mean": np.asarray(env.mean, dtype=float)}
        if move:
            x = self.figure.x_range
            x.update(start=start_ns / 1e6, end=end_ns / 1e6, reset_start=start_ns / 1e6, reset_end=end_ns / 1e6)
        if self.legend.title != label:
            self.legend.title = label
        ylabel = unit or t("value", self.lang)
        if self.figure.yaxis[0].axis_label != ylabel:
            self.figure.yaxis[0].axis_label = ylabel

    def _on_ranges(self, event: RangesUpdate) -> None:
        if event.x0 is not None and event.x1 is not None and event.x1 > event.x0:
            self.on_view(int(event.x0 * 1e6), int(event.x1 * 1e6))


class HistoryExplorer:
    """One session's explorer: series, range, plot, CSV."""

    def __init__(self, services: PageServices, lang: str) -> None:
        self.services = services
        self.lang = lang
        keys = services.live.keys()
        self.series = pn.widgets.AutocompleteInput(label=t("Series", lang), options=keys,
                                                   value=session_arg("series") or (keys[0] if keys else ""),
                                                   case_sensitive=False, search_strategy="includes",
                                                   min_characters=1, width=320, restrict=False)
        self.tz = services.timezone
        zone = self.zone = ZoneInfo(self.tz)
        start, end = _time_arg("start", zone), _time_arg("end", zone)
        custom = start is not None and end is not None and start < end
        now = datetime.now(zone).replace(tzinfo=None, microsecond=0)
        self.range = pn.widgets.Select(label=t("Range", lang),
                                       options={**{fmt_span(k, lang): k for k in RANGES}, t("custom", lang): CUSTOM},
                                       value=CUSTOM if custom else
                                       session_arg("range") if session_arg("range") in RANGES else "1h",
                                       width=100, css_classes=["vigie-range"])
        # Plain text fields (YYYY-MM-DD HH:MM:SS, in the zone every time on the pages is in): no picker script.
        self.start = pn.widgets.DatetimeInput(label=f"{t('From', lang)} ({self.tz})",
                                              value=start or now - timedelta(days=1), width=180, visible=custom,
                                              css_classes=["vigie-from"])
        self.end = pn.widgets.DatetimeInput(label=f"{t('To', lang)} ({self.tz})", value=end or now, width=180,
                                            visible=custom, css_classes=["vigie-to"])
        self.range.param.watch(self._on_range, "value")
        self.query_button = pn.widgets.Button(label=t("Query", lang), color="primary", width=100,
                                              css_classes=["vigie-query"])
        self.info = pn.pane.HTML("", css_classes=["vigie-history-info"])
        self.chart = HistoryPlot(lang, self.tz, self._on_view)
        self.plot = pn.pane.Bokeh(None, sizing_mode="stretch_width", min_height=400)  # the figure, once data came
        self.download = pn.widgets.FileDownload(callback=self.csv, filename="vigie.csv",
                                                label=t("Export CSV", lang), width=160, embed=False)
        self.env: Envelope | None = None
        self.shown: str | None = None  # the series drawn, which a pan or zoom queries again
        self._wanted: tuple[int, int] | None = None  # the latest range a pan or zoom asked for
        self._answering = False
        self.query_button.on_click(self._on_query)
        self.panel = pn.Column(pn.Row(self.series, self.range, self.start, self.end, self.query_button,
                                      self.download), self.info, self.plot, sizing_mode="stretch_width")

    def _on_range(self, event) -> None:
        self.start.visible = self.end.visible = event.new == CUSTOM

    def bounds(self) -> tuple[int, int, str]:
        """Return the queried range in ns and its name for the CSV file; raise ValueError for an empty one."""
        if self.range.value != CUSTOM:
            end = time.time_ns()
            return end - RANGES[self.range.value] * 10**9, end, self.range.value
        start, end = self.start.value, self.end.value
        if start is None or end is None or start >= end:
            raise ValueError(t("From must be before To", self.lang))
        return (datetime_to_ns(start.replace(tzinfo=self.zone)), datetime_to_ns(end.replace(tzinfo=self.zone)),
                f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}")

    async def _on_query(self, _event=None) -> None:
        await self.query()

    def _request(self) -> tuple[str, int, int, str] | None:
        """Return the query the form asks for (series, start, end, CSV name), or None after saying what is wrong."""
        key = self.series.value
        if not key:
            return None
        try:
            if problem := series_problem(key):
                raise ValueError(problem)
            return (key, *self.bounds())
        except ValueError as exc:
            self.info.object = f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"
            return None

    async def query(self) -> None:
        """Query the store for the selected series and range."""
        if (request := self._request()) is None:
            return
        key, start, end, _label = request
        t0 = time.perf_counter()
        self._answer(request, await self.services.store.envelope(key, start, end, BUCKETS), t0)

    def query_while_building(self) -> bool:
        """Query and draw now, from a page builder thread, so the page arrives with its plot; False when not there.

        The store's coroutine runs on the server's loop (``services.loop``), which
        keeps serving while this thread waits; on the loop's own thread (or with no
        loop) nothing is done and the caller queries on load instead.
        """
        loop = self.services.loop
        if loop is None or not loop.is_running():
            return False
        try:
            if asyncio.get_running_loop() is not None:  # this thread runs a loop: waiting here would block it
                return False
        except RuntimeError:
            pass
        if (request := self._request()) is None:
            return True
        key, start, end, _label = request
        t0 = time.perf_counter()
        future = asyncio.run_coroutine_threadsafe(self.services.store.envelope(key, start, end, BUCKETS), loop)
        try:
            env = future.result(BUILD_QUERY_TIMEOUT_S)
        except Exception:  # a store down or too slow must not cost the page: it asks again once loaded
            future.cancel()
            log.warning("history query while building the page failed; asking again on load", exc_info=True)
            return False
        self._answer(request, env, t0)
        return True

    def _answer(self, request: tuple[str, int, int, str], env: Envelope, t0: float) -> None:
        key, start, end, label = request
        if not len(env):  # no empty axis starting in 1970: say what is wrong
            self.env, self.shown = env, None
            self.plot.object = None
            self.info.object = f"<span class='vigie-history-empty' style='color:#c62828'>" \
                               f"{html.escape(self.nothing_to_show(key, start, end))}</span>"
            return
        self.shown = key
        self._draw(key, env, start, end, label, t0, move=True)

    def _draw(self, key: str, env: Envelope, start: int, end: int, label: str, t0: float, *, move: bool) -> None:
        elapsed = (time.perf_counter() - t0) * 1000
        self.env = env
        ring = self.services.live.get(key)
        unit = ring.unit if ring else ""
        self.chart.show(env, start, end, self.services.names.label(key, unit, self.lang), unit, move=move)
        if self.plot.object is None:
            self.plot.object = self.chart.figure
        self.download.filename = f"{key.replace('/', '_')}_{label}.csv"
        self.info.object = (f"<span data-buckets='{len(env)}'>{len(env)} {t('buckets of', self.lang)} "
                            f"{env.bucket_ns / 1e9:g} s · {elapsed:.0f} ms</span>")

    def _on_view(self, start: int, end: int) -> None:
        """A pan or zoom (or Reset) showed [start, end): draw that range again at full resolution.

        One query at a time per session; the latest range asked meanwhile is the next one.
        """
        self._wanted = (start, end)
        doc = self.chart.figure.document
        if self._answering or self.shown is None or doc is None:
            return
        self._answering = True
        doc.add_next_tick_callback(self._answer_views)

    async def _answer_views(self) -> None:
        try:
            while self._wanted is not None and self.shown is not None:
                (start, end), self._wanted = self._wanted, None
                key, t0 = self.shown, time.perf_counter()
                env = await self.services.store.envelope(key, start, end, BUCKETS)
                if key != self.shown:  # a new query replaced the series meanwhile
                    continue
                zone = self.zone
                a, b = (datetime.fromtimestamp(ns / 1e9, zone) for ns in (start, end))
                self._draw(key, env, start, end, f"{a:%Y%m%dT%H%M%S}-{b:%Y%m%dT%H%M%S}", t0, move=False)
        finally:
            self._answering = False

    def nothing_to_show(self, key: str, start: int, end: int) -> str:
        """Return why a query found nothing: a series no device reported (and a close one), or a quiet range."""
        known = self.services.live.keys()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" {t('Did you mean', self.lang)} {close[0]}?" if close else ""
            return f"{t('Unknown series', self.lang)}: {key}.{hint}"
        return (f"{t('No data for', self.lang)} {key} {t('between', self.lang)} "
                f"{fmt_time(start, self.lang, self.tz)} {t('and', self.lang)} {fmt_time(end, self.lang, self.tz)}.")

    def csv(self) -> io.StringIO:
        """Return the shown envelope as CSV."""
        out = io.StringIO()
        if self.env is not None:
            envelope_frame(self.env).to_csv(out, index=False)
        out.seek(0)
        return out


def history_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's history page."""
    lang = session_lang()
    explorer = HistoryExplorer(services, lang)
    if session_arg("series") and not explorer.query_while_building():
        pn.state.onload(explorer.query)
    return page(services, "/history", t("History", lang), pn.pane.Markdown(f"## {t('History', lang)}"),
                explorer.panel, lang=lang, identity=auth.page_identity())
