"""The History page's explorer with a real embedded store: one figure per session, pans and zooms queried again,
the first plot drawn while the page is built, and series named as the config names them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from bokeh.document import Document
from bokeh.events import RangesUpdate

from app.config import load_config
from app.model import Reading
from app.pages.history import BUCKETS, HistoryExplorer
from app.pages.services import PageServices
from app.runtime import Runtime

MINUTE_NS = 60 * 10**9
DAY_NS = 86_400 * 10**9
KEY = "dam-1/water_level"


def config_dir(tmp_path, text: str = ""):
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    (d / "vigie.yaml").write_text(text)
    return d


async def runtime_with_days(tmp_path, days: int, text: str = "") -> Runtime:
    """A runtime whose embedded store holds ``days`` of one reading every 10 minutes of dam-1/water_level."""
    runtime = Runtime(load_config(config_dir(tmp_path, text), env={}), base_dir=tmp_path)
    await runtime.store.open()
    now = time.time_ns()
    points = [Reading("dam-1", "water_level", now - days * DAY_NS + i * 10 * MINUTE_NS, float(i % 100), unit="m")
              for i in range(days * 144)]
    await runtime.store.write(points)
    runtime.live.accept(points[-1:])
    return runtime


async def test_answers_replace_the_data_of_one_figure_and_a_zoom_queries_its_range(tmp_path):
    runtime = await runtime_with_days(tmp_path, 60)
    explorer = HistoryExplorer(PageServices.of(runtime), "en")
    explorer.series.value, explorer.range.value = KEY, "30d"
    await explorer.query()
    figure = explorer.chart.figure
    assert explorer.plot.object is figure
    assert figure.lod_timeout <= 100  # a wheel zoom asks for its range 0.1 s after the wheel stops, not 0.5 s
    year_bucket = explorer.env.bucket_ns
    explorer.range.value = "1y"
    await explorer.query()
    assert explorer.chart.figure is figure and explorer.plot.object is figure  # the same figure, new data
    assert explorer.env.bucket_ns > year_bucket
    x = figure.x_range
    assert x.end - x.start == pytest.approx(365 * 86_400_000, rel=1e-3)
    assert len(explorer.chart.line.data["mean"]) == len(explorer.env)

    # A zoom into two days: the browser's RangesUpdate asks for them, answered at full resolution.
    Document().add_root(figure)
    end_ms = x.end - 10 * 86_400_000
    start_ms = end_ms - 2 * 86_400_000
    shown = (x.start, x.end)
    figure._trigger_event(RangesUpdate(figure, x0=start_ms, x1=end_ms))
    await explorer._answer_views()  # what the document's next tick runs
    xs = explorer.chart.line.data["time"]
    assert 200 <= len(xs) <= BUCKETS  # 288 points of 10 minutes: every one, not 2 days of 11-hour buckets
    assert xs[0] >= start_ms - 10 * 60_000 and xs[-1] <= end_ms
    assert (x.start, x.end) == shown  # the server does not move the range the user put there
    assert explorer.download.filename.startswith("dam-1_water_level_")
    assert not explorer._answering and explorer._wanted is None
    await runtime.store.close()


async def test_a_pan_while_a_query_runs_is_answered_after_it_with_the_latest_range(tmp_path):
    runtime = await runtime_with_days(tmp_path, 10)
    explorer = HistoryExplorer(PageServices.of(runtime), "en")
    explorer.series.value, explorer.range.value = KEY, "7d"
    await explorer.query()
    Document().add_root(explorer.chart.figure)
    now_ms = time.time_ns() / 1e6
    explorer._answering = True  # a query is running: these wait for it, and only the last one is asked
    explorer._on_view(int((now_ms - 5 * 86_400_000) * 1e6), int((now_ms - 4 * 86_400_000) * 1e6))
    explorer._on_view(int((now_ms - 3 * 86_400_000) * 1e6), int((now_ms - 2 * 86_400_000) * 1e6))
    explorer._answering = False
    await explorer._answer_views()
    xs = explorer.chart.line.data["time"]
    assert now_ms - 3 * 86_400_000 - 600_000 <= xs[0] and xs[-1] <= now_ms - 2 * 86_400_000
    await runtime.store.close()


def test_a_page_built_on_a_builder_thread_arrives_with_its_plot(tmp_path):
    """The page function runs on a builder thread (app/pagegate.py): the store is awaited on the server's loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        async def start() -> tuple[Runtime, PageServices]:
            runtime = await runtime_with_days(tmp_path, 3)
            return runtime, PageServices.of(runtime)  # on the loop: it remembers it

        runtime, services = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        assert services.loop is loop
        explorer = HistoryExplorer(services, "en")
        explorer.series.value, explorer.range.value = KEY, "24h"
        assert explorer.query_while_building()
        assert explorer.plot.object is explorer.chart.figure and 100 <= len(explorer.env) <= BUCKETS

        async def on_the_loop() -> bool:  # the loop's own thread must never wait for itself
            return HistoryExplorer(services, "en").query_while_building()

        assert asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(30) is False

        async def down(*_args):
            raise OSError("store down")

        envelope, runtime.store.envelope = runtime.store.envelope, down
        failed = HistoryExplorer(services, "en")
        assert failed.series.value == KEY and failed.query_while_building() is False  # the page asks on load
        assert failed.plot.object is None
        runtime.store.envelope = envelope
        asyncio.run_coroutine_threadsafe(runtime.store.close(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


NAMES = """
devices:
  dam-1: {title: {en: North dam, fr: Barrage nord}}
  dam-2: Dam two
metrics:
  water_level: {title: Water level, title_fr: Niveau d'eau}
"""


async def test_legend_names_the_series_by_its_display_names_and_unit(tmp_path):
    runtime = await runtime_with_days(tmp_path, 2, NAMES)
    names = PageServices.of(runtime).names
    assert names.label("dam-1/water_level", "m") == "North dam · Water level (m)"
    assert names.label("dam-1/water_level", "m", "fr") == "Barrage nord · Niveau d'eau (m)"
    assert names.label("dam-2/water_level", "", "fr") == "Dam two · Niveau d'eau"  # no French name: the name
    assert names.label("dam-3/flow", "m³/s") == "dam-3 · flow (m³/s)"  # none configured: the ids
    for lang, title in (("en", "North dam · Water level (m)"), ("fr", "Barrage nord · Niveau d'eau (m)")):
        explorer = HistoryExplorer(PageServices.of(runtime), lang)
        explorer.series.value, explorer.range.value = KEY, "24h"
        await explorer.query()
        assert explorer.chart.legend.title == title
        assert explorer.chart.figure.yaxis[0].axis_label == "m"
    await runtime.store.close()


def test_names_are_checked_with_the_config(tmp_path):
    from app.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(config_dir(tmp_path, "devices:\n  dam-1: {titel: North dam}\n"), env={})
    assert "titel" in str(err.value) and "devices" in str(err.value)


def test_the_rule_editors_backtest_plot_loads_its_own_plotting_backend():
    """History draws with Bokeh alone now: the rule editor's HoloViews plot must not rely on it loading HoloViews'
    Bokeh backend (a fresh interpreter, as a server that has not imported History yet)."""
    import subprocess
    import sys

    code = ("from app.pages.alarm_rules import RuleEditorView\n"
            "plot = RuleEditorView._overlay({'points': {'d/m': [(10**18, 1.0), (10**18 + 60 * 10**9, 2.0)]},"
            " 'summary': {'episodes': []}}, 10**18 + 120 * 10**9)\n"
            "assert plot is not None\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
