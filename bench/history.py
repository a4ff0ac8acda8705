"""History query benchmark: a year of 1-minute data reduced to 800 buckets, per store and end to end.

    .venv/bin/python bench/history.py [--runs 20] [--points 525600] [--no-influx] [--no-browser] [--json]

One series, one point a minute for a year (525,600 points, a daily cycle,
a seasonal drift and noise), ending now, is written:

- into an :class:`~app.store.embedded.EmbeddedStore` (DuckDB) in a temporary
  directory, through ``write()`` in batches, as Vigie's writer does;
- into a real InfluxDB 1.x (``tests.servers.InfluxDB``, Debian's influxd)
  through :class:`~app.store.influx.InfluxStore`.

Then ``store.envelope(key, start, end, 800)`` is timed for the last year,
month (30 days) and day, ``--runs`` times each after one warm-up call, in
the process (what the history page does: ``HistoryExplorer.query`` awaits
the store and builds a HoloViews plot from the result, timed here too).

Then the DuckDB file is closed (DuckDB locks it to one process) and a
``vigie serve`` is started on it, to time ``GET /api/v1/envelope`` (the JSON
API for notebooks and scripts) over one keep-alive connection, and, with
Chromium, the history page itself: the time from a click on "Query" to the
answer shown in the page.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.model import Reading  # noqa: E402
from bench.measure import CLK_TCK, cpu_seconds, machine, machine_busy, machine_ticks, percentile, wait_quiet  # noqa: E402
from tests.servers import InfluxDB, free_port, wait_until  # noqa: E402

VIGIE = ROOT / ".venv" / "bin" / "vigie"
DEVICE, METRIC = "bench-dam", "water_level"
KEY = f"{DEVICE}/{METRIC}"
MINUTE_NS = 60 * 10**9
DAY_NS = 86400 * 10**9
RANGES = {"year": 365 * DAY_NS, "month": 30 * DAY_NS, "day": DAY_NS}
# The history page's own names for the same ranges.
PAGE_RANGES = {"year": "1y", "month": "30d", "day": "24h"}
BUCKETS = 800


def series(points: int, end_ns: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Return ``points`` one-minute timestamps ending at ``end_ns`` and plausible water levels."""
    times = end_ns - MINUTE_NS * np.arange(points, 0, -1, dtype=np.int64)
    days = (times - times[0]) / DAY_NS
    rng = np.random.default_rng(seed)
    values = 12 + 2.5 * np.sin(2 * np.pi * days / 365) + 0.4 * np.sin(2 * np.pi * days) + rng.normal(0, 0.05, points)
    return times, np.round(values, 3)


def readings(times: np.ndarray, values: np.ndarray) -> list[Reading]:
    return [Reading(DEVICE, METRIC, int(t), float(v), unit="m") for t, v in zip(times, values, strict=True)]


def stats(ms: list[float]) -> dict[str, float]:
    """Return min / median / p95 / max of timings in ms."""
    return {"runs": len(ms), "min_ms": min(ms), "median_ms": statistics.median(ms), "p95_ms": percentile(ms, 95),
            "max_ms": max(ms)}


async def time_envelopes(store: Any, end_ns: int, runs: int) -> dict[str, Any]:
    """Time ``store.envelope`` for each range; also the page's plot building from the answer."""
    from app.pages.history import HistoryPlot

    out: dict[str, Any] = {}
    for name, span in RANGES.items():
        start = end_ns - span
        env = await store.envelope(KEY, start, end_ns, BUCKETS)  # warm-up
        timings, plots = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            env = await store.envelope(KEY, start, end_ns, BUCKETS)
            t1 = time.perf_counter()
            HistoryPlot("en", "UTC", lambda *_: None).show(env, start, end_ns, KEY, "m")
            t2 = time.perf_counter()
            timings.append((t1 - t0) * 1000)
            plots.append((t2 - t1) * 1000)
        out[name] = {**stats(timings), "buckets": len(env.time_ns), "bucket_s": env.bucket_ns / 1e9,
                     "points_in_range": min(span // MINUTE_NS, 10**12), "plot_build": stats(plots)}
    return out


async def load_and_time(store: Any, rows: list[Reading], batch: int, end_ns: int, runs: int) -> dict[str, Any]:
    """Open a store, write the series in batches, time the queries."""
    await store.open()
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        await store.write(rows[i:i + batch])
    write_s = time.perf_counter() - t0
    count = await store.count(KEY)
    result = {"write_s": write_s, "points_per_s": len(rows) / write_s, "count": count}
    result["queries"] = await time_envelopes(store, end_ns, runs)
    if store.engine_type == "influx":
        result["raw_queries"] = await time_influx_raw(store, end_ns, runs)
    await store.close()
    return result


async def time_influx_raw(store: Any, end_ns: int, runs: int) -> dict[str, Any]:
    """Time InfluxDB alone: the same InfluxQL the store sends, body read but not decoded."""
    sent: list[str] = []
    statement = store._statement

    async def capture(q: str, **kwargs: Any) -> list:
        sent.append(q)
        return await statement(q, **kwargs)

    out: dict[str, Any] = {}
    for name, span in RANGES.items():
        store._statement = capture
        env = await store.envelope(KEY, end_ns - span, end_ns, BUCKETS)
        store._statement = statement
        body = urlencode({"q": sent[-1], "epoch": "ns", "db": store.database}).encode()
        timings = await asyncio.to_thread(_time_post, f"{store.url}/query", body, runs)
        out[name] = {**stats(timings), "buckets": len(env.time_ns)}
    return out


def _time_post(url: str, body: bytes, runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, data=body, timeout=30) as r:
            r.read()
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


# -- vigie serve on the written file -------------------------------------------
class Serve:
    """`vigie serve` on a data directory that already holds the series."""

    def __init__(self, root: Path, store: str = "{engine: embedded, data_dir: data, spool_dir: spool}") -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cfg = root / "config"
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "vigie.yaml").write_text(f"server: {{port: {self.port}}}\nstore: {store}\n")
        (root / "layouts").mkdir(exist_ok=True)
        self.log = root / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def make_token(self) -> None:
        """Give the benchmark a read token, as the tests do (``vigie token add`` does the same): the API needs one."""
        from app.config import load_config
        from app.web.accounts import AccountStore
        from app.web.secret import server_secret

        loaded = load_config(self.root / "config")
        accounts = AccountStore(self.root / loaded.config.server.access_file, server_secret(loaded, self.root)).open()
        try:
            accounts.add_user("bench", "analyst", "bench-password-1")
            self.token = accounts.create_token("bench", "bench-history", ["read"])[1]
        finally:
            accounts.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        # This checkout's code (a worktree has no .venv of its own: run the module with this interpreter).
        vigie = [str(VIGIE)] if VIGIE.exists() else [sys.executable, "-m", "app.cli"]
        self.make_token()
        self.proc = subprocess.Popen([*vigie, "serve", "--config", str(self.root / "config"),
                                      "--data-root", str(self.root)], cwd=ROOT, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigie serve exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                return conn.getresponse().status in (200, 503)
            return False

        wait_until(up, timeout=60, interval=0.2, what="vigie serve")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def time_http(serve: Serve, end_ns: int, runs: int, key: str = KEY) -> dict[str, Any]:
    """Time GET /api/v1/envelope per range over one keep-alive connection (body read and decoded)."""
    conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
    out: dict[str, Any] = {}
    for name, span in RANGES.items():
        path = "/api/v1/envelope?" + urlencode({"series": key, "start": end_ns - span, "end": end_ns,
                                                "buckets": BUCKETS})
        timings, size, doc = [], 0, {}
        for i in range(runs + 1):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=serve.headers)
            resp = conn.getresponse()
            body = resp.read()
            doc = json.loads(body)
            if i:  # the first is the warm-up
                timings.append((time.perf_counter() - t0) * 1000)
            size = len(body)
            if resp.status != 200:
                raise RuntimeError(f"{path}: {resp.status} {body[:300]!r}")
        out[name] = {**stats(timings), "p99_ms": percentile(timings, 99), "buckets": len(doc["time_ns"]),
                     "body_bytes": size}
    conn.close()
    return out


# Installed in the history page: every change the server makes to the document, (ms, attribute).
PAGE_HOOK = """() => {
  window.__vq = [];
  Bokeh.documents[0].on_change((ev) => {
    if (ev.sync === false) window.__vq.push([performance.now(), ev.attr || ev.kind]);
  }, true);
}"""


CLICK = "b => { window.__vq = []; const t = performance.now(); b.click(); return t; }"


def time_page(serve: Serve, runs: int) -> dict[str, Any]:
    """Time the history page in Chromium: from a click on "Query" to the new plot, and to the page idle again.

    The server answers a click with: the template's busy indicator on, the
    new plot (a new Bokeh figure: the layout's ``children`` change), the info
    line (``text``, unless identical), the busy indicator off. Times are taken
    in the page, when each change is applied to its Bokeh document.
    """
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(f"{serve.base}/history?series={KEY}&range=1y", timeout=120_000)
        page.locator("[data-buckets]").first.wait_for(timeout=120_000)
        out["first_load_s"] = time.perf_counter() - t0
        page.wait_for_timeout(1000)
        page.evaluate(PAGE_HOOK)
        select = page.locator("select").first
        button = page.locator(".vigie-query button").first
        for name, label in PAGE_RANGES.items():
            select.select_option(label)
            page.wait_for_timeout(500)
            plot_ms, done_ms, server_ms, buckets = [], [], [], 0
            for i in range(runs + 1):
                t_click = button.evaluate(CLICK)
                t_plot, t_done = _wait_answer(page)
                text = page.locator("[data-buckets]").first.inner_text()
                if i:
                    plot_ms.append(t_plot - t_click)
                    done_ms.append(t_done - t_click)
                    with contextlib.suppress(ValueError, IndexError):
                        server_ms.append(float(text.rsplit("·", 1)[1].split("ms")[0]))
                buckets = int(page.locator("[data-buckets]").first.get_attribute("data-buckets") or 0)
                page.wait_for_timeout(200)
            out[name] = {**stats(plot_ms), "buckets": buckets, "done": stats(done_ms),
                         "server_query_ms_median": statistics.median(server_ms) if server_ms else None}
        browser.close()
    return out


def _wait_answer(page: Any, timeout_s: float = 60) -> tuple[float, float]:
    """Return when the new plot, then the busy indicator's reset, reached the page (performance.now ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = page.evaluate("() => window.__vq")
        plot = next((t for t, attr in events if attr in ("children", "data")), None)
        if plot is not None:
            done = next((t for t, attr in events if attr == "css_classes" and t > plot), None)
            if done is not None:
                return plot, done
        time.sleep(0.02)
    raise TimeoutError("the history page did not answer")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from app.store.embedded import EmbeddedStore
    from app.store.influx import InfluxStore

    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    result: dict[str, Any] = {"machine": machine(("duckdb", "panel"), {"influxd": ["influxd", "version"]}),
                              "points": args.points, "buckets": BUCKETS, "runs": args.runs}
    tmp = Path(tempfile.mkdtemp(prefix="vigie-history-"))
    m0, own0, w0 = machine_ticks()[0], sum(os.times()[:4]), time.monotonic()
    end_ns = (time.time_ns() // MINUTE_NS) * MINUTE_NS
    times, values = series(args.points, end_ns)
    rows = readings(times, values)
    query_end = end_ns + MINUTE_NS  # the last point is included
    influx = None
    serve = Serve(tmp / "serve")
    try:
        print("embedded: writing and querying", file=sys.stderr, flush=True)
        store = EmbeddedStore(tmp / "serve" / "data")
        result["embedded"] = asyncio.run(load_and_time(store, rows, args.batch, query_end, args.runs))
        result["embedded"]["file_mb"] = dir_bytes(tmp / "serve" / "data") / 1e6
        if args.influx:
            print("influx: writing and querying", file=sys.stderr, flush=True)
            (tmp / "influx").mkdir()
            influx = InfluxDB(tmp / "influx")
            influx.start()
            store = InfluxStore(influx.url, database=influx.database)
            result["influx"] = asyncio.run(load_and_time(store, rows, args.influx_batch, query_end, args.runs))
            influx.stop()
            influx = None
        print("vigie serve: HTTP API and page", file=sys.stderr, flush=True)
        serve.start()
        result["http"] = time_http(serve, query_end, args.runs)
        result["busy_cores_before_page"] = machine_busy(1.0)
        if args.browser:
            result["page"] = time_page(serve, args.page_runs)
    finally:
        serve.stop()
        if influx is not None:
            influx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    # What other processes used meanwhile (ours and our reaped children subtracted): a shared machine's noise.
    busy = (machine_ticks()[0] - m0) / CLK_TCK
    result["other_cores_during_run"] = max(0.0, (busy - (sum(os.times()[:4]) - own0)) / (time.monotonic() - w0))
    return result



# -- a fleet: N devices x a year at one minute (issue 16) ----------------------------------------------
FLEET_METRIC = "level"
DASHBOARD_SERIES = 12
DASHBOARD_SPAN = 7 * DAY_NS


def fleet_batches(devices: int, days: int, end_ns: int, batch: int, seed: int = 11):
    """Yield batches of ``batch`` readings: every device's reading of a minute, then the next minute (as live)."""
    minutes = days * 1440
    start = end_ns - minutes * MINUTE_NS
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, devices)
    names = [f"dev-{i:04d}" for i in range(devices)]
    per_chunk = max(1, batch // devices)  # minutes per batch
    for m0 in range(0, minutes, per_chunk):
        m = np.arange(m0, min(minutes, m0 + per_chunk))
        t = start + m * MINUTE_NS
        days_f = (m / 1440.0)[:, None]
        values = np.round(10 + 3 * np.sin(2 * np.pi * days_f + phase) + rng.normal(0, 0.05, (len(m), devices)), 3)
        yield [Reading(names[d], FLEET_METRIC, int(t[i]), float(values[i, d]), unit="m")
               for i in range(len(m)) for d in range(devices)]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def fleet_load(store: Any, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    """Write the fleet through ``write()``; split throughput by whether a maintenance pass was running."""
    busy = getattr(getattr(store, "maintenance", None), "_running", None)
    spans = {"quiet": [0, 0.0], "during_maintenance": [0, 0.0]}
    total = 0
    t0 = time.perf_counter()
    for batch in fleet_batches(args.devices, args.days, end_ns, args.batch):
        during = busy is not None and busy.locked()
        t = time.perf_counter()
        await store.write(batch)
        dt = time.perf_counter() - t
        during = during or (busy is not None and busy.locked())
        span = spans["during_maintenance" if during else "quiet"]
        span[0] += len(batch)
        span[1] += dt
        total += len(batch)
        await asyncio.sleep(0)  # let the maintenance task start when woken, as between writer ticks
    wall = time.perf_counter() - t0
    out = {"readings": total, "wall_s": wall, "readings_per_s": total / wall}
    for name, (n, secs) in spans.items():
        out[f"write_{name}"] = {"readings": n, "seconds": secs, "readings_per_s": n / secs if secs else None}
    if hasattr(store, "maintain"):
        t = time.perf_counter()
        await store.maintain()  # compact what is left, so the figures below are of the settled store
        out["final_maintenance_s"] = time.perf_counter() - t
    return out


async def fleet_queries(store: Any, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    """Time one series' envelope per range, and a 12-series dashboard (all its queries at once)."""
    out: dict[str, Any] = {}
    key = f"dev-{args.devices // 2:04d}/{FLEET_METRIC}"
    for name, span in RANGES.items():
        start = end_ns - span
        env = await store.envelope(key, start, end_ns, BUCKETS)
        timings = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            env = await store.envelope(key, start, end_ns, BUCKETS)
            timings.append((time.perf_counter() - t0) * 1000)
        out[name] = {**stats(timings), "p99_ms": percentile(timings, 99), "buckets": len(env.time_ns),
                     "bucket_s": env.bucket_ns / 1e9}
    keys = [f"dev-{i * max(1, args.devices // DASHBOARD_SERIES) % args.devices:04d}/{FLEET_METRIC}"
            for i in range(DASHBOARD_SERIES)]
    timings = []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        envs = await asyncio.gather(*(store.envelope(k, end_ns - DASHBOARD_SPAN, end_ns, BUCKETS) for k in keys))
        if i:
            timings.append((time.perf_counter() - t0) * 1000)
    out["dashboard_12x7d"] = {**stats(timings), "p99_ms": percentile(timings, 99),
                              "buckets": sum(len(e.time_ns) for e in envs)}
    return out


def embedded_class(ref: str | None) -> type:
    """Return this checkout's EmbeddedStore, or the one of git ``ref`` (the baseline to compare with)."""
    if ref is None:
        from app.store.embedded import EmbeddedStore

        return EmbeddedStore
    import importlib.util

    source = subprocess.run(["git", "show", f"{ref}:app/store/embedded.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="vigie-baseline-")) / "baseline_embedded.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_embedded", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmbeddedStore


async def fleet_embedded(root: Path, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    cls = embedded_class(args.baseline)
    kwargs = {} if args.baseline else {"compact_rows": args.compact_rows}
    data = root / "embedded"
    empty = cls(data / "empty")
    t = time.perf_counter()
    await empty.open()
    open_empty = time.perf_counter() - t
    await empty.close()
    store = cls(data / "fleet", **kwargs)
    await store.open()
    result: dict[str, Any] = {"load": await fleet_load(store, args, end_ns)}
    count = await store.count()
    result["count"] = count
    result["health"] = store.health()
    await store.close()
    size = dir_bytes(data / "fleet")
    result["bytes_on_disk"] = size
    result["bytes_per_reading"] = size / count
    t = time.perf_counter()
    store = cls(data / "fleet")
    await store.open()
    latest = await store.latest()
    result["startup_s"] = time.perf_counter() - t
    result["startup_empty_s"] = open_empty
    result["latest_series"] = len(latest)
    result["queries"] = await fleet_queries(store, args, end_ns + MINUTE_NS)
    await store.close()
    return result


async def fleet_influx(root: Path, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    from app.store.influx import InfluxStore

    (root / "influx").mkdir()
    server = InfluxDB(root / "influx")
    server.start()
    try:
        from app.store.history_policy import HistoryPolicy

        # Rollups as configured by default (1m, 1h): fleet_load runs the pass that makes them after the load.
        store = InfluxStore(server.url, database=server.database, policy=HistoryPolicy(),
                            maintenance_interval_s=3600)
        await store.open()
        result: dict[str, Any] = {"load": await fleet_load(store, args, end_ns)}
        result["count"] = await store.count()
        result["health"] = store.health()
        await store.close()
        t = time.perf_counter()
        store = InfluxStore(server.url, database=server.database, policy=HistoryPolicy(), maintenance_interval_s=3600)
        await store.open()
        latest = await store.latest()
        result["startup_s"] = time.perf_counter() - t
        result["latest_series"] = len(latest)
        result["queries"] = await fleet_queries(store, args, end_ns + MINUTE_NS)
        await store.close()
        size = dir_bytes(root / "influx" / "data") + dir_bytes(root / "influx" / "wal")
        result["bytes_on_disk"] = size
        result["bytes_per_reading"] = size / max(1, result["count"])
    finally:
        server.stop()
    return result


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """The fleet benchmark: per store, load, size on disk, start-up, queries."""
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    result: dict[str, Any] = {"machine": machine(("duckdb",), {"influxd": ["influxd", "version"]}),
                              "devices": args.devices, "days": args.days, "buckets": BUCKETS, "runs": args.runs,
                              "embedded_from": args.baseline or "this checkout"}
    tmp = Path(tempfile.mkdtemp(prefix="vigie-fleet-"))
    end_ns = (time.time_ns() // MINUTE_NS) * MINUTE_NS
    m0, own0, w0 = machine_ticks()[0], sum(os.times()[:4]), time.monotonic()
    try:
        if args.embedded:
            print(f"fleet: embedded, {args.devices} devices x {args.days} days", file=sys.stderr, flush=True)
            result["embedded"] = asyncio.run(fleet_embedded(tmp, args, end_ns))
        if args.influx:
            print(f"fleet: influx, {args.devices} devices x {args.days} days", file=sys.stderr, flush=True)
            result["influx"] = asyncio.run(fleet_influx(tmp, args, end_ns))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    busy = (machine_ticks()[0] - m0) / CLK_TCK
    result["other_cores_during_run"] = max(0.0, (busy - (sum(os.times()[:4]) - own0)) / (time.monotonic() - w0))
    return result


# -- a fleet written in bulk (--bulk): 1,000 devices x a year for the embedded store, 100 for InfluxDB ------------
def fleet_rows_sql(devices: int):
    """Return ``rows_sql(lo, hi)``: every device's reading of each minute in ``[lo, hi)``, generated by DuckDB.

    Deterministic: a daily sine with a per-device phase plus noise from a
    hash of (device, minute), 3 decimals (as a sensor reports them).
    """
    def rows_sql(lo: int, hi: int) -> str:
        first = -(-lo // MINUTE_NS) * MINUTE_NS
        return (f"SELECT d.sid::INTEGER AS sid, m.t AS time, round(10 + 3 * sin(2 * pi() * (m.t % {DAY_NS}) / "
                f"{DAY_NS} + d.sid * 0.7) + ((hash(d.sid, m.t) % 100000) / 100000.0 - 0.5) * 0.1, 3) AS value, "
                f"'good' AS quality FROM range(0, {devices}) d(sid), range({first}, {hi}, {MINUTE_NS}) m(t)")
    return rows_sql


def fleet_series(devices: int) -> list:
    from app.model import SeriesInfo

    return [SeriesInfo(f"dev-{i:04d}", FLEET_METRIC, "m") for i in range(devices)]


class LoadSampler:
    """Sample the 1-minute load average every few seconds in a thread (other engineers share the machine)."""

    def __init__(self, every_s: float = 5.0) -> None:
        import threading

        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        return {"min": min(self.samples), "mean": statistics.fmean(self.samples), "max": max(self.samples)}


def http_dashboard(serve: Serve, keys: list[str], end_ns: int, runs: int) -> dict[str, Any]:
    """Time a dashboard's 12 envelope requests sent at once (12 keep-alive connections, as a browser's panels)."""
    from concurrent.futures import ThreadPoolExecutor

    conns = [http.client.HTTPConnection("127.0.0.1", serve.port, timeout=60) for _ in keys]

    def one(i: int) -> None:
        path = "/api/v1/envelope?" + urlencode({"series": keys[i], "start": end_ns - DASHBOARD_SPAN, "end": end_ns,
                                                "buckets": BUCKETS})
        conns[i].request("GET", path, headers=serve.headers)
        resp = conns[i].getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {body[:200]!r}")
        json.loads(body)

    timings = []
    with ThreadPoolExecutor(len(keys)) as pool:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            list(pool.map(one, range(len(keys))))
            if i:
                timings.append((time.perf_counter() - t0) * 1000)
    for c in conns:
        c.close()
    return {**stats(timings), "p99_ms": percentile(timings, 99), "buckets": BUCKETS * len(keys)}


def dashboard_keys(devices: int) -> list[str]:
    return [f"dev-{i * max(1, devices // DASHBOARD_SERIES) % devices:04d}/{FLEET_METRIC}"
            for i in range(DASHBOARD_SERIES)]


def served_queries(root: Path, store_yaml: str, devices: int, end_ns: int, runs: int) -> dict[str, Any]:
    """Start ``vigie serve`` on the store, time one series per range and the dashboard over HTTP."""
    serve = Serve(root, store_yaml)
    t = time.perf_counter()
    serve.start()
    try:
        out = {"serve_up_s": time.perf_counter() - t}
        out.update(time_http(serve, end_ns, runs, key=f"dev-{devices // 2:04d}/{FLEET_METRIC}"))
        out["dashboard_12x7d"] = http_dashboard(serve, dashboard_keys(devices), end_ns, runs)
    finally:
        serve.stop()
    return out


def served_or_error(*args: Any) -> dict[str, Any]:
    """Run :func:`served_queries`; a failure is recorded in the result rather than losing the other figures."""
    try:
        return served_queries(*args)
    except Exception as exc:  # reported in the output
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def wait_idle(pid: int, limit_s: float, below: float = 0.1) -> float:
    """Wait until process ``pid`` uses under ``below`` of a core over 5 s (or ``limit_s``); return the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        c0 = cpu_seconds(pid)
        time.sleep(5)
        if (cpu_seconds(pid) - c0) / 5 < below:
            break
        print(f"  waiting for influxd's compactions ({os.getloadavg()[0]:.1f} load)", file=sys.stderr, flush=True)
    return time.monotonic() - t0


async def bulk_embedded(root: Path, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    """Import the fleet into an embedded store, then: bytes, start-up, queries in process and over HTTP."""
    from app.store.bulk import import_history
    from app.store.embedded import EmbeddedStore
    from app.store.history_policy import HistoryPolicy

    policy = HistoryPolicy.from_config(args.rollups)
    data = root / "embedded" / "data"
    start_ns = end_ns - args.days * DAY_NS

    def progress(part: int, done: Any) -> None:
        if done.chunks % 10 == 0:
            print(f"  embedded: {done.chunks} weeks, {done.rows:,} readings, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)

    done = await asyncio.to_thread(import_history, data, fleet_series(args.devices), fleet_rows_sql(args.devices),
                                   start_ns, end_ns, policy=policy, progress=progress)
    result: dict[str, Any] = {"import": {"readings": done.rows, "chunks": done.chunks, "seconds": done.seconds,
                                         "readings_per_s": done.rows / done.seconds}, "rollups": args.rollups}
    t = time.perf_counter()
    store = EmbeddedStore(data, policy=policy, maintenance_interval_s=3600)
    await store.open()
    latest = await store.latest()
    result["startup_s"] = time.perf_counter() - t
    result["latest_series"] = len(latest)
    # The manifest's count (store.count() would read every chunk's keys to subtract hot rows; there are none).
    result["count"] = store.cursor().execute("SELECT sum(rows) FROM chunks").fetchone()[0]
    result["health"] = store.health()
    result["queries"] = await fleet_queries(store, args, end_ns + MINUTE_NS)
    await store.close()
    size = dir_bytes(data)
    result["bytes_on_disk"] = size
    result["bytes_per_reading"] = size / result["count"]
    result["http"] = await asyncio.to_thread(
        served_or_error, root / "embedded" / "serve",
        f"{{engine: embedded, data_dir: {data}, spool_dir: spool, rollups: {json.dumps(args.rollups)}, "
        "maintenance_interval_s: 3600}", args.devices, end_ns + MINUTE_NS, args.runs)
    return result


def influx_bulk_write(url: str, database: str, devices: int, start_ns: int, end_ns: int, *,
                      concurrency: int = 3, minutes_per_request: int = 1440) -> dict[str, Any]:
    """Write the fleet as line protocol: gzip, ``minutes_per_request`` minutes of every device a request, interleaved.

    The lines are InfluxStore's own form (measurement ``telemetry``, tags
    device, metric, unit in that order, fields value and quality), made by
    DuckDB from the same generator as the embedded store's.
    """
    import threading
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    import duckdb

    rows_sql = fleet_rows_sql(devices)
    con = duckdb.connect()
    local = threading.local()
    qs = urlencode({"db": database, "precision": "ns"})
    step = minutes_per_request * MINUTE_NS
    spans = [(a, min(end_ns, a + step)) for a in range(start_ns, end_ns, step)]
    sent = {"lines": 0, "gzip_bytes": 0, "retries": 0, "requests": 0}
    lock = threading.Lock()

    def one(span: tuple[int, int]) -> None:
        cur = getattr(local, "cur", None) or con.cursor()
        local.cur = cur
        text, n = cur.execute(
            "SELECT string_agg('telemetry,device=dev-' || lpad(sid::VARCHAR, 4, '0') || ',metric=" + FLEET_METRIC
            + ",unit=m value=' || value::VARCHAR || ',quality=\"good\" ' || time::VARCHAR, chr(10) "
            f"ORDER BY time, sid), count(*) FROM ({rows_sql(*span)})").fetchone()
        body = zlib.compress(text.encode(), 1, wbits=31)  # gzip
        for attempt in range(20):
            req = urllib.request.Request(f"{url}/write?{qs}", data=body, method="POST",
                                         headers={"Content-Encoding": "gzip"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    r.read()
                break
            except urllib.error.HTTPError as exc:  # 500 "cache maximum memory size exceeded": back off and retry
                if exc.code < 500 or attempt == 19:
                    raise
                with lock:
                    sent["retries"] += 1
                time.sleep(min(10.0, 0.5 * 2 ** attempt))
        with lock:
            sent["lines"] += n
            sent["gzip_bytes"] += len(body)
            sent["requests"] += 1
            if sent["requests"] % 30 == 0:
                print(f"  influx: {sent['lines']:,} lines, load {os.getloadavg()[0]:.1f}", file=sys.stderr,
                      flush=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, spans))
    seconds = time.perf_counter() - t
    con.close()
    return {**sent, "seconds": seconds, "readings_per_s": sent["lines"] / seconds}


async def bulk_influx(root: Path, args: argparse.Namespace, end_ns: int) -> dict[str, Any]:
    """Bulk-write the fleet into a real InfluxDB, roll it up with Vigie's rollup writer, then measure."""
    from app.store.history_policy import HistoryPolicy
    from app.store.influx import InfluxStore

    devices = args.influx_devices
    policy = HistoryPolicy.from_config(args.rollups)
    (root / "influx").mkdir()
    server = InfluxDB(root / "influx")
    server.start()
    try:
        result: dict[str, Any] = {"devices": devices, "rollups": args.rollups}
        result["import"] = await asyncio.to_thread(influx_bulk_write, server.url, server.database, devices,
                                                   end_ns - args.days * DAY_NS, end_ns)

        def store() -> InfluxStore:
            return InfluxStore(server.url, database=server.database, policy=policy, maintenance_interval_s=3600,
                               timeout_s=600)

        # The rollup measurements do not exist yet: open() marks the whole history dirty, the pass backfills it.
        s = store()
        await s.open()
        t = time.perf_counter()
        result["rollup_backfill"] = {"written": await s.maintain(), "seconds": time.perf_counter() - t}
        result["count"] = await s.count()
        await s.close()
        # A bulk load leaves influxd compacting every shard for minutes (CPU-bound): a year written over a year
        # would be compacted long since, so the queries below wait for it to finish (up to 10 min).
        result["influxd_settle_s"] = await asyncio.to_thread(wait_idle, server.proc.pid, 600)
        t = time.perf_counter()
        s = store()
        await s.open()
        latest = await s.latest()
        result["startup_s"] = time.perf_counter() - t
        result["latest_series"] = len(latest)
        t = time.perf_counter()
        await s.maintain()  # the catch-up pass a start makes (the last day rolled up again)
        result["catch_up_pass_s"] = time.perf_counter() - t
        fleet_args = argparse.Namespace(**{**vars(args), "devices": devices})
        result["queries"] = await fleet_queries(s, fleet_args, end_ns + MINUTE_NS)
        result["health"] = s.health()
        await s.close()
        for sub in ("data", "wal"):
            result[f"{sub}_bytes"] = dir_bytes(root / "influx" / sub)
        result["bytes_on_disk"] = result["data_bytes"] + result["wal_bytes"]
        result["bytes_per_reading"] = result["bytes_on_disk"] / max(1, result["count"])
        result["http"] = await asyncio.to_thread(
            served_or_error, root / "influx" / "serve",
            f"{{engine: influx, url: '{server.url}', database: {server.database}, spool_dir: spool, "
            f"rollups: {json.dumps(args.rollups)}, maintenance_interval_s: 3600}}", devices, end_ns + MINUTE_NS,
            args.runs)
    finally:
        server.stop()
    return result


def run_bulk(args: argparse.Namespace) -> dict[str, Any]:
    """The fleet benchmark at full size, each store filled in bulk (see the module's docstring)."""
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    result: dict[str, Any] = {"machine": machine(("duckdb",), {"influxd": ["influxd", "version"]}),
                              "devices": args.devices, "influx_devices": args.influx_devices, "days": args.days,
                              "buckets": BUCKETS, "runs": args.runs, "bulk": True}
    tmp = Path(tempfile.mkdtemp(prefix="vigie-bulk-"))
    end_ns = (time.time_ns() // MINUTE_NS) * MINUTE_NS
    m0, own0, w0 = machine_ticks()[0], sum(os.times()[:4]), time.monotonic()
    load = LoadSampler()
    result["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        if args.embedded:
            print(f"bulk: embedded, {args.devices} devices x {args.days} days", file=sys.stderr, flush=True)
            result["embedded"] = asyncio.run(bulk_embedded(tmp, args, end_ns))
        if args.influx:
            print(f"bulk: influx, {args.influx_devices} devices x {args.days} days", file=sys.stderr, flush=True)
            result["influx"] = asyncio.run(bulk_influx(tmp, args, end_ns))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        result["load_average"] = load.stop()
    result["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    busy = (machine_ticks()[0] - m0) / CLK_TCK
    result["other_cores_during_run"] = max(0.0, (busy - (sum(os.times()[:4]) - own0)) / (time.monotonic() - w0))
    return result


def print_bulk(r: dict[str, Any]) -> None:
    m, la = r["machine"], r["load_average"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, {m['ram_gb']} GB; Python {m['python']}, duckdb {m['duckdb']}, "
          f"{m['influxd']}; commit {m['commit']}; {r['started']} to {r['ended']}; load average (1 min) "
          f"{la['min']:.1f}-{la['max']:.1f}, mean {la['mean']:.1f}; other processes used "
          f"{r['other_cores_during_run']:.2f} cores")
    print(f"bulk: embedded {r['devices']} devices, InfluxDB {r['influx_devices']} devices, x {r['days']} days at "
          f"1/min; {r['buckets']} buckets, {r['runs']} runs\n")
    print("| store | readings | bulk write | bytes/reading | start-up (open + latest) |")
    print("|---|---|---|---|---|")
    for name in ("embedded", "influx"):
        if name in r:
            e, imp = r[name], r[name]["import"]
            print(f"| {name} | {e['count']:,} | {imp['seconds']:.0f} s ({imp['readings_per_s']:,.0f}/s) "
                  f"| {e['bytes_per_reading']:.2f} | {e['startup_s'] * 1000:.0f} ms |")
    print("\n| store | path | query | median | p99 | max |")
    print("|---|---|---|---|---|---|")
    for name in ("embedded", "influx"):
        for path, per in (("store", r.get(name, {}).get("queries", {})), ("HTTP", r.get(name, {}).get("http", {}))):
            if "error" in per:
                print(f"| {name} | {path} | failed: {per['error'][:200]} | | | |")
            for qname, s in per.items():
                if isinstance(s, dict):
                    print(f"| {name} | {path} | {qname} | {s['median_ms']:.1f} ms | {s['p99_ms']:.1f} ms "
                          f"| {s['max_ms']:.1f} ms |")


def print_fleet(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, {m['ram_gb']} GB; Python {m['python']}, duckdb {m['duckdb']}, "
          f"{m['influxd']}; commit {m['commit']}; {m['date']}; other processes used "
          f"{r['other_cores_during_run']:.2f} cores")
    print(f"{r['devices']} devices x {r['days']} days at 1/min, {r['buckets']} buckets, {r['runs']} runs; "
          f"embedded store of {r.get('embedded_from', 'this checkout')}\n")
    print("| store | readings | ingest /s (all) | quiet | during maintenance | bytes/reading | start-up |")
    print("|---|---|---|---|---|---|---|")
    for name in ("embedded", "influx"):
        if name not in r:
            continue
        e, ld = r[name], r[name]["load"]
        q, dm = ld["write_quiet"]["readings_per_s"], ld["write_during_maintenance"]["readings_per_s"]
        print(f"| {name} | {e['count']:,} | {ld['readings_per_s']:,.0f} | {q or 0:,.0f} | {dm or 0:,.0f} "
              f"| {e['bytes_per_reading']:.2f} | {e['startup_s'] * 1000:.0f} ms |")
    print("\n| store | query | buckets | median | p99 | max |")
    print("|---|---|---|---|---|---|")
    for name in ("embedded", "influx"):
        for qname, s in r.get(name, {}).get("queries", {}).items():
            print(f"| {name} | {qname} | {s['buckets']} | {s['median_ms']:.1f} ms | {s['p99_ms']:.1f} ms "
                  f"| {s['max_ms']:.1f} ms |")


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, {m['ram_gb']} GB; Python {m['python']}, duckdb {m['duckdb']}, "
          f"{m['influxd']}, panel {m['panel']}; commit {m['commit']}; {m['date']}")
    print(f"{r['points']:,} points (1/min), envelope of {r['buckets']} buckets, {r['runs']} runs after a warm-up; "
          f"other processes used {r['other_cores_during_run']:.2f} cores meanwhile\n")
    for name in ("embedded", "influx"):
        if name in r:
            e = r[name]
            print(f"{name}: wrote {e['count']:,} points in {e['write_s']:.1f} s ({e['points_per_s']:,.0f}/s)")
    print("\n| path | range | buckets | min | median | p95 | max |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"{n} store.envelope()", r[n]["queries"]) for n in ("embedded", "influx") if n in r]
    if "influx" in r:
        rows.append(("influxd alone (same InfluxQL over HTTP, not decoded)", r["influx"]["raw_queries"]))
    rows.append(("GET /api/v1/envelope (vigie serve, embedded)", r["http"]))
    if "page" in r:
        rows.append(("history page in Chromium: click → new plot in the page",
                     {k: v for k, v in r["page"].items() if k in RANGES}))
        rows.append(("history page in Chromium: click → page idle (busy indicator off)",
                     {k: {**v["done"], "buckets": v["buckets"]} for k, v in r["page"].items() if k in RANGES}))
    for label, per in rows:
        for rng, s in per.items():
            print(f"| {label} | {rng} | {s['buckets']} | {s['min_ms']:.1f} ms | {s['median_ms']:.1f} ms "
                  f"| {s['p95_ms']:.1f} ms | {s['max_ms']:.1f} ms |")
    if "embedded" in r:
        print("\nbuilding the page's HoloViews plot from the answer (median): " + ", ".join(
            f"{k} {v['plot_build']['median_ms']:.1f} ms" for k, v in r["embedded"]["queries"].items()))
    if "page" in r:
        print(f"history page first load (session + query): {r['page']['first_load_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("single", "fleet"), default=None,
                   help="single: one series, store/HTTP/page; fleet: N devices (default: both)")
    p.add_argument("--points", type=int, default=525_600, help="single: points of the series (one a minute)")
    p.add_argument("--devices", type=int, default=10, help="fleet: devices, one reading a minute each")
    p.add_argument("--days", type=int, default=365, help="fleet: days of history")
    p.add_argument("--compact-rows", type=int, default=250_000, help="fleet: hot rows that start a compaction")
    p.add_argument("--bulk", action="store_true",
                   help="fleet: fill each store in bulk (embedded: app.store.bulk; InfluxDB: gzip line protocol)")
    p.add_argument("--influx-devices", type=int, default=100, help="fleet --bulk: devices written to InfluxDB")
    p.add_argument("--rollups", type=lambda t: t.split(","), default=["1h"],
                   help="fleet --bulk: the stores' rollups (default 1h, as bench/README.md advises for 1/min fleets)")
    p.add_argument("--no-embedded", dest="embedded", action="store_false", help="fleet: skip the embedded store")
    p.add_argument("--baseline", default=None, metavar="GIT_REF",
                   help="fleet: measure the embedded store of this git ref instead (e.g. main, to compare)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per range")
    p.add_argument("--page-runs", type=int, default=10, help="timed clicks per range in the history page")
    p.add_argument("--batch", type=int, default=5000, help="readings per write() to the embedded store")
    p.add_argument("--influx-batch", type=int, default=5000, help="readings per write() to InfluxDB")
    p.add_argument("--no-influx", dest="influx", action="store_false", help="skip InfluxDB")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="skip the history page in Chromium")
    p.add_argument("--wait-quiet", type=float, default=0, help="first wait up to this many s for an idle machine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    if args.only in (None, "single"):
        result["single"] = run(args)
    if args.only in (None, "fleet"):
        result["fleet"] = run_bulk(args) if args.bulk else run_fleet(args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1, default=str))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        if "single" in result:
            print_table(result["single"])
        if "fleet" in result:
            (print_bulk if args.bulk else print_fleet)(result["fleet"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
