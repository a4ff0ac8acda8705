"""History page benchmark: first plot after navigation, and the answer to a zoom and a pan, in Chromium.

    /work/main/.venv/bin/python bench/history_page.py [--series 20] [--days 365] [--runs 10] [--json]

Builds an embedded store of ``--series`` series x ``--days`` days at one
reading a minute (20 x 365: 10.5 M readings) and compacts it, as a real site's
store is (weekly Parquet chunks, 1-minute and 1-hour rollups): the first and
last minute go through ``write()`` (catalogue, units, latest values), the
minutes between are put into the store's hot table as Arrow batches
(``EmbeddedStore._insert``, what ``write()`` ends with, without building
10 M ``Reading`` objects) and a maintenance pass compacts every ~1.2 M rows.

Then a real ``vigie serve`` (tests/browser.py ``VigieServer``, anonymous
reads off) is started on that store; Chromium (Playwright, Debian's
``/usr/bin/chromium``) logs in through the login form and measures, each
``--runs`` times:

(a) **navigation**: ``page.goto('/history?series=…&range=1y')`` to the plot
    drawn: times are the page's own ``performance.now()`` (0 = navigation
    start), taken when the plot's mean line holds at least 10 points of the
    year (not true before the store's answer reached the page), and again
    after the next two animation frames (BokehJS has painted it);
(b) **zoom**: the plot's x range set to a tenth of what it shows, centred,
    then the ``RangesUpdate`` event the zoom tools send
    (``plot_view.trigger_ranges_update_event()``); done when the mean
    line's data is a new object covering the new range (first bucket at or
    before its start + one bucket, last at or after its end - one bucket), and
    painted;
(c) **pan**: the same with the range moved by half its width into the past.

A zoom, the tools' way, ends with Bokeh's own level-of-detail timeout
(``lod_timeout``) before the event is sent: ``--wheel`` also times a real
mouse-wheel zoom from the wheel event to the new data painted.

Prints median / p95 per step (``--json``: every figure), the machine, and
the load average before and after the run (others share this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.measure import CLK_TCK, cpu_seconds, machine, machine_ticks, percentile  # noqa: E402

MINUTE_NS = 60 * 10**9
DAY_NS = 86_400 * 10**9
METRIC, UNIT = "level", "m"
SLICE_MINUTES = 3 * 1440  # minutes of all series per Arrow batch put into the hot table
COMPACT_EVERY = 1_200_000  # hot rows between maintenance passes while building


def key(i: int) -> str:
    return f"dev-{i:02d}/{METRIC}"


# -- the store -------------------------------------------------------------------------------------
async def build_store(data: Path, series: int, days: int, end_ns: int) -> dict[str, Any]:
    """Write ``series`` x ``days`` of one-minute readings ending at ``end_ns``; compact them."""
    import pyarrow as pa

    from app.model import Reading
    from app.store.embedded import EmbeddedStore

    t0 = time.perf_counter()
    store = EmbeddedStore(data, maintenance_interval_s=3600)
    await store.open()
    minutes = days * 1440
    start = end_ns - minutes * MINUTE_NS
    rng = np.random.default_rng(5)
    phase = rng.uniform(0, 2 * np.pi, series)

    def values(m: np.ndarray) -> np.ndarray:
        d = (m / 1440.0)[:, None]
        return np.round(10 + 2 * np.sin(2 * np.pi * d / 365 + phase) + 0.5 * np.sin(2 * np.pi * d + phase)
                        + rng.normal(0, 0.05, (len(m), series)), 3)

    def readings(m: int) -> list[Reading]:
        v = values(np.array([m]))[0]
        return [Reading(f"dev-{i:02d}", METRIC, start + m * MINUTE_NS, float(v[i]), unit=UNIT,
                        tags={"site": "bench"}) for i in range(series)]

    await store.write(readings(0))  # the catalogue: series ids, units, tags
    sids = np.array([store._sids[key(i)] for i in range(series)], dtype=np.int32)
    empty_latest = pa.table({"sid": pa.array([], pa.int32()), "time": pa.array([], pa.int64()),
                             "value": pa.array([], pa.float64()), "quality": pa.array([], pa.string())})
    hot, passes = 0, 0
    for m0 in range(1, minutes - 1, SLICE_MINUTES):
        m = np.arange(m0, min(minutes - 1, m0 + SLICE_MINUTES))
        v = values(m)
        table = pa.table({"sid": pa.array(np.tile(sids, len(m))),
                          "time": pa.array(np.repeat(start + m * MINUTE_NS, series)),
                          "value": pa.array(v.ravel()),
                          "quality": pa.array(["good"] * (len(m) * series))})
        store._seq += 1
        await asyncio.to_thread(store._insert, table, [], empty_latest)
        hot += table.num_rows
        if hot >= COMPACT_EVERY:
            await store.maintain()
            hot, passes = 0, passes + 1
    await store.write(readings(minutes - 1))  # the latest values
    await store.maintain()
    count = await store.count()
    health = store.health()
    await store.close()
    return {"readings": count, "build_s": time.perf_counter() - t0, "maintenance_passes": passes + 1,
            "store": {k: health.get(k) for k in ("disk", "bytes_on_disk", "chunks") if k in health}}


# -- the browser -------------------------------------------------------------------------------------
# The plot's mean line: the renderer of the History figure (class vigie-history-plot) drawing a Line.
FIND = """
function vigieHistoryPlot() {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      if (m.type === "Plot" || (m.constructor && m.constructor.__name__ === "Figure")) {
        const line = m.renderers.find(r => r.glyph && r.glyph.constructor.__name__ === "Line");
        if (line) return [m, line];
      }
    }
  }
  return null;
}
function vigieXs(line) {
  const data = line.data_source.data;
  return data[line.glyph.x.field];
}
function vigieFrames(n) {
  return new Promise(resolve => {
    const step = k => k ? requestAnimationFrame(() => step(k - 1)) : resolve();
    step(n);
  });
}
"""

# (a) resolves with [data time, painted time, points] once the mean line holds >= 10 points.
FIRST_PLOT = """async (timeout) => {""" + FIND + """
  for (;;) {
    const found = vigieHistoryPlot();
    if (found && vigieXs(found[1]).length >= 10) {
      const t = performance.now();
      await vigieFrames(2);
      return [t, performance.now(), vigieXs(found[1]).length];
    }
    if (performance.now() > timeout) return [null, null, 0];
    await vigieFrames(1);
  }
}
"""

# (b), (c): set the x range to [f0, f1] of what it shows, send the tools' RangesUpdate, wait for new data over it.
MOVE = """async ([f0, f1, timeout]) => {""" + FIND + """
  const [plot, line] = vigieHistoryPlot();
  const xr = plot.x_range, width = xr.end - xr.start;
  const start = xr.start + f0 * width, end = xr.start + f1 * width;
  const before = line.data_source.data;
  const view = Bokeh.index.find_one(plot);
  const t0 = performance.now();
  xr.setv({start, end});
  view.trigger_ranges_update_event();
  for (;;) {
    const data = line.data_source.data;
    if (data !== before) {
      const xs = vigieXs(line), n = xs.length;
      const bucket = n > 1 ? (xs[n - 1] - xs[0]) / (n - 1) : Infinity;
      if (n > 1 && xs[0] <= start + 1.5 * bucket && xs[n - 1] >= end - 1.5 * bucket) {
        const t = performance.now();
        await vigieFrames(2);
        return [t - t0, performance.now() - t0, n, (end - start) / 864e5];
      }
    }
    if (performance.now() - t0 > timeout) return [null, null, 0, (end - start) / 864e5];
    await vigieFrames(1);
  }
}
"""

# Where a navigation's time went, in the page's clock: the HTML's first byte (the server built the session),
# the scripts run (DOMContentLoaded), the Bokeh document there (pulled over the websocket and built).
PHASES = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  return {html_first_byte: n.responseStart, dom_content_loaded: n.domContentLoadedEventEnd,
          bokeh_document: window.__vdoc};
}"""

WHEEL_READY = """() => {""" + FIND + """
  const [plot, line] = vigieHistoryPlot();
  window.__before = line.data_source.data;
  return [plot.x_range.start, plot.x_range.end]; }
"""

WHEEL_WAIT = """async ([t0, timeout]) => {""" + FIND + """
  const [plot, line] = vigieHistoryPlot();
  for (;;) {
    if (line.data_source.data !== window.__before) {
      const t = performance.now();
      await vigieFrames(2);
      return [t - t0, performance.now() - t0, vigieXs(line).length];
    }
    if (performance.now() - t0 > timeout) return [null, null, 0];
    await vigieFrames(1);
  }
}
"""


def stats(ms: list[float]) -> dict[str, Any]:
    ok = [x for x in ms if x is not None]
    if not ok:
        return {"runs": len(ms), "answered": 0}
    return {"runs": len(ms), "answered": len(ok), "min_ms": min(ok), "median_ms": statistics.median(ok),
            "p95_ms": percentile(ok, 95), "max_ms": max(ok)}


def browse(base: str, password: str, series_key: str, runs: int, wheel: bool, timeout_ms: float,
           server_pid: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    url = f"{base}/history?series={series_key}&range=1y"
    out: dict[str, Any] = {"url": url}
    nav_data, nav_paint, zoom, zoom_paint, pan, pan_paint = [], [], [], [], [], []
    wheel_ms: list[float | None] = []
    cpu: dict[str, list[float]] = {"navigation": [], "zoom": [], "pan": []}  # the server's CPU ms per step
    phases: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        # When the page's Bokeh document exists (BokehJS pulled it over the websocket and built it).
        context.add_init_script("window.__vdoc = null; const __vi = setInterval(() => { if (window.Bokeh && "
                                "Bokeh.documents.length) { window.__vdoc = performance.now(); clearInterval(__vi); }"
                                " }, 5);")
        page = context.new_page()
        page.goto(f"{base}/login")  # a real login, through the form
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.locator("button[type=submit], input[type=submit]").first.click()
        page.wait_for_url(lambda u: "/login" not in u, timeout=30_000)
        page.goto(url, wait_until="commit")  # warm-up: the server's first build imports the plotting code
        page.evaluate(FIRST_PLOT, 60_000)
        for _ in range(runs):
            c0 = cpu_seconds(server_pid)
            page.goto(url, wait_until="commit")
            t_data, t_paint, points = page.evaluate(FIRST_PLOT, 30_000)
            cpu["navigation"].append((cpu_seconds(server_pid) - c0) * 1000)
            for name, value in page.evaluate(PHASES).items():
                phases.setdefault(name, []).append(value)
            nav_data.append(t_data)
            nav_paint.append(t_paint)
            out["first_plot_points"] = points
            page.wait_for_timeout(300)
            # zoom into the middle tenth, then pan by half its width into the past, then back out
            for move, data_list, paint_list in (([0.45, 0.55], zoom, zoom_paint), ([-0.5, 0.5], pan, pan_paint)):
                c0 = cpu_seconds(server_pid)
                t_data, t_paint, n, days = page.evaluate(MOVE, [*move, timeout_ms])
                cpu["zoom" if data_list is zoom else "pan"].append((cpu_seconds(server_pid) - c0) * 1000)
                data_list.append(t_data)
                paint_list.append(t_paint)
                out.setdefault("windows_days", {})["zoom" if data_list is zoom else "pan"] = days
                page.wait_for_timeout(200)
            if wheel:
                box = page.locator(".bk-Canvas, canvas").first.bounding_box() or {}
                page.evaluate(WHEEL_READY)
                page.mouse.move(box.get("x", 0) + box.get("width", 0) / 2, box.get("y", 0) + box.get("height", 0) / 2)
                t0 = page.evaluate("() => performance.now()")
                page.mouse.wheel(0, -300)
                t_data, _t_paint, _n = page.evaluate(WHEEL_WAIT, [t0, timeout_ms])
                wheel_ms.append(t_data)
        browser.close()
    out["navigation_to_data"] = stats(nav_data)
    out["navigation_to_painted"] = stats(nav_paint)
    out["zoom_to_data"] = stats(zoom)
    out["zoom_to_painted"] = stats(zoom_paint)
    out["pan_to_data"] = stats(pan)
    out["pan_to_painted"] = stats(pan_paint)
    if wheel:
        out["wheel_zoom_to_data"] = stats(wheel_ms)
    out["server_cpu_ms"] = {k: stats(v) for k, v in cpu.items()}
    out["navigation_phases"] = {k: stats(v) for k, v in phases.items()}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.browser import VigieServer, password
    from tests.servers import Mosquitto

    result: dict[str, Any] = {"machine": machine(("duckdb", "panel", "bokeh", "holoviews")),
                              "series": args.series, "days": args.days, "runs": args.runs,
                              "load_average_before": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="vigie-histpage-"))
    m0, own0, w0 = machine_ticks()[0], sum(os.times()[:4]), time.monotonic()
    broker = server = None
    try:
        end_ns = (time.time_ns() // MINUTE_NS) * MINUTE_NS
        data = tmp / "vigie" / "data"
        saved = Path(args.store) if args.store else None
        if saved is not None and (saved / "store.json").exists():  # built before: a copy of it (the run writes)
            shutil.copytree(saved, data, ignore=shutil.ignore_patterns("store.json"))
            result["store"] = {**json.loads((saved / "store.json").read_text()), "reused": str(saved)}
        else:
            print(f"building {args.series} series x {args.days} days", file=sys.stderr, flush=True)
            result["store"] = asyncio.run(build_store(data, args.series, args.days, end_ns))
            if saved is not None:
                shutil.copytree(data, saved)
                (saved / "store.json").write_text(json.dumps(result["store"]))
        print(f"store: {result['store']}", file=sys.stderr, flush=True)
        broker = Mosquitto(tmp / "mosquitto")
        broker.directory.mkdir(parents=True, exist_ok=True)
        broker.start()
        server = VigieServer(tmp / "vigie", broker.port, anonymous_read=False, idle_session_s=5)
        server.start()
        load0 = os.getloadavg()
        result["browser"] = browse(server.base, password("admin"), key(args.series // 2), args.runs, args.wheel,
                                   args.timeout_ms, server.proc.pid)
        result["load_average_during"] = [load0, os.getloadavg()]
    finally:
        if server is not None:
            server.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    busy = (machine_ticks()[0] - m0) / CLK_TCK
    result["other_cores_during_run"] = max(0.0, (busy - (sum(os.times()[:4]) - own0)) / (time.monotonic() - w0))
    result["load_average_after"] = os.getloadavg()
    return result


def print_table(r: dict[str, Any]) -> None:
    m, b = r["machine"], r["browser"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, {m['ram_gb']} GB; Python {m['python']}, panel {m['panel']}, "
          f"bokeh {m['bokeh']}, duckdb {m['duckdb']}; commit {m['commit']}; {m['date']}")
    print(f"load average before {r['load_average_before'][0]:.2f}, during {r['load_average_during'][0][0]:.2f}"
          f"-{r['load_average_during'][1][0]:.2f}, after {r['load_average_after'][0]:.2f}; other processes used "
          f"{r['other_cores_during_run']:.2f} cores")
    s = r["store"]
    print(f"store: {s['readings']:,} readings ({r['series']} series x {r['days']} days at 1/min), built and "
          f"compacted in {s['build_s']:.0f} s{' (reused)' if s.get('reused') else ''}; {r['runs']} runs; "
          f"windows: year, zoom "
          f"{b['windows_days']['zoom']:.1f} d, pan {b['windows_days']['pan']:.1f} d\n")
    print("| step | answered | median | p95 | max | target |")
    print("|---|---|---|---|---|---|")
    for name, label, target in (("navigation_to_data", "navigation → plot data in the page", 1000),
                                ("navigation_to_painted", "navigation → plot painted", 1000),
                                ("zoom_to_data", "zoom → new data in the plot", 300),
                                ("zoom_to_painted", "zoom → painted", 300),
                                ("pan_to_data", "pan → new data in the plot", 300),
                                ("pan_to_painted", "pan → painted", 300),
                                ("wheel_zoom_to_data", "mouse-wheel zoom → new data (Bokeh's LOD wait incl.)", None)):
        st = b.get(name)
        if not st:
            continue
        if not st.get("answered"):
            print(f"| {label} | 0/{st['runs']} | - | - | - | {target or ''} ms |")
            continue
        print(f"| {label} | {st['answered']}/{st['runs']} | {st['median_ms']:.0f} ms | {st['p95_ms']:.0f} ms "
              f"| {st['max_ms']:.0f} ms | {f'{target} ms' if target else ''} |")
    print("\nnavigation phases (median, page clock): " + ", ".join(
        f"{k} {v['median_ms']:.0f} ms" for k, v in b["navigation_phases"].items() if v.get("answered")))
    print("vigie serve's CPU per step (user + system, all threads; median / p95): " + ", ".join(
        f"{k} {v['median_ms']:.0f} / {v['p95_ms']:.0f} ms" for k, v in b["server_cpu_ms"].items() if v.get("answered")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--series", type=int, default=20, help="series in the store")
    p.add_argument("--days", type=int, default=365, help="days of one-minute readings per series")
    p.add_argument("--runs", type=int, default=10, help="navigations, each followed by a zoom and a pan")
    p.add_argument("--wheel", action="store_true", help="also time a real mouse-wheel zoom per run")
    p.add_argument("--timeout-ms", type=float, default=10_000, help="give up on a zoom or pan after this")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="keep the built store in DIR, or reuse the one there (its series and days; its 'now' is "
                        "when it was built: the year window then ends after its data)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (store, logs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    result = run(args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1, default=str))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
