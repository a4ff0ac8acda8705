"""Pages never starve ingest: 200 page loads at once while 1,000 readings/s arrive over MQTT.

A real ``vigie serve`` subprocess, a real Mosquitto and a real InfluxDB. A
publisher sends 1,000 readings/s (QoS 1) for the whole run; 200 clients
open a dashboard page at the same moment (plain GETs: each builds a Bokeh
session; a client answered by the "busy, retrying" page waits its
``Retry-After`` and tries again, as that page does, until a deadline);
``/health`` is polled 20 times a second meanwhile. Then: every published
reading is in InfluxDB, the MQTT source never left "connected", every
``/health`` poll was answered without a stall, the sessions expired, and
the server's RSS came back near what it was before the burst.

Speed is the benchmark's business (``bench/pageload.py`` reports /health
p99 against the 200 ms target); this test guards the failure the old code
had, a server that stopped answering for seconds to minutes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from tests.browser import VigieServer
from tests.servers import have, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (have("mosquitto") and have("influxd")), reason="needs mosquitto and influxd")]

DEVICES = 50
RATE = 1000  # readings/s
CLIENTS = 200
LOAD_S = 30.0  # how long clients keep retrying a busy page
# The targets are /health p99 under 200 ms and RSS back within 20 %; on this 2-core machine the
# measured figures sit at or just over them (bench/README.md, docs/concurrency.md: p99 60-310 ms, max up to
# 0.6 s, RSS +24-26 % after 40-50 sessions). A timed assertion at the target would fail on a busy CI host
# and prove nothing about starvation, so CI guards against the old code's failure (27 s to 60 s without
# /health, lost readings, MQTT keepalive missed) with a wide margin, and bench/pageload.py reports the
# figures against the targets.
HEALTH_STALL_S = 3.0  # no single /health answer may take this long (the old code: 27 s)
RSS_GROWTH = 1.5  # the old code: about 4x. Here +16-20 % either allocator: the live cache's windows filling
# with 30 s of ingest, not the sessions, whose own residue PYTHONMALLOC=malloc cut from 11 to 2 % (app/gc_tuning.py)
LIMITS = {"max_sessions": 200, "max_concurrent_page_builds": 1}
LAYOUT = """title: Load
widgets:
- {type: timeseries, id: levels, x: 0, y: 0, w: 8, h: 4, title: Levels, series: [pl-0/level, pl-1/level, pl-2/level]}
- {type: value, id: v0, x: 8, y: 0, w: 2, h: 2, title: Level 0, series: pl-0/level}
- {type: value, id: v1, x: 10, y: 0, w: 2, h: 2, title: Level 1, series: pl-1/level}
- {type: value, id: v2, x: 8, y: 2, w: 2, h: 2, title: Level 2, series: pl-2/level}
"""


def fetch(url: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; return status, headers and body (status 0 when the connection failed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:
        return 0, {}, b""


def rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Publisher(threading.Thread):
    """Publish ``RATE`` readings/s at QoS 1 until stopped; each device's timestamps are unique."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="page-load-pub")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, port)
        self.client.loop_start()
        self.sent = 0
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        base_ms = int(time.time() * 1000)
        while not self.halt.is_set():
            due = int((time.monotonic() - t0) * RATE)
            while self.sent < due:
                i = self.sent
                payload = json.dumps({"ts": base_ms + i // DEVICES, "level": i % 1000 / 10})
                self.infos.append(self.client.publish(f"bt/load/pl-{i % DEVICES}/telemetry", payload, qos=1))
                self.sent += 1
            self.halt.wait(0.01)

    def finish(self) -> int:
        """Stop, wait for every PUBACK, disconnect; return how many readings were published."""
        self.halt.set()
        self.join()
        for info in self.infos:
            info.wait_for_publish(30)
        assert all(info.is_published() for info in self.infos)
        self.client.loop_stop()
        self.client.disconnect()
        return self.sent


class HealthProbe(threading.Thread):
    """GET /health every 50 ms; keep each answer's latency and the MQTT source's state."""

    def __init__(self, base: str, publisher: Publisher | None = None) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.publisher = publisher
        self.latencies: list[float] = []
        self.states: list[str] = []
        self.lags: list[float] = []  # seconds of readings published but not yet ingested
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            sent = self.publisher.sent if self.publisher else 0
            t = time.perf_counter()
            status, _, body = fetch(self.base + "/health", timeout=60)
            self.latencies.append(time.perf_counter() - t)
            doc = json.loads(body) if body else None
            self.states.append(doc["sources"]["m"]["state"] if doc else f"http {status}")
            if doc and self.publisher:
                self.lags.append(max(0, sent - doc["sources"]["m"]["readings_total"]) / RATE)
            self.halt.wait(0.05)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def open_page(host: str, port: int, path: str, deadline: float) -> tuple[int, int]:
    """Open a page as the "busy" page would: retry after Retry-After; return (status, busy answers)."""
    busy = 0
    while True:
        status, headers, body = await aget(host, port, path)
        if status != 503:
            return status, busy
        busy += 1
        assert b'http-equiv="refresh"' in body and b"<script" not in body and b"src=" not in body  # nothing external
        wait = float(headers["retry-after"])
        if time.monotonic() + wait > deadline:
            return status, busy
        await asyncio.sleep(wait)  # a client honouring Retry-After, not a test waiting for a condition


async def aget(host: str, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.0 GET (one event loop holds 200 of them; threads would load the machine more)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, {}, b""
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 90)
    except (OSError, TimeoutError):
        return 0, {}, b""
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]) if lines[0] else 0, headers, body


def page_clients(port: int, path: str, clients: int, load_s: float, out: multiprocessing.Queue) -> None:
    """In a process of its own (so the probe's timings are not the clients'): open ``clients`` pages at once."""
    async def main() -> list[tuple[int, int]]:
        deadline = time.monotonic() + load_s
        return await asyncio.gather(*(open_page("127.0.0.1", port, path, deadline) for _ in range(clients)))

    out.put(asyncio.run(main()))


def health(base: str) -> dict:
    return json.loads(fetch(base + "/health")[2])


def test_200_page_loads_never_starve_ingest(tmp_path, own_mosquitto, own_influxdb):
    store = (f"{{engine: influx, url: '{own_influxdb.url}', database: {own_influxdb.database}, "
             "measurement: telemetry, flush_interval_s: 0.2}")
    server = VigieServer(tmp_path / "vigie", own_mosquitto.port, layouts={"load": LAYOUT},
                         idle_session_s=3, store=store,
                         server_options=LIMITS)
    server.start()
    publisher = probe = None
    try:
        url = server.base + "/dashboard?name=load"
        # A few pages first: the first builds import Bokeh's and HoloViews' plotting modules and fill
        # one-off caches (templates, models), once per process; the baseline is taken after the gate's
        # first memory release, as the end of the test is.
        for _ in range(5):
            assert fetch(url)[0] == 200
        wait_until(lambda: health(server.base).get("pages", {"sessions": 0})["sessions"] == 0, timeout=20,
                   interval=0.2, what="the warm-up sessions expired")
        wait_until(lambda: health(server.base)["pages"]["releases_total"] >= 1, timeout=30, interval=0.2,
                   what="the memory of the warm-up sessions released")
        rss_start = rss_mb(server.proc.pid)

        publisher = Publisher(own_mosquitto.host, own_mosquitto.port)
        publisher.start()
        probe = HealthProbe(server.base, publisher)
        probe.start()
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        clients = ctx.Process(target=page_clients, args=(server.port, "/dashboard?name=load", CLIENTS, LOAD_S, out))
        clients.start()
        results = out.get(timeout=LOAD_S + 120)
        clients.join(10)
        probe.halt.set()
        probe.join()
        published = publisher.finish()
        publisher = None

        statuses = [s for s, _ in results]
        opened = statuses.count(200)
        busy_answers = sum(b for _, b in results)
        print(f"\npage loads: {opened} opened, {statuses.count(503)} still busy at the deadline, "
              f"{busy_answers} busy answers; /health p99 {1000 * probe.p99():.0f} ms, "
              f"max {1000 * max(probe.latencies):.0f} ms over {len(probe.latencies)}; published {published}")
        # Ingest was never starved: no reconnect, every reading stored, /health answered promptly.
        assert set(probe.states) == {"connected"}, sorted(set(probe.states))
        log = server.log.read_text()
        assert log.count("mqtt m: ") == 1, [line for line in log.splitlines() if "mqtt m: " in line]

        def stored() -> int:
            rows = own_influxdb.points('SELECT count("value") FROM "telemetry"')
            return sum(int(r.get("count") or 0) for r in rows)

        wait_until(lambda: stored() >= published, timeout=30, interval=0.2,
                   what="every published reading in InfluxDB")
        assert stored() == published
        assert max(probe.latencies) < HEALTH_STALL_S, f"/health stalled {max(probe.latencies):.3f} s"
        # Pages: sessions were built, the rest got the busy page, never an error or a stall.
        assert set(statuses) <= {200, 503} and opened >= 20
        pages = health(server.base)["pages"]
        assert pages["built_total"] == opened + 5 and pages["busy_total"] == busy_answers
        # The sessions expire (no browser holds them) and their memory goes back.
        wait_until(lambda: health(server.base)["pages"]["sessions"] == 0, timeout=30, interval=0.2,
                   what="sessions expired")
        # The gate releases memory once no page was requested for a while (app/pagegate.py RELEASE_QUIET_S).
        try:
            wait_until(lambda: rss_mb(server.proc.pid) <= RSS_GROWTH * rss_start, timeout=30, interval=0.2,
                       what=f"RSS back within {RSS_GROWTH - 1:.0%} of {rss_start:.0f} MB")
        except TimeoutError:
            raise AssertionError(f"RSS {rss_mb(server.proc.pid):.0f} MB, start {rss_start:.0f} MB; "
                                 f"pages {health(server.base)['pages']}") from None
        print(f"RSS {rss_start:.0f} MB before the burst, {rss_mb(server.proc.pid):.0f} MB after")
        assert health(server.base)["pages"]["discarded_total"] == opened + 5
    finally:
        if probe is not None:
            probe.halt.set()
        if publisher is not None:
            publisher.halt.set()
        server.stop()
    assert server.proc.returncode == 0, server.log.read_text()[-3000:]


def test_serve_says_when_the_allocator_keeps_freed_memory(monkeypatch):
    """Without PYTHONMALLOC=malloc a burst's memory stays with the process: `vigie serve` says how to fix it."""
    from app.gc_tuning import allocator_advice

    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    assert "PYTHONMALLOC=malloc" in allocator_advice()
    monkeypatch.setenv("PYTHONMALLOC", "malloc")
    assert allocator_advice() is None
