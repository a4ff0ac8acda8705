"""Dashboards without a browser: spec round trips, shipped layouts, tolerant loading, history, versions."""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import pytest
from bokeh.document import Document
from bokeh.events import RangesUpdate, Reset
from bokeh.models import DataRange1d, Range1d
from hypothesis import given, settings
from hypothesis import strategies as st

from app.dashboard.dashboard import Dashboard
from app.dashboard.layouts import LayoutNameError, LayoutStore
from app.dashboard.spec import LayoutSpec, WidgetSpec, load_layout, parse_layout
from app.dashboard.view import WidgetContext
from app.dashboard.widgets.timeseries import TimeSeriesSpec
from app.dashboard.widgets.value import ValueSpec
from app.live import LiveCache
from app.model import Reading
from app.pages.services import PageServices
from app.store.embedded import EmbeddedStore

ROOT = Path(__file__).resolve().parent.parent
# Layout text is typed by people: printable characters (YAML folds control characters such as NEL).
text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
ids = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
keys = st.builds(lambda d, m: f"{d}/{m}", ids, ids)


@st.composite
def widget_specs(draw) -> WidgetSpec:
    x = draw(st.integers(0, 11))
    common = {"id": draw(ids), "x": x, "y": draw(st.integers(0, 50)), "w": draw(st.integers(1, 12 - x)),
              "h": draw(st.integers(1, 40)), "title": draw(text)}
    kind = draw(st.sampled_from(["timeseries", "value", "markdown"]))
    if kind == "timeseries":
        return TimeSeriesSpec(series=draw(st.lists(keys, max_size=4)), window=draw(st.sampled_from(["5m", "1h"])),
                              limits=draw(st.lists(st.fixed_dictionaries(
                                  {"value": st.floats(-1e6, 1e6), "label": text}), max_size=2)),
                              **common)
    if kind == "value":
        return ValueSpec(series=draw(keys), decimals=draw(st.integers(0, 6)),
                         warn_above=draw(st.none() | st.floats(-1e6, 1e6)), **common)
    return WidgetSpec.kinds()["markdown"](text=draw(text), **common)


@settings(max_examples=60, deadline=None)
@given(st.lists(widget_specs(), max_size=6, unique_by=lambda w: w.id), text)
def test_layout_spec_round_trips_through_yaml(widgets, title):
    spec = LayoutSpec(title=title, widgets=widgets)
    loaded = parse_layout("x", spec.to_yaml())
    assert loaded.problems == []
    assert loaded.spec == spec
    assert LayoutSpec.from_spec(spec.to_spec()) == spec


def test_every_kind_round_trips():
    required = {"value": {"series": "a/b"}, "webcam": {"camera": "cam"}}
    for kind, cls in WidgetSpec.kinds().items():
        w = cls(id=f"{kind}-1", **required.get(kind, {}))
        assert WidgetSpec.from_spec(w.to_spec()) == w, kind


def test_shipped_layouts_load_and_render():
    live = LiveCache()
    for path in sorted((ROOT / "layouts").glob("*.yaml")):
        loaded = load_layout(path)
        assert loaded.problems == [], loaded.problems
        dash = Dashboard(loaded, WidgetContext(live=live))
        assert set(dash.views) == {w.id for w in loaded.spec.widgets}
        dash.refresh()


def test_hand_edited_mistakes_are_located_and_the_rest_loads():
    text = """title: Mixed
widgets:
- {type: value, id: good, series: a/b, x: 0, y: 0, w: 3, h: 2}
- {type: value, id: typo, serie: a/b, x: 3, y: 0, w: 3, h: 2}
- {type: gauge2, id: unknown-kind}
- {type: timeseries, id: wide, x: 10, w: 4, series: [a/b]}
"""
    loaded = parse_layout("mixed", text, "layouts/mixed.yaml")
    assert [w.id for w in loaded.spec.widgets] == ["good"]
    problems = "\n".join(loaded.problems)
    assert "layouts/mixed.yaml: widgets[1].serie: unknown key (did you mean 'series'?)" in problems
    assert "widgets[2].type: unknown type 'gauge2'" in problems
    assert "widgets[3].w: x + w = 14 is wider than the 12-column grid" in problems
    dash = Dashboard(loaded, WidgetContext(live=LiveCache()))
    assert set(dash.views) == {"good", "typo", "unknown-kind", "wide"}


def test_overlapping_widgets_are_moved_below_not_lost():
    text = ("widgets:\n- {type: markdown, id: a, x: 0, y: 0, w: 6, h: 2}\n"
            "- {type: markdown, id: b, x: 3, y: 1, w: 6, h: 2}\n")
    loaded = parse_layout("o", text)
    dash = Dashboard(loaded, WidgetContext(live=LiveCache()))
    assert set(dash.views) == {"a", "b"}
    assert dash.positions()["b"] == (0, 3, 6, 2)
    assert any("overlaps" in p for p in loaded.problems)


def test_unknown_series_is_flagged_on_the_widget():
    live = LiveCache()
    live.accept([Reading("a", "b", time.time_ns(), 1.0)])
    spec = parse_layout("t", "widgets:\n- {type: timeseries, id: c, series: [a/b, nope/x]}\n").spec
    dash = Dashboard(parse_layout("t", spec.to_yaml()), WidgetContext(live=live))
    note = dash.views["c"].notes
    assert note.visible and "nope/x" in note.object and "a/b" not in note.object
    assert dash.unknown_series() == [
        "t.yaml: widget 'c': series: unknown series 'nope/x' (no reading seen, none stored)"]


async def test_timeseries_draws_history_from_the_store_beyond_the_live_ring(tmp_path):
    store = EmbeddedStore(tmp_path)
    await store.open()
    now = time.time_ns()
    old = [Reading("d", "m", now - (7200 - i * 60) * 10**9, float(i)) for i in range(100)]  # 2 h ago, per minute
    await store.write(old)
    live = LiveCache()
    live.accept([Reading("d", "m", now, 999.0)])
    spec = TimeSeriesSpec(id="c", series=["d/m"], window="5m")
    view = spec.view(WidgetContext(live=live, store=store))
    assert view._history_wanted is not None  # the ring does not cover the window
    start, end = view._gap(now - 6 * 3600 * 10**9)
    await view.load_history(start, end)
    hist = view.history["d/m"]
    assert 1 <= len(hist["mean"]) <= 600
    assert min(hist["min"]) == 0.0 and max(hist["max"]) == 99.0
    assert view.sources["d/m"].data["value"].tolist() == [999.0]
    await store.close()


def test_layout_store_versions_undo_restore_delete(tmp_path):
    store = LayoutStore(tmp_path)
    spec = LayoutSpec(title="One")
    store.save("dash", spec)
    store.save("dash", LayoutSpec(title="Two"))
    store.save("dash", LayoutSpec(title="Two"))  # unchanged: no new version
    assert len(store.versions("dash")) == 1
    assert store.undo("dash") and store.load("dash").spec.title == "One"
    store.save("dash", LayoutSpec(title="Three"))
    first = store.versions("dash")[-1]
    store.restore("dash", first.id)
    assert store.load("dash").spec.title == "One"
    store.copy("dash", "copy")
    store.delete("dash")
    assert store.names() == ["copy"]
    assert store.versions("dash"), "a deleted layout's last version stays in the history"
    for bad in ("../etc", "A B", ".history", ""):
        try:
            store.save(bad, spec)
        except LayoutNameError:
            continue
        raise AssertionError(bad)


async def test_history_explorer_queries_reduced_range_and_exports_what_it_shows(tmp_path):
    import csv
    import io

    from app.config import load_config
    from app.pages.history import BUCKETS, HistoryExplorer
    from app.runtime import Runtime

    runtime = Runtime(load_config(None, env={}), base_dir=tmp_path)
    await runtime.store.open()
    now = time.time_ns()
    year = 365 * 86400 * 10**9
    # Two points per day for a year: the explorer asks for the year and gets at most BUCKETS buckets.
    points = [Reading("dam-1", "water_level", now - year + i * 43_200 * 10**9, 10.0 + (i % 7), unit="m")
              for i in range(730)]
    await runtime.store.write(points)
    runtime.live.accept(points[-1:])
    explorer = HistoryExplorer(PageServices.of(runtime), "en")
    explorer.series.value = "dam-1/water_level"
    explorer.range.value = "1y"
    await explorer.query()
    assert 0 < len(explorer.env) <= BUCKETS
    assert min(explorer.env.min) == 10.0 and max(explorer.env.max) == 16.0
    rows = list(csv.DictReader(io.StringIO(explorer.csv().getvalue())))
    assert len(rows) == len(explorer.env)
    assert set(rows[0]) == {"time", "min", "mean", "max"}
    assert explorer.download.filename == "dam-1_water_level_1y.csv"
    # Any range: From / To (UTC). Ten days of the year, at most BUCKETS buckets, exactly those points.
    from datetime import UTC, datetime

    first = datetime.fromtimestamp(points[100].time_ns / 1e9, UTC).replace(tzinfo=None)
    last = datetime.fromtimestamp(points[119].time_ns / 1e9, UTC).replace(tzinfo=None)
    explorer.range.value = "custom"
    assert explorer.start.visible and explorer.end.visible
    explorer.start.value, explorer.end.value = first, last
    await explorer.query()
    assert sum(1 for _ in explorer.env.time_ns) <= BUCKETS
    assert explorer.env.time_ns[0] >= points[100].time_ns - 10**6 and explorer.env.time_ns[-1] < points[119].time_ns
    assert sorted(set(explorer.env.mean)) == sorted({p.value for p in points[100:119]})
    assert explorer.download.filename.startswith("dam-1_water_level_") and "-" in explorer.download.filename
    explorer.start.value, explorer.end.value = last, first
    await explorer.query()
    assert "From must be before To" in explorer.info.object
    await runtime.store.close()


class SessionDoc(Document):
    """A session's document whose next-tick callbacks are run by the test, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list = []

    def add_next_tick_callback(self, cb):
        self.ticks.append(cb)
        return cb

    async def run_ticks(self) -> None:
        while self.ticks:
            result = self.ticks.pop(0)()
            if inspect.isawaitable(result):
                await result


async def test_chart_pause_pan_resume_and_window_keep_the_right_history_drawn(tmp_path):
    hour = 3600 * 10**9
    store = EmbeddedStore(tmp_path)
    await store.open()
    now = time.time_ns()
    await store.write([Reading("d", "m", now - 10 * hour + i * 60 * 10**9, float(i)) for i in range(600)])
    live = LiveCache()
    live.accept([Reading("d", "m", now, 1.0)])
    view = TimeSeriesSpec(id="c", series=["d/m"], window="6h").view(WidgetContext(live=live, store=store))
    doc = SessionDoc()
    doc.add_root(view.panel.get_root(doc))

    def drawn_hours() -> tuple[float, float]:
        times = view.history["d/m"]["time"].astype("int64")
        return round((int(times.min()) - now) / hour, 1), round((int(times.max()) - now) / hour, 1)

    view.refresh()  # attached: the window's history is wanted
    await doc.run_ticks()
    assert drawn_hours()[0] == -6.0 and not view.paused
    # A pan 8-9 h back: paused, the view frozen there, its history drawn.
    view._on_ranges(RangesUpdate(view.figure, x0=(now - 9 * hour) / 1e6, x1=(now - 8 * hour) / 1e6, y0=0, y1=1))
    await doc.run_ticks()
    assert view.paused and isinstance(view.figure.x_range, Range1d) and drawn_hours() == (-9.0, -8.0)
    # Resume: following again over the window, whose history is drawn again.
    view.pause_button.value = False
    await doc.run_ticks()
    assert isinstance(view.figure.x_range, DataRange1d) and drawn_hours()[0] == -6.0
    # The Reset tool while paused resumes too; Pause before the browser synced the range freezes on the window.
    view.pause_button.value = True
    assert isinstance(view.figure.x_range, Range1d) and math.isfinite(view.figure.x_range.start)
    view._on_reset(Reset(view.figure))
    assert not view.paused and isinstance(view.figure.x_range, DataRange1d)
    # A store that fails once: the error surfaces, the next wish still goes out.
    envelope = store.envelope
    calls = []

    async def flaky(*args):
        calls.append(args[1:3])
        if len(calls) == 1:
            raise OSError("store down")
        return await envelope(*args)

    store.envelope = flaky
    view._on_ranges(RangesUpdate(view.figure, x0=(now - 9.5 * hour) / 1e6, x1=(now - 9 * hour) / 1e6, y0=0, y1=1))
    view._on_ranges(RangesUpdate(view.figure, x0=(now - 7 * hour) / 1e6, x1=(now - 6.5 * hour) / 1e6, y0=0, y1=1))
    with pytest.raises(OSError, match="store down"):
        await doc.run_ticks()
    await doc.run_ticks()
    assert len(calls) == 2 and drawn_hours() == (-7.0, -6.5) and not view._loading
    await store.close()


def test_generated_dashboards_load_without_problems_even_with_accented_metric_names():
    from app.dashboard.generate import generate_for_device, generate_for_site

    live = LiveCache()
    now = time.time_ns()
    live.accept([Reading(dev, metric, now, 1.0, unit="m3/s", tags={"site": "Vallée"})
                 for dev in ("dam-1", "dam-2") for metric in ("débit", "temp.c", "temp-c", "niveau")])
    device = generate_for_device(live, "dam-1")
    loaded = parse_layout("gen", device.to_yaml())
    assert loaded.problems == [] and loaded.spec == device
    kinds = [(w.spec_type, w.series_keys()) for w in loaded.spec.widgets]
    assert ("value", ["dam-1/débit"]) in kinds and ("timeseries", ["dam-1/débit"]) in kinds
    assert len({w.id for w in loaded.spec.widgets}) == 8  # temp.c and temp-c: two widgets, two ids
    assert {w.id for w in loaded.spec.widgets} >= {"debit-now", "temp-c-now", "temp-c-now-2", "debit-chart"}
    site = generate_for_site(live, "Vallée")
    loaded = parse_layout("gen-site", site.to_yaml())
    assert loaded.problems == [] and len(loaded.spec.widgets) == 4
    assert loaded.spec.widget("debit").series == ["dam-1/débit", "dam-2/débit"]


async def test_window_selector_follows_the_newest_data_over_the_chosen_window(tmp_path):
    store = EmbeddedStore(tmp_path)
    await store.open()
    now = time.time_ns()
    await store.write([Reading("d", "m", now - (3 * 3600 - i * 60) * 10**9, float(i)) for i in range(170)])
    live = LiveCache()
    live.accept([Reading("d", "m", now, 999.0)])
    view = TimeSeriesSpec(id="c", series=["d/m"], window="5m").view(WidgetContext(live=live, store=store))
    view.header()
    assert view.figure.x_range.follow_interval == 300_000
    view.window_select.value = "6h"
    assert view.window_s == 6 * 3600 and view.figure.x_range.follow_interval == 6 * 3600 * 1000
    assert view._history_wanted is not None  # the live ring holds one point: the 6 h come from the store
    start, end = view._history_wanted
    assert end - start >= 5 * 3600 * 10**9
    await view.load_history(start, end)
    assert min(view.history["d/m"]["min"]) == 0.0  # three hours ago, within the new window
    await store.close()


async def test_times_are_shown_and_read_in_the_servers_time_zone(tmp_path):
    from datetime import datetime

    from app.config import load_config
    from app.dashboard.widgets.alarms import AlarmsSpec
    from app.pages.history import HistoryExplorer
    from app.runtime import Runtime

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "v.yaml").write_text("server: {timezone: Europe/Paris}\n")
    runtime = Runtime(load_config(tmp_path / "config", env={}), base_dir=tmp_path)
    explorer = HistoryExplorer(PageServices.of(runtime), "fr")
    assert explorer.start.label == "Du (Europe/Paris)"
    explorer.range.value = "custom"
    explorer.start.value, explorer.end.value = datetime(2026, 11, 25, 13, 0), datetime(2026, 7, 1, 14, 0)
    with pytest.raises(ValueError):
        explorer.bounds()  # From after To
    explorer.start.value = datetime(2026, 7, 1, 13, 0)  # summer time: UTC+2
    start, end, _ = explorer.bounds()
    assert (start, end) == (1_782_903_600 * 10**9, 1_782_907_200 * 10**9)  # 11:00 and 12:00 UTC

    class Engine:
        def active(self):
            return [{"time_ns": 1_795_600_800 * 10**9, "severity": "high", "series": "d/m", "message": "m",
                     "state": "active"}]  # 2026-11-25 10:00 UTC

    view = AlarmsSpec(id="a").view(WidgetContext(LiveCache(), lang="fr", tz="Europe/Paris", alarms=Engine()))
    assert view._rows[0][0] == "25/11/2026 11:00:00" and "25/11/2026 11:00:00" in view.html.object


HAND_EDITED = """# The dams of the north valley (owned by the water directorate)
title: Nord
owner: ops-team          # a key Vigie does not know
refresh_ms: 1000
widgets:
  # levels first
  - {type: value, id: lvl, x: 0, y: 0, w: 3, h: 2, series: dam-1/level, gauge_min: 0}
  - {type: markdown, id: note, x: 3, y: 0, w: 3, h: 2, text: "hello"}   # a note
  - {type: sparkline, id: odd, x: 6, y: 0, w: 3, h: 2}
"""


def test_saving_a_moved_widget_changes_only_its_position_in_the_file(tmp_path):
    """Comments, order, quoting, unknown keys, explicit defaults and a widget that does not load all stay."""
    import difflib

    from app.dashboard.layouts import LayoutStore
    from app.dashboard.widgets.markdown import MarkdownSpec

    (tmp_path / "nord.yaml").write_text(HAND_EDITED)
    store = LayoutStore(tmp_path)
    loaded = store.load("nord")
    assert loaded.spec.refresh_ms == 1000  # the unknown key did not reset the good ones
    spec = loaded.spec
    next(w for w in spec.widgets if w.id == "note").x = 4
    store.save("nord", spec)
    saved = (tmp_path / "nord.yaml").read_text()
    changed = [line for line in difflib.unified_diff(HAND_EDITED.splitlines(), saved.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ['-  - {type: markdown, id: note, x: 3, y: 0, w: 3, h: 2, text: "hello"}   # a note',
                       '+  - {type: markdown, id: note, x: 4, y: 0, w: 3, h: 2, text: "hello"}   # a note']
    # A widget added and one removed: only those lines change; the previous version stays restorable.
    spec = store.load("nord").spec
    spec.widgets = [w for w in spec.widgets if w.id != "lvl"] + [MarkdownSpec(id="new", x=0, y=2, w=3, h=2,
                                                                               text="added")]
    store.save("nord", spec)
    text = (tmp_path / "nord.yaml").read_text()
    assert "id: lvl" not in text and "id: new" in text and "# a note" in text and "owner: ops-team" in text
    assert "sparkline" in text and text.startswith("# The dams of the north valley")
    assert len(store.versions("nord")) == 2
