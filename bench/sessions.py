"""Sessions benchmark: what live dashboard viewers cost the server, and how late they see data.

    .venv/bin/python bench/sessions.py [--sessions 50] [--duration 60] [--browsers 3]
                                       [--sessions 10,25,50] [--cycles 2] [--py-spy FILE] [--json]

Starts ``vigie demo`` (simulators every ``--period`` s, 1 by default) as a
subprocess on free ports, with a copy of the shipped config and layouts,
measures its idle CPU, then opens ``/dashboard?name=flood-dams`` as:

- Bokeh client sessions (``bokeh.client.pull_session``, one thread and IO
  loop per session, in worker processes of at most ``--per-worker``
  sessions). Each sends Panel's ``document_ready`` event, as a browser does,
  and records every point streamed into a ``ColumnDataSource`` of its
  client document;
- ``--browsers`` Chromium tabs (Playwright), whose page hooks the Bokeh
  document's change events in JavaScript and records the same.

Publish-to-page latency of a point = its arrival time in the client
document minus its own timestamp (the simulators stamp each reading with
the wall clock when they publish it). ``floor`` is, per simulator tick, the
smallest latency any session saw: the pipeline's own delay (MQTT, ingest,
refresh, websocket), without the wait for a session's next 1 Hz tick.

``--sessions`` takes one number or an increasing list: sessions are added up
to each level, left to settle ``--warmup`` s, then measured ``--duration`` s.
Server CPU comes from /proc/<pid>/stat; per session = (CPU - idle CPU) /
(client sessions + browser tabs). After the last level every session is
closed and RSS followed for ``--settle`` s (Bokeh discards a detached
session after 15 s, checked every 17 s); ``--cycles 2`` opens and closes the
client sessions again to see whether memory comes back to the same level.

``--probe`` instruments the server process (refreshes per second and their
wall time, event-loop lag, garbage-collector pauses); ``--variant`` patches a
proposed change into the server process before it starts, to measure it
before making it; ``--ingest external`` splits the demo as a deployment
would be (Mosquitto, the simulators in their own process, ``vigie serve``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.measure import CLK_TCK, cpu_ticks, machine, machine_ticks, memory_mb, percentile, wait_quiet  # noqa: E402
from tests.servers import free_port, wait_until  # noqa: E402

VIGIE = ROOT / ".venv" / "bin" / "vigie"
PACKAGES = ("panel", "bokeh", "holoviews", "tornado", "playwright")  # versions reported with the figures
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DASHBOARD = "flood-dams"

# Installed in each Chromium tab: every point streamed into a data source
# with a `time` column, as (arrival ms, point ms).
BROWSER_HOOK = """
() => {
  const docs = (window.Bokeh && window.Bokeh.documents) || [];
  if (!docs.length) return -1;
  const doc = docs[0];
  window.__vigie = [];
  const col = (d, k) => (d instanceof Map) ? d.get(k) : d[k];
  doc.on_change((ev) => {
    if (ev.kind !== "ColumnsStreamed") return;
    const times = col(ev.data, "time");
    if (!times) return;
    const now = Date.now();
    for (const t of times) window.__vigie.push([now, t]);
  });
  return doc.all_models.size;
}
"""


def chromium_pids() -> list[int]:
    """Return the Chromium processes started under this one (Playwright's browser)."""
    import psutil

    out = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "chrom" in child.name() or "headless" in child.name():
                    out.append(child.pid)
    return out


# -- variants of the server, to measure proposed changes before making them ----
VARIANTS = {
    "shipped": "the app as committed",
    "no-busy": "pages built without Panel's template busy indicator "
               "(app/pages/shell.py: BootstrapTemplate(..., busy_indicator=None))",
    "fast": "no-busy, and dashboards check the live cache every 200 ms instead of refresh_ms "
            "(app/dashboard/dashboard.py: Dashboard.start)",
    "gc-freeze": "gc.freeze() once the server is built, so full collections skip the ~300 MB of "
                 "start-up objects (app/server.py: run_server, after make_server)",
    "gc-default": "CPython's default collector thresholds (700, 10, 10) instead of Vigie's "
                  "(app/gc_tuning.py: young collections every 50,000 allocations)",
    "timer": "dashboards poll the live cache on their refresh_ms timer instead of being woken by the "
             "pulse (app/pulse.py)",
}
FAST_MS = 200


def apply_variant(name: str) -> None:
    """Monkeypatch the app in this process as the variant says (the demo runs in it afterwards)."""
    if name in ("no-busy", "fast"):
        import panel as pn

        # Each template registers its busy indicator in pn.state._indicators (process-wide, never
        # emptied); any non-background callback then sets the indicator of every session ever opened.
        pn.template.BootstrapTemplate.param.busy_indicator.default = None
    if name == "gc-freeze":
        import gc

        import app.server

        make_server = app.server.make_server

        def make_and_freeze(*args: Any, **kwargs: Any) -> Any:
            server = make_server(*args, **kwargs)
            gc.collect()
            gc.freeze()
            return server

        app.server.make_server = make_and_freeze
    if name == "gc-default":
        import app.cli

        app.cli.tune_for_server = lambda: None
    if name == "timer":
        from app.dashboard.dashboard import Dashboard

        init = Dashboard.__init__

        def without_pulse(self: Dashboard, *args: Any, **kwargs: Any) -> None:
            kwargs["pulse"] = None
            init(self, *args, **kwargs)

        Dashboard.__init__ = without_pulse
    if name == "fast":
        from app.dashboard.dashboard import Dashboard
        from app.refresh import every

        def start(self: Dashboard) -> None:
            if self._callback is None:
                self._callback = every(self.refresh, FAST_MS)

        Dashboard.start = start


def install_probe(path: str) -> None:
    """Record, each second, the event loop's lag and the dashboards' refreshes to ``path`` (JSON lines)."""
    import asyncio
    import gc

    from app.dashboard.dashboard import Dashboard

    stats = {"n": 0, "busy_s": 0.0, "gc_s": 0.0, "gc_max_s": 0.0, "gc2": 0, "gc_t0": 0.0}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            stats["gc_t0"] = time.perf_counter()
            return
        spent = time.perf_counter() - stats["gc_t0"]
        stats["gc_s"] += spent
        stats["gc_max_s"] = max(stats["gc_max_s"], spent)
        stats["gc2"] += info.get("generation") == 2

    gc.callbacks.append(on_gc)
    refresh, start = Dashboard._refresh_views, Dashboard.start  # every refresh that touches the views
    task: list[asyncio.Task] = []

    def timed_refresh(self: Dashboard) -> None:
        t0 = time.perf_counter()
        try:
            refresh(self)
        finally:
            stats["n"] += 1
            stats["busy_s"] += time.perf_counter() - t0

    out = open(path, "a")  # noqa: SIM115  (open for the life of the process)

    async def probe() -> None:
        while True:
            lags, t_end = [], time.monotonic() + 1
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                await asyncio.sleep(0.02)
                lags.append((time.monotonic() - t0 - 0.02) * 1000)
            lags.sort()
            out.write(json.dumps({"t": time.time(), "refreshes": stats["n"], "refresh_s": stats["busy_s"],
                                  "lag_p50_ms": lags[len(lags) // 2], "lag_max_ms": lags[-1],
                                  "gc_s": stats["gc_s"], "gc_max_ms": stats["gc_max_s"] * 1000,
                                  "gc2": stats["gc2"]}) + "\n")
            stats["gc_max_s"] = 0.0
            out.flush()

    def started(self: Dashboard) -> None:
        if not task:
            task.append(asyncio.get_running_loop().create_task(probe(), name="bench-probe"))
        start(self)

    Dashboard._refresh_views, Dashboard.start = timed_refresh, started


def launch(variant: str, argv: list[str]) -> int:
    """Run the ``vigie`` command line in this process with a variant applied."""
    apply_variant(variant)
    if os.environ.get("VIGIE_BENCH_PROBE"):
        install_probe(os.environ["VIGIE_BENCH_PROBE"])
    from app.cli import main as vigie_main

    return vigie_main(argv)


def probe_window(path: Path, t0: float, t1: float) -> dict[str, Any]:
    """Summarise the probe's lines between two wall-clock instants (s)."""
    if not path.exists():
        return {}
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    inside = [x for x in lines if t0 <= x["t"] <= t1]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    dt = last["t"] - first["t"]
    n = last["refreshes"] - first["refreshes"]
    return {"refreshes_per_s": n / dt, "refresh_ms_mean": 1000 * (last["refresh_s"] - first["refresh_s"]) / max(1, n),
            "refresh_core_share": (last["refresh_s"] - first["refresh_s"]) / dt,
            "loop_lag_p50_ms": statistics.median(x["lag_p50_ms"] for x in inside),
            "loop_lag_max_ms": max(x["lag_max_ms"] for x in inside),
            "gc_core_share": (last["gc_s"] - first["gc_s"]) / dt, "gc_max_ms": max(x["gc_max_ms"] for x in inside),
            "gc_gen2_per_min": 60 * (last["gc2"] - first["gc2"]) / dt}


# -- the demo ---------------------------------------------------------------
class Demo:
    """`vigie demo` in a subprocess on free ports, with its own config, layouts and data.

    With ``external=True`` the demo is split as a deployment would be: a
    Mosquitto broker, the simulators in a process of their own, and
    ``vigie serve`` (MQTT sources only) with the same config and layouts.
    """

    def __init__(self, tmp: Path, period: float, variant: str = "shipped", external: bool = False,
                 probe: bool = False) -> None:
        self.tmp = tmp
        self.probe = tmp / "probe.jsonl" if probe else None
        self.period = period
        self.variant = variant
        self.external = external
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "demo.log"
        self.proc: subprocess.Popen | None = None
        self.broker: Any = None
        self.sims: subprocess.Popen | None = None
        cfg = tmp / "config"
        cfg.mkdir()
        self.mqtt_port, opc_port = free_port(), free_port()
        for f in (ROOT / "config").glob("*.yaml"):
            text = f.read_text().replace("port: 18830", f"port: {self.mqtt_port}").replace(":48400/", f":{opc_port}/")
            if external and "\nopcua:" in text:
                text = text.split("\nopcua:")[0] + "\n"  # the PLC simulator is the demo's own
            (cfg / f.name).write_text(text)
        (tmp / "layouts").mkdir()  # layouts sit beside the config directory
        for f in (ROOT / "layouts").glob("*.yaml"):
            (tmp / "layouts" / f.name).write_text(f.read_text())
        self.config = cfg

    def start(self) -> None:
        """Start the demo and wait until dam readings reach its live cache."""
        if self.external:
            from tests.servers import Mosquitto

            (self.tmp / "mosquitto").mkdir()
            self.broker = Mosquitto(self.tmp / "mosquitto", port=self.mqtt_port)
            self.broker.start()
            self.sims = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--simulate", "127.0.0.1", str(self.mqtt_port),
                 str(self.period)], cwd=ROOT, stdout=(self.tmp / "simulators.log").open("w"),
                stderr=subprocess.STDOUT)
            args = ["serve", "--port", str(self.port), "--config", str(self.config),
                    "--data-root", str(self.tmp / "data")]
        else:
            args = ["demo", "--port", str(self.port), "--config", str(self.config),
                    "--data-root", str(self.tmp / "data"), "--period", str(self.period)]
        env = dict(os.environ)
        if self.probe:
            env["VIGIE_BENCH_PROBE"] = str(self.probe)
        cmd = [str(VIGIE), *args] if self.variant == "shipped" and not self.probe else \
            [sys.executable, str(Path(__file__).resolve()), "--launch", self.variant, "--", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)

        def flowing() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigie demo exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/api/v1/latest", timeout=5) as r:
                    keys = {v["series"] for v in json.loads(r.read())}
            except (urllib.error.URLError, OSError, ValueError):
                return False
            return {f"dam-{i}/{m}" for i in range(1, 6) for m in ("water_level", "inflow", "rainfall")} <= keys

        wait_until(flowing, timeout=90, interval=0.5, what="the demo's dam readings")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ingest_lag(self, seconds: float, key: str = "dam-1/water_level", every: float = 0.02) -> list[float]:
        """Poll /api/v1/latest; return, per new point of ``key``, first seen minus its timestamp (ms)."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        seen: set[int] = set()
        out: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            conn.request("GET", "/api/v1/latest")
            body = conn.getresponse().read()
            now = time.time_ns()
            for v in json.loads(body):
                if v["series"] == key and v["time_ns"] not in seen:
                    if seen:  # the first one was there before we looked
                        out.append((now - v["time_ns"]) / 1e6)
                    seen.add(v["time_ns"])
            time.sleep(every)
        conn.close()
        return out

    def stop(self) -> int | None:
        """Stop with SIGINT as a user would; return the exit code."""
        code = self.proc.poll() if self.proc else None
        if self.proc is not None and code is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
        if self.sims is not None and self.sims.poll() is None:
            self.sims.send_signal(signal.SIGINT)
            try:
                self.sims.wait(10)
            except subprocess.TimeoutExpired:
                self.sims.kill()
        if self.broker is not None:
            self.broker.stop()
        return code


def simulate(host: str, port: int, period: float) -> None:
    """Run the demo's simulators (dams, trucks, server, webcam) alone, against an MQTT broker."""
    import asyncio

    from app.demo.simulate import Simulators
    from app.demo.webcam_sim import WebcamSimulator

    async def main() -> None:
        sims = Simulators(host, port, period_s=period, seed="vigie-demo")
        cams = WebcamSimulator(host, port, sims.dams[:1], period_s=5 * period)
        tasks = [asyncio.create_task(sims.run(), name="simulators"), asyncio.create_task(cams.run(), name="webcam")]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await sims.stop()
        await cams.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


# -- Bokeh client sessions (worker processes) -------------------------------
def import_client_models() -> None:
    """Register every model a Panel page may contain, so the client can deserialize it."""
    import importlib
    import pkgutil

    import holoviews.plotting.bokeh  # noqa: F401
    import panel as pn
    import panel.models

    for mod in pkgutil.iter_modules(panel.models.__path__):
        with contextlib.suppress(Exception):
            importlib.import_module(f"panel.models.{mod.name}")
    _ = pn.GridStack, pn.template.BootstrapTemplate, pn.widgets.Tabulator


def worker_main(url: str, count: int) -> None:
    """Hold ``count`` client sessions; answer commands on stdin with JSON lines on stdout."""
    import_client_models()
    from bokeh.client import pull_session
    from bokeh.document.events import ColumnsStreamedEvent
    from bokeh.events import DocumentReady
    from tornado.ioloop import IOLoop

    samples: list[tuple[int, float, float]] = []  # (session, arrival ms, point ms); list.append is atomic
    held: list[tuple[Any, IOLoop, threading.Thread]] = []
    errors: list[str] = []

    def say(**doc: Any) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    def run(index: int, opened: threading.Event, out: list) -> None:
        loop = IOLoop()
        try:
            session = pull_session(url=url, io_loop=loop, arguments={"name": DASHBOARD})
        except Exception as exc:  # reported to the controller
            out.append(f"{type(exc).__name__}: {exc}")
            opened.set()
            return

        def on_change(event: Any) -> None:
            if isinstance(event, ColumnsStreamedEvent) and "time" in event.data:
                now = time.time() * 1000
                for t in event.data["time"]:
                    samples.append((index, now, float(t)))

        session.document.on_change(on_change)
        # What BokehJS sends once the page is rendered; without it Panel/HoloViews keep re-scheduling.
        session.document.callbacks.send_event(DocumentReady())
        out.append((session, loop))
        opened.set()
        session._connection.loop_until_closed()

    for i in range(count):
        opened, out = threading.Event(), []
        thread = threading.Thread(target=run, args=(i, opened, out), daemon=True, name=f"session-{i}")
        thread.start()
        opened.wait(120)
        if out and isinstance(out[0], tuple):
            held.append((*out[0], thread))
        else:
            errors.append(out[0] if out else "timed out opening the session")
        say(event="opened", index=i, ok=bool(out and isinstance(out[0], tuple)))
    say(event="ready", sessions=len(held), errors=errors)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "report":
            t0, t1 = float(cmd[1]), float(cmd[2])
            rows = [(s, a, t) for (s, a, t) in list(samples) if t0 <= a < t1]
            alive = sum(1 for s, _loop, th in held if th.is_alive() and s.connected)
            say(event="report", rows=rows, alive=alive, sessions=len(held))
            # keep memory bounded: what is older than the window start will not be asked for again
            del samples[: max(0, len(samples) - len(rows) - 10_000)]
        elif cmd[0] == "close":
            for session, loop, _thread in held:
                loop.add_callback(session.close)
            deadline = time.monotonic() + 20  # the threads are daemons: do not wait for each in turn
            for _session, _loop, thread in held:
                thread.join(max(0.0, deadline - time.monotonic()))
            say(event="closed", still_running=sum(th.is_alive() for *_x, th in held))
            return


class Worker:
    """A worker process holding some client sessions."""

    def __init__(self, url: str, count: int, log: Path) -> None:
        self.count = count
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", url, "--worker-count", str(count)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("a"), text=True,
            bufsize=1)
        self.opened = 0
        self.ready: dict[str, Any] | None = None

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"session worker {self.proc.pid} exited ({self.proc.poll()})")
        return json.loads(line)

    def wait_ready(self) -> dict[str, Any]:
        while self.ready is None:
            doc = self.read()
            if doc["event"] == "opened":
                self.opened += 1
            elif doc["event"] == "ready":
                self.ready = doc
        return self.ready

    def send(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("close")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- Chromium tabs ------------------------------------------------------------
class Browsers:
    """Chromium tabs on the dashboard, each recording the points streamed into its page."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.pages: list[Any] = []
        self._pw = self._browser = None

    def open(self) -> None:
        if not self.count:
            return
        from playwright.sync_api import sync_playwright

        from tests.browser import CHROMIUM, CHROMIUM_ARGS

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(self.count):
            page = self._browser.new_context(viewport={"width": 1400, "height": 1150}).new_page()
            page.goto(self.url, timeout=120_000)
            page.locator(".vigie-number").first.wait_for(timeout=120_000)
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
            if page.evaluate(BROWSER_HOOK) < 0:
                raise RuntimeError("no Bokeh document in the page")
            self.pages.append(page)

    def samples(self, t0: float, t1: float) -> list[tuple[int, float, float]]:
        """Return (tab, arrival ms, point ms) of the points that arrived in [t0, t1) (ms)."""
        rows = []
        for i, page in enumerate(self.pages):
            data = page.evaluate("() => { const d = window.__vigie; window.__vigie = []; return d; }")
            rows += [(1000 + i, a, t) for a, t in data if t0 <= a < t1]
        return rows

    def reset(self) -> None:
        for page in self.pages:
            page.evaluate("() => { window.__vigie = []; }")

    def close(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.close()
        if self._pw is not None:
            with contextlib.suppress(Exception):
                self._pw.stop()
        self.pages, self._browser, self._pw = [], None, None


# -- measuring --------------------------------------------------------------
@dataclass
class Window:
    """CPU of the server, the load generators and the machine over an interval."""

    seconds: float
    server_cores: float
    client_cores: float
    browser_cores: float
    machine_cores: float
    other_cores: float
    rss_start_mb: float
    rss_end_mb: float


class Meter:
    """Take CPU readings of the server and the load generators at two instants."""

    def __init__(self, server_pid: int, clients: list[int]) -> None:
        self.server_pid = server_pid
        self.clients = clients

    def snapshot(self) -> dict[str, Any]:
        return {"t": time.monotonic(), "server": cpu_ticks(self.server_pid),
                "clients": {p: cpu_ticks(p) for p in self.clients},
                "browser": {p: cpu_ticks(p) for p in chromium_pids()},
                "machine": machine_ticks()[0], "rss": memory_mb(self.server_pid)[0]}

    @staticmethod
    def between(a: dict[str, Any], b: dict[str, Any]) -> Window:
        dt = b["t"] - a["t"]

        def cores(ticks: float) -> float:
            return ticks / CLK_TCK / dt

        server = cores(b["server"] - a["server"])
        clients = cores(sum(b["clients"].get(p, 0) - v for p, v in a["clients"].items()))
        browser = cores(sum(v - a["browser"].get(p, 0) for p, v in b["browser"].items()))
        whole = cores(b["machine"] - a["machine"])
        return Window(dt, server, clients, browser, whole, max(0.0, whole - server - clients - browser),
                      a["rss"], b["rss"])


def latency_stats(rows: list[tuple[int, float, float]], seconds: float, period: float) -> dict[str, Any]:
    """Summarise (session, arrival ms, point ms) rows: percentiles, floor, live sessions."""
    lat = [a - t for _s, a, t in rows]
    floor: dict[float, float] = {}
    per_session: dict[int, int] = {}
    for s, a, t in rows:
        floor[t] = min(floor.get(t, math.inf), a - t)
        per_session[s] = per_session.get(s, 0) + 1
    return {
        "points": len(lat),
        "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else None,
        "floor_p50_ms": percentile(list(floor.values()), 50),
        "floor_p95_ms": percentile(list(floor.values()), 95),
        "points_per_session_s": (statistics.mean(per_session.values()) / seconds) if per_session else 0.0,
        "ticks_per_s": len(floor) / seconds,  # distinct point timestamps seen: the simulators skip when late
        "sessions_seen": len(per_session),
        "expected_points_per_session_s": 15 / period,  # 3 charts x 5 series
    }


def summarize_pyspy(path: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """Return the top frames of py-spy raw output: (function, inclusive %, self %)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    rows = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
    return [(f, 100 * n / total, 100 * own.get(f, 0) / total) for f, n in rows] if total else []


@dataclass
class Level:
    """The figures of one number of sessions."""

    sessions: int
    browsers: int
    alive: int
    ramp_s: float
    window: dict[str, Any]
    per_session_pct: float
    clients: dict[str, Any]
    browser: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)  # --probe: refreshes and event-loop lag


def run(args: argparse.Namespace) -> dict[str, Any]:
    levels = sorted({int(x) for x in str(args.sessions).split(",")})
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    tmp = Path(tempfile.mkdtemp(prefix="vigie-sessions-"))
    demo = Demo(tmp, args.period, args.variant, external=args.ingest == "external", probe=args.probe)
    workers: list[Worker] = []
    browsers = Browsers(f"http://127.0.0.1:{demo.port}/dashboard?name={DASHBOARD}", args.browsers)
    result: dict[str, Any] = {"machine": machine(PACKAGES, {"chromium": ["/usr/bin/chromium", "--version"]}),
                              "config": {k: v for k, v in vars(args).items() if not k.startswith("worker")}}
    timeline: list[tuple[float, float, float]] = []  # (s since start, server cores over 1 s, RSS MB)
    stop_sampling = threading.Event()
    t_start = time.monotonic()

    def sample() -> None:
        last = (time.monotonic(), cpu_ticks(demo.pid))
        while not stop_sampling.wait(1.0):
            now = (time.monotonic(), cpu_ticks(demo.pid))
            timeline.append((round(now[0] - t_start, 1), (now[1] - last[1]) / CLK_TCK / (now[0] - last[0]),
                             memory_mb(demo.pid)[0]))
            last = now

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        demo.start()
        log(f"demo up on {demo.base} (pid {demo.pid})")
        threading.Thread(target=sample, daemon=True).start()
        time.sleep(5)  # let start-up work (first writes, OPC-UA subscription) pass
        meter = Meter(demo.pid, [])
        a = meter.snapshot()
        time.sleep(args.baseline)
        idle = Meter.between(a, meter.snapshot())
        result["idle"] = asdict(idle)
        result["rss_start_mb"] = memory_mb(demo.pid)[0]
        lag = demo.ingest_lag(args.ingest_probe) if args.ingest_probe else []
        result["ingest_lag_idle"] = {"p50_ms": percentile(lag, 50), "p95_ms": percentile(lag, 95), "n": len(lag)}
        log(f"idle: server {idle.server_cores * 100:.1f} % of a core, RSS {result['rss_start_mb']:.0f} MB, "
            f"other load {idle.other_cores:.2f} cores")

        t0 = time.monotonic()
        browsers.open()
        if args.browsers:
            log(f"{args.browsers} Chromium tab(s) open in {time.monotonic() - t0:.1f}s")
        url = f"http://127.0.0.1:{demo.port}/dashboard"
        held = 0
        result["levels"] = []
        for i, level in enumerate(levels):
            t0 = time.monotonic()
            new = []
            while held < level:
                n = min(args.per_worker, level - held)
                new.append(Worker(url, n, tmp / "workers.log"))
                held += n
            for w in new:
                ready = w.wait_ready()
                if ready["errors"]:
                    log(f"worker {w.proc.pid}: {len(ready['errors'])} session(s) failed: {ready['errors'][:3]}")
            workers += new
            ramp = time.monotonic() - t0
            log(f"{held} client sessions open (ramp {ramp:.1f}s); settling {args.warmup}s")
            time.sleep(args.warmup)
            meter = Meter(demo.pid, [w.proc.pid for w in workers])
            spy = None
            if args.py_spy and i == len(levels) - 1:
                spy = subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(demo.pid), "--duration",
                     str(int(args.duration)), "--rate", "50", "--format", "raw", "--output", args.py_spy,
                     "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            browsers.reset()
            w0, a = time.time() * 1000, meter.snapshot()
            time.sleep(args.duration)
            w1, b = time.time() * 1000, meter.snapshot()
            win = Meter.between(a, b)
            rows, alive = [], 0
            for k, w in enumerate(workers):
                rep = w.send(f"report {w0} {w1}")
                rows += [(k * 1000 + r[0], r[1], r[2]) for r in rep["rows"]]
                alive += rep["alive"]
            seconds = (w1 - w0) / 1000
            clients = latency_stats(rows, seconds, args.period)
            brows = latency_stats(browsers.samples(w0, w1), seconds, args.period) if args.browsers else {}
            total = held + args.browsers
            per = (win.server_cores - idle.server_cores) / total * 100 if total else 0.0
            lv = Level(held, args.browsers, alive, round(ramp, 1), asdict(win), per, clients, brows,
                       probe_window(demo.probe, w0 / 1000, w1 / 1000) if demo.probe else {})
            result["levels"].append(asdict(lv))
            if spy is not None:
                spy.wait(args.duration + 60)
                for _ in range(15):  # py-spy may still be writing its output
                    result["py_spy"] = summarize_pyspy(Path(args.py_spy)) if Path(args.py_spy).exists() else []
                    if result["py_spy"]:
                        break
                    time.sleep(2)
            log(f"{held}+{args.browsers}: server {win.server_cores * 100:.0f} % of a core, "
                f"{per:.2f} %/session, p50/p95 {clients['p50_ms']}/{clients['p95_ms']} ms, "
                f"browser p95 {brows.get('p95_ms')} ms, other load {win.other_cores:.2f} cores")

        result["rss_peak_mb"] = memory_mb(demo.pid)[1]
        result["rss_after"] = []
        for cycle in range(args.cycles):
            if cycle:
                t0 = time.monotonic()
                workers = [Worker(url, min(args.per_worker, held - k), tmp / "workers.log")
                           for k in range(0, held, args.per_worker)]
                for w in workers:
                    w.wait_ready()
                log(f"cycle {cycle + 1}: {held} sessions reopened in {time.monotonic() - t0:.1f}s")
                time.sleep(args.warmup)
            rss_open = memory_mb(demo.pid)[0]
            for w in workers:
                w.close()
            workers = []
            if cycle == 0:
                browsers.close()
            log(f"sessions closed; following RSS for {args.settle}s")
            time.sleep(args.settle)
            result["rss_after"].append({"cycle": cycle + 1, "rss_open_mb": rss_open,
                                        "rss_after_close_mb": memory_mb(demo.pid)[0]})
        result["rss_peak_mb"] = memory_mb(demo.pid)[1]
    finally:
        stop_sampling.set()
        for w in workers:
            w.close()
        browsers.close()
        result["demo_exit_code"] = demo.stop()
        result["timeline"] = timeline
        text = demo.log.read_text(errors="replace") if demo.log.exists() else ""
        # Tornado logs each websocket closed under a pending write as a never-retrieved task: not ours.
        result["closed_websocket_errors"] = text.count("WebSocketClosedError()")
        result["server_errors"] = [line for line in text.splitlines()
                                   if " ERROR app." in line or f'File "{ROOT / "app"}' in line][:20]
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            result["tmp"] = str(tmp)
    return result


def fmt(v: Any, spec: str = ".0f") -> str:
    return "–" if v is None else format(v, spec)


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, {m['ram_gb']} GB; Python {m['python']}, panel {m.get('panel')}, "
          f"bokeh {m.get('bokeh')}, holoviews {m.get('holoviews')}; {m['chromium']}; commit {m.get('commit')}; "
          f"{m['date']}")
    idle, lag = result["idle"], result["ingest_lag_idle"]
    print(f"variant: {result['config']['variant']} ({VARIANTS[result['config']['variant']]}); "
          f"ingest: {result['config']['ingest']}")
    print(f"idle demo (no session): {idle['server_cores'] * 100:.1f} % of a core, RSS {result['rss_start_mb']:.0f} MB; "
          f"publish → live cache p50/p95 {fmt(lag['p50_ms'])}/{fmt(lag['p95_ms'])} ms (±20 ms); "
          f"other load on the machine {idle['other_cores']:.2f} cores\n")
    head = ("| sessions (+tabs) | live | ticks/s | server CPU | per session | RSS start→end | p50 | p95 | p99 | max "
            "| floor p50 | tab p50 | tab p95 | clients CPU | tabs CPU | machine busy |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for lv in result["levels"]:
        w, c, b = lv["window"], lv["clients"], lv["browser"] or {}
        print(f"| {lv['sessions']} (+{lv['browsers']}) | {lv['alive']}/{lv['sessions']} "
              f"@{c['points_per_session_s']:.1f} pt/s | {c['ticks_per_s']:.2f} | {w['server_cores'] * 100:.0f} % "
              f"| {lv['per_session_pct']:.2f} % | {w['rss_start_mb']:.0f}→{w['rss_end_mb']:.0f} MB "
              f"| {fmt(c['p50_ms'])} ms | {fmt(c['p95_ms'])} ms | {fmt(c['p99_ms'])} ms | {fmt(c['max_ms'])} ms "
              f"| {fmt(c['floor_p50_ms'])} ms | {fmt(b.get('p50_ms'))} ms | {fmt(b.get('p95_ms'))} ms "
              f"| {w['client_cores']:.2f} | {w['browser_cores']:.2f} | {w['machine_cores']:.2f} / {m['nproc']} |")
    for lv in result["levels"]:
        if lv.get("server"):
            sv = lv["server"]
            print(f"server probe at {lv['sessions']}+{lv['browsers']}: {sv['refreshes_per_s']:.1f} refreshes/s, "
                  f"{sv['refresh_ms_mean']:.1f} ms each, {sv['refresh_core_share'] * 100:.0f} % of a core in "
                  f"refreshes; event-loop lag p50 {sv['loop_lag_p50_ms']:.0f} ms, max {sv['loop_lag_max_ms']:.0f} ms; "
                  f"GC {sv['gc_core_share'] * 100:.0f} % of a core, longest pause {sv['gc_max_ms']:.0f} ms, "
                  f"{sv['gc_gen2_per_min']:.1f} full collections/min")
    print(f"\nRSS peak (VmHWM) {result['rss_peak_mb']:.0f} MB; after closing: "
          + ", ".join(f"cycle {r['cycle']}: {r['rss_open_mb']:.0f} MB open → {r['rss_after_close_mb']:.0f} MB closed"
                      for r in result["rss_after"]))
    if result.get("py_spy"):
        print("\npy-spy, last level (inclusive %, self %):")
        for f, inc, own in result["py_spy"]:
            print(f"  {inc:5.1f} {own:5.1f}  {f}")
    print(f"closed-websocket noise in the server log: {result['closed_websocket_errors']}")
    if result["server_errors"]:
        print("\nserver log errors from app/:", *result["server_errors"], sep="\n  ")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--launch"]:  # the server side of --variant: --launch VARIANT -- vigie arguments
        return launch(argv[1], argv[3:])
    if argv[:1] == ["--simulate"]:  # the simulators of --ingest external: --simulate HOST PORT PERIOD
        simulate(argv[1], int(argv[2]), float(argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", default="50", help="client sessions, or an increasing list: 10,25,50")
    p.add_argument("--duration", type=float, default=60, help="measured seconds per level")
    p.add_argument("--browsers", type=int, default=3, help="Chromium tabs (in addition to --sessions)")
    p.add_argument("--period", type=float, default=1.0, help="simulator period (s)")
    p.add_argument("--baseline", type=float, default=15, help="seconds of idle measurement")
    p.add_argument("--warmup", type=float, default=10, help="seconds between opening sessions and measuring")
    p.add_argument("--settle", type=float, default=40, help="seconds to follow RSS after closing")
    p.add_argument("--cycles", type=int, default=1, help="open/close cycles of the client sessions (memory)")
    p.add_argument("--per-worker", type=int, default=25, help="client sessions per worker process")
    p.add_argument("--py-spy", default=None, help="record the server with py-spy during the last level (raw)")
    p.add_argument("--wait-quiet", type=float, default=0, help="first wait up to this many s for an idle machine")
    p.add_argument("--variant", default="shipped", choices=list(VARIANTS),
                   help="run the server with a proposed change patched in: " + "; ".join(
                       f"{k}: {v}" for k, v in VARIANTS.items()))
    p.add_argument("--ingest", default="demo", choices=["demo", "external"],
                   help="demo: `vigie demo` (broker, simulators, PLC in the server process); external: Mosquitto, "
                        "the simulators in their own process and `vigie serve` (no PLC)")
    p.add_argument("--probe", action="store_true",
                   help="instrument the server: dashboard refreshes per second and their time, event-loop lag")
    p.add_argument("--ingest-probe", type=float, default=10, help="seconds of publish-to-cache probing when idle")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (demo log)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")
    p.add_argument("--launch", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.worker_count)
        return 0
    result = run(args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
