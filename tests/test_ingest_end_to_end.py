"""End to end with real servers: from a broker or a PLC through the hub into a real store, and health over HTTP.

These tests check what a user would check: the points in InfluxDB or the
embedded store, the ``/health`` document over HTTP, the exit code of a real
``vigie serve`` process. Every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from app.config import load_config
from app.hub import Hub
from app.ingest.decoders import Decoder, FieldMap
from app.ingest.mqtt import MqttSource, MqttSubscription
from app.ingest.topics import TopicTemplate
from app.runtime import Runtime
from app.server import run_server
from tests.helpers import Collector, publish, until
from tests.servers import InfluxDB, free_port, port_open, wait_until

VIGIE = Path(sys.executable).parent / "vigie"


def get_json(url: str) -> tuple[int, dict]:
    """GET a JSON document; return (status, body) for 2xx and 5xx alike."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def try_health(url: str) -> tuple[int, dict] | None:
    """Return the health answer, or None while nothing listens yet."""
    try:
        return get_json(url)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vigie.yaml").write_text(textwrap.dedent(text))
    return directory


def influx_rows(server: InfluxDB, database: str, measurement: str) -> list[dict]:
    """Every point of a measurement in a database, tags merged into the row."""
    out = []
    doc = server.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=database)
    for result in doc.get("results", []):
        for series in result.get("series", []) or []:
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                row.update({k: v for k, v in (series.get("tags") or {}).items() if v})
                out.append(row)
    return out


def readings(prefix: str, now_ms: int, indices: range, devices: int = 3) -> list[tuple[str, str]]:
    """JSON readings numbered by ``indices``: value i at ``now_ms + i`` on device ``dam-(i % devices)``."""
    return [(f"{prefix}/north/dam-{i % devices}", json.dumps({"ts": now_ms + i, "level": i / 4}))
            for i in indices]


def start_vigie(cfg: Path, port: int, root: Path) -> subprocess.Popen:
    """Start ``vigie serve`` as a user would, its output in ``root/vigie.log``."""
    env = {k: v for k, v in os.environ.items() if k != "VIGIE_INGEST_TOKEN"}
    with (root / "vigie.log").open("wb") as log:
        return subprocess.Popen([str(VIGIE), "serve", "--config", str(cfg), "--port", str(port),
                                 "--data-root", str(root)], stdout=log, stderr=subprocess.STDOUT, env=env)


# -- 1. vigie serve, SIGTERM ---------------------------------------------
@pytest.mark.timeout(60)
async def test_sigterm_flushes_the_writer_into_influxdb_and_exits_0(tmp_path, mosquitto, influxdb):
    """SIGTERM must stop ingest, flush what the writer holds and exit 0: no reading is lost at a deploy."""
    database = f"sigterm_{uuid.uuid4().hex[:8]}"
    prefix = f"sig{uuid.uuid4().hex[:6]}"
    # A 60 s flush interval: every reading is still in the writer when SIGTERM arrives.
    cfg = write_config(tmp_path / "config", f"""\
        store: {{engine: influx, url: '{influxdb.url}', database: {database}, measurement: tel,
                 spool_dir: spool, flush_interval_s: 60}}
        mqtt:
          - name: m
            host: 127.0.0.1
            port: {mosquitto.port}
            client_id: {prefix}-vigie
            subscriptions:
              - topic: {prefix}/{{site}}/{{device}}
                fields: {{level: {{unit: m}}}}
        """)
    port = free_port()
    proc = await asyncio.to_thread(start_vigie, cfg, port, tmp_path)
    health = f"http://127.0.0.1:{port}/health"
    try:
        doc = await asyncio.to_thread(
            wait_until, lambda: (h := try_health(health)) and h[1]["sources"]["m"]["state"] == "connected" and h,
            30, 0.1, "vigie serve connected to the broker")
        assert doc[0] == 200
        n, now_ms = 250, int(time.time() * 1000) - 60_000
        await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(n)))
        doc = await asyncio.to_thread(
            wait_until, lambda: (h := try_health(health)) and h[1]["sources"]["m"]["readings_total"] == n and h,
            10, 0.05, f"{n} readings in vigie")
        assert doc[1]["store"]["queue_depth"] == n  # nothing written yet: the flush is SIGTERM's job
        assert influx_rows(influxdb, database, "tel") == []

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    output = (tmp_path / "vigie.log").read_text(errors="replace")
    assert code == 0, output[-3000:]
    rows = influx_rows(influxdb, database, "tel")
    assert len(rows) == n, output[-3000:]
    assert sorted((r["time"], r["device"], r["metric"], r["value"], r["unit"], r["site"], r["quality"])
                  for r in rows) == [((now_ms + i) * 10**6, f"dam-{i % 3}", "level", i / 4, "m", "north", "good")
                                     for i in range(n)]
    assert "Traceback" not in output, output[-3000:]


# -- 2. broker restart, QoS 1, into the embedded store ----------------------
def embedded_config(tmp_path: Path, port: int, client_id: str, prefix: str, extra: str = "") -> Path:
    return write_config(tmp_path / "config", f"""\
        store: {{engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.05}}
        mqtt:
          - name: m
            host: 127.0.0.1
            port: {port}
            client_id: {client_id}
            subscriptions:
              - topic: {prefix}/{{site}}/{{device}}
                fields: {{level: {{unit: m}}}}
        {extra}""")


@asynccontextmanager
async def running(loaded, base: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime(loaded, base_dir=base)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _count_is(runtime: Runtime, n: int) -> bool:
    return await runtime.store.count() == n


async def stored_points(runtime: Runtime, keys: list[str], start_ns: int, end_ns: int) -> list[tuple]:
    out = []
    for key in keys:
        out += [(key, t, v, q) for t, v, q in await runtime.store.raw(key, start_ns, end_ns)]
    return sorted(out, key=lambda p: p[1])


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_qos1_messages_published_while_vigie_and_the_broker_are_down_reach_the_store(tmp_path, own_mosquitto):
    """A persistent QoS 1 session must bring what was published during an outage into the store, once each."""
    broker = own_mosquitto
    loaded = load_config(embedded_config(tmp_path, broker.port, "e2e-persistent", "rs"), env={})
    now_ms = int(time.time() * 1000) - 60_000
    keys = [f"dam-{i}/level" for i in range(3)]

    async with running(loaded, tmp_path) as rt:
        await until(lambda: rt.sources[0].state == "connected", what="connected")
        await publish(broker.host, broker.port, readings("rs", now_ms, range(20)))
        await until(lambda: rt.writer.written == 20, what="20 stored")
    # Vigie is away: published to its session, then the broker restarts, then more.
    await publish(broker.host, broker.port, readings("rs", now_ms, range(20, 40)))
    await asyncio.to_thread(broker.restart)
    await publish(broker.host, broker.port, readings("rs", now_ms, range(40, 60)))

    async with running(loaded, tmp_path) as rt:
        await until(lambda: rt.sources[0].state == "connected", what="connected again")
        await until(lambda: rt.writer.written >= 40, timeout=10, what="the 40 queued readings stored")
        # Now the broker restarts under a connected Vigie, which reconnects on its own.
        await asyncio.to_thread(broker.restart)
        await until(lambda: rt.sources[0].state == "connected" and rt.sources[0].health()["last_error"],
                    timeout=15, what="reconnected after the broker restart")
        await publish(broker.host, broker.port, readings("rs", now_ms, range(60, 80)))
        # Not ``written``: the restarted broker may deliver again what Vigie stored but had not yet
        # acknowledged when the broker last saved its state (acks wait for durability); they overwrite.
        await until(lambda: _count_is(rt, 80), timeout=15, what="readings after the restart")
        await rt.writer.flush()
        assert await rt.store.count() == 80
        points = await stored_points(rt, keys, now_ms * 10**6, (now_ms + 100) * 10**6)
        assert points == [(f"dam-{i % 3}/level", (now_ms + i) * 10**6, i / 4, "good") for i in range(80)]


# -- 5. MQTT 5 shared subscription -------------------------------------------
async def test_a_shared_subscription_splits_the_stream_with_nothing_lost_or_doubled(mosquitto, mqtt_transport):
    """Scale-out: two ingest processes in one $share group must each get part of the stream, together all of it."""
    prefix = f"sh{uuid.uuid4().hex[:6]}"
    group = f"g{uuid.uuid4().hex[:6]}"

    def source(i: int, collector: Collector) -> MqttSource:
        sub = MqttSubscription(TopicTemplate.parse(prefix + "/{site}/{device}"),
                               Decoder.create("json", timestamp_field="ts", timestamp_unit="ms",
                                              fields={"level": FieldMap(unit="m")}))
        return MqttSource(f"s{i}", Hub(store=collector), host=mosquitto.host, port=mosquitto.port,
                          subscriptions=[sub], client_id=f"{prefix}-{i}", shared_group=group, transport=mqtt_transport)

    collectors = [Collector(), Collector()]
    sources = [source(i, c) for i, c in enumerate(collectors)]
    tasks = [asyncio.create_task(s.run()) for s in sources]
    try:
        await until(lambda: all(s.state == "connected" for s in sources), what="both connected")
        assert sources[0].health()["subscriptions"] == [f"$share/{group}/{prefix}/+/+"]
        n, now_ms = 2000, int(time.time() * 1000) - 60_000
        await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(n), devices=5))
        await until(lambda: sum(len(c.readings) for c in collectors) >= n, timeout=15, what=f"{n} readings")
        got = [(r.key, r.time_ns, r.value) for c in collectors for r in c.readings]
        assert sorted(got) == sorted((f"dam-{i % 5}/level", (now_ms + i) * 10**6, i / 4) for i in range(n))
        assert all(len(c.readings) > n // 10 for c in collectors), [len(c.readings) for c in collectors]
    finally:
        for s in sources:
            await s.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


# -- 3. OPC-UA into the store, with quality and source timestamps ---------------
def opcua_config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "config", f"""\
        store: {{engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.05}}
        opcua:
          - name: plc
            url: {url}
            sampling_interval_ms: 50
            publishing_interval_ms: 100
            nodes:
              - {{browse_path: "0:Objects/2:PumpStation/2:WetWellLevel", device: ps-1, metric: level, unit: m,
                  tags: {{site: nord}}}}
              - {{node_id: "ns=2;s=PumpStation.InflowRate", device: ps-1, metric: inflow, unit: m³/h}}
        """)


def ns(dt) -> int:
    from datetime import UTC, datetime, timedelta

    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def latest_ns(rt: Runtime, key: str) -> int | None:
    """Return the time of the live cache's latest reading of a series."""
    ring = rt.live.get(key)
    latest = ring.latest() if ring is not None else None
    return latest.time_ns if latest is not None else None


async def test_opcua_values_reach_the_store_with_quality_and_source_timestamps(tmp_path):
    """StatusCode -> quality and SourceTimestamp -> time must survive the whole path into the store."""
    from datetime import UTC, datetime, timedelta

    from app.demo.plc_sim import PumpStationServer

    plc = PumpStationServer(port=free_port(), period_s=0.2, seed=3)
    await plc.start()
    try:
        async with running(load_config(opcua_config(tmp_path, plc.endpoint), env={}), tmp_path) as rt:
            await until(lambda: rt.sources[0].state == "connected", what="OPC-UA connected")
            base = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=10)
            steps = [(3.217, None), (3.5, "BadSensorFailure"), (3.25, "UncertainLastUsableValue"), (3.0, None)]
            for k, (value, status) in enumerate(steps):
                await plc.set_value("WetWellLevel", value, status=status, source_time=base + timedelta(seconds=k))
                # One change per publish, so none is merged away by the server's sampling.
                await until(lambda k=k: latest_ns(rt, "ps-1/level") == ns(base + timedelta(seconds=k)),
                            what=f"step {k} in the live cache")
            await plc.set_value("InflowRate", 151.5, source_time=base)

            async def points():
                await rt.writer.flush()
                got = await rt.store.raw("ps-1/level", ns(base), ns(base + timedelta(seconds=10)))
                return got if len(got) == 4 else None

            got = await until(points, what="4 level points in the store")
            # A Bad DataValue has no value: the node's last one is stored, with quality bad and the new time.
            assert got == [(ns(base), 3.217, "good"), (ns(base) + 10**9, 3.217, "bad"),
                           (ns(base) + 2 * 10**9, 3.25, "uncertain"), (ns(base) + 3 * 10**9, 3.0, "good")]
            inflow = await until(lambda: rt.store.raw("ps-1/inflow", ns(base), ns(base) + 1), what="inflow stored")
            assert inflow == [(ns(base), 151.5, "good")]
            series = {s.key: s for s in await rt.store.series()}
            assert (series["ps-1/level"].unit, series["ps-1/level"].tags) == ("m", {"site": "nord"})
            assert series["ps-1/inflow"].unit == "m³/h"
            assert rt.health()["sources"]["plc"]["dead_letters"]["total"] == 0
    finally:
        await plc.stop()


PLC_SCRIPT = """
import asyncio, sys
from app.demo.plc_sim import PumpStationServer

async def main():
    await PumpStationServer(port=int(sys.argv[1]), period_s=0.1, seed=1).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_plc(port: int, log: Path) -> subprocess.Popen:
    """The simulated PLC in a process of its own, so it can be killed without a goodbye."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", PLC_SCRIPT, str(port)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent)
    wait_until(lambda: port_open(port) or proc.poll() is not None, 20, 0.05, "the PLC listening")
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_opcua_data_resumes_in_the_store_after_the_plc_is_killed_and_restarted(tmp_path):
    """A PLC that dies (SIGKILL, no clean close) and comes back must be re-subscribed without restarting Vigie."""
    port = free_port()
    log = tmp_path / "plc.log"
    plc = await asyncio.to_thread(start_plc, port, log)
    try:
        url = f"opc.tcp://127.0.0.1:{port}/vigie/pumpstation/"
        async with running(load_config(opcua_config(tmp_path, url), env={}), tmp_path) as rt:
            source = rt.sources[0]
            await until(lambda: source.state == "connected", what="OPC-UA connected")
            await until(lambda: rt.store.count("ps-1/inflow"), what="first points stored")

            plc.kill()
            plc.wait(5)
            await until(lambda: source.state == "disconnected", timeout=10, what="the loss noticed")
            assert source.health()["last_error"]
            down_ns = time.time_ns()
            doc = rt.health()
            assert doc["status"] == "degraded" and doc["sources"]["plc"]["subscribed_nodes"] == 0

            plc = await asyncio.to_thread(start_plc, port, log)  # same port, a fresh server
            await until(lambda: source.state == "connected", timeout=15, what="re-subscribed")
            assert source.health()["connects"] == 2 and source.health()["subscribed_nodes"] == 2

            async def fresh():
                await rt.writer.flush()
                return await rt.store.raw("ps-1/inflow", down_ns, time.time_ns() + 10**9)

            got = await until(fresh, timeout=10, what="new points after the restart")
            assert all(q == "good" for _, _, q in got)
            assert latest_ns(rt, "ps-1/inflow") > down_ns
    finally:
        plc.kill()
        plc.wait(5)


# -- 4. health over HTTP -------------------------------------------------------
@asynccontextmanager
async def serving(loaded, base: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """Run the real web server and runtime on this loop; stop them as SIGTERM would."""
    runtime = Runtime(loaded, base_dir=base)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_server(runtime, port=port, stop_event=stop))
    url = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: asyncio.to_thread(try_health, url + "/health"), timeout=20, what="/health answering")
        yield runtime, url
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def health_when(url: str, predicate, timeout: float = 10, what: str = "health") -> tuple[int, dict]:
    """Poll ``/health`` over HTTP until ``predicate(status, doc)`` holds; return the answer."""
    async def check():
        got = await asyncio.to_thread(try_health, url + "/health")
        return got if got and predicate(*got) else None

    return await until(check, timeout=timeout, what=what)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_health_over_http_shows_rate_dead_letters_and_a_broker_outage(tmp_path, own_mosquitto):
    """Probes read /health: it must say what flows, what was rejected and why, and that a broker is down."""
    broker = own_mosquitto
    loaded = load_config(embedded_config(tmp_path, broker.port, "e2e-health", "hl"), env={})
    async with serving(loaded, tmp_path) as (rt, url):
        status, doc = await health_when(url, lambda s, d: d["sources"]["m"]["state"] == "connected",
                                        what="connected")
        assert status == 200 and doc["status"] == "ok"
        now_ms = int(time.time() * 1000)
        good = readings("hl", now_ms, range(200))
        bad = [("hl/north/dam-0", b"{not json"), ("hl/north/dam-0", b"\xff\xfe garbage"),
               ("hl/north/dam-1", json.dumps({"ts": now_ms, "level": "high"})),
               ("hl/north/dam-1", json.dumps({"level": 1.0})),
               ("hl/north/dam-2", json.dumps({"ts": now_ms + 10**9, "level": 1.0}))]
        await publish(broker.host, broker.port, good[:100] + bad + good[100:])
        status, doc = await health_when(url, lambda s, d: d["sources"]["m"]["readings_total"] == 200
                                        and d["sources"]["m"]["dead_letters"]["total"] == 5, what="all counted")
        m = doc["sources"]["m"]
        assert status == 200 and m["state"] == "connected" and m["readings_per_s"] > 0
        assert m["dead_letters"]["by_kind"] == {"invalid_json": 1, "not_utf8": 1, "wrong_type": 1,
                                                "missing_timestamp": 1, "future_timestamp": 1}
        reasons = {d["kind"]: d for d in m["dead_letters"]["recent"]}
        assert "'level'" in reasons["wrong_type"]["reason"] and reasons["wrong_type"]["where"] == "hl/north/dam-1"
        assert "future" in reasons["future_timestamp"]["reason"] and "garbage" in reasons["not_utf8"]["preview"]
        assert doc["hub"]["published_total"] == 200
        await until(lambda: rt.writer.written == 200, what="stored")
        assert await rt.store.count() == 200  # the bad ones did not take the good ones with them

        await asyncio.to_thread(broker.stop)
        status, doc = await health_when(url, lambda s, d: s == 503 and d["sources"]["m"]["last_error"],
                                        what="503 with the broker down")
        assert doc["status"] == "degraded" and doc["sources"]["m"]["state"] == "disconnected"

        await asyncio.to_thread(broker.start)
        status, doc = await health_when(url, lambda s, d: s == 200, timeout=15, what="200 after the broker is back")
        assert doc["sources"]["m"]["state"] == "connected" and doc["status"] == "ok"


# -- 6. the hub feeds the live view whatever the store does ----------------------
def influx_config(tmp_path: Path, server: InfluxDB, database: str, broker_port: int, prefix: str) -> Path:
    return write_config(tmp_path / "config", f"""\
        store: {{engine: influx, url: '{server.url}', database: {database}, measurement: tel,
                 spool_dir: spool, flush_interval_s: 0.05}}
        mqtt:
          - name: m
            host: 127.0.0.1
            port: {broker_port}
            client_id: {prefix}-vigie
            subscriptions:
              - topic: {prefix}/{{site}}/{{device}}
                fields: {{level: {{unit: m}}}}
        """)


def live_seq(rt: Runtime, devices: int = 3) -> int:
    """Return how many readings the live cache took for dam-0..dam-(devices-1)."""
    return sum(ring.seq for i in range(devices) if (ring := rt.live.get(f"dam-{i}/level")) is not None)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_with_influxdb_down_live_view_is_fed_and_the_spool_replays_once(tmp_path, mosquitto, own_influxdb):
    """A dead database must not slow the live view, and what it missed is spooled and written once when it returns."""
    database, prefix = f"down_{uuid.uuid4().hex[:6]}", f"dn{uuid.uuid4().hex[:6]}"
    own_influxdb.stop()  # down from the very start: Vigie must start, and create the database later
    loaded = load_config(influx_config(tmp_path, own_influxdb, database, mosquitto.port, prefix), env={})
    async with running(loaded, tmp_path) as rt:
        await until(lambda: rt.sources[0].state == "connected", what="connected")
        n, now_ms = 300, int(time.time() * 1000) - 60_000
        t0 = time.monotonic()
        await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(n)))
        await until(lambda: live_seq(rt) == n, timeout=2, what="every reading in the live cache")
        assert time.monotonic() - t0 < 2
        await until(lambda: rt.writer.health()["spool_readings"] == n, what="every reading spooled")
        store = rt.health()["store"]
        assert store["available"] is False and store["written_total"] == 0 and store["last_error"]

        await asyncio.to_thread(own_influxdb.start)  # same port and data directory
        await until(lambda: rt.writer.health()["spool_readings"] == 0 and rt.writer.available, timeout=15,
                    what="the spool replayed")
        rows = influx_rows(own_influxdb, database, "tel")
        assert sorted((r["time"], r["device"], r["value"]) for r in rows) == [
            ((now_ms + i) * 10**6, f"dam-{i % 3}", i / 4) for i in range(n)]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_hung_influxdb_write_does_not_delay_the_live_view(tmp_path, mosquitto, own_influxdb):
    """The hub's order (live cache before the writer's queue) matters when a write hangs, not only when it fails."""
    database, prefix = f"hung_{uuid.uuid4().hex[:6]}", f"hg{uuid.uuid4().hex[:6]}"
    loaded = load_config(influx_config(tmp_path, own_influxdb, database, mosquitto.port, prefix), env={})
    now_ms = int(time.time() * 1000) - 60_000
    async with running(loaded, tmp_path) as rt:
        await until(lambda: rt.sources[0].state == "connected", what="connected")
        await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(30)))
        await until(lambda: rt.writer.written == 30, what="first readings written")
        own_influxdb.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(30, 60)))
            # Readings 30-60 arrived and (some of) them were taken from the queue by a write that now hangs.
            # Not always all of them: with acks delayed until durable, they may straddle a flush tick.
            await until(lambda: rt.hub.published >= 60 and rt.writer.queue_depth < 30, what="a write under way")
            await publish(mosquitto.host, mosquitto.port, readings(prefix, now_ms, range(60, 300)))
            t0 = time.monotonic()
            await until(lambda: live_seq(rt) == 300, timeout=2, what="the live cache fed during the hung write")
            assert time.monotonic() - t0 < 1 and rt.writer.written == 30
        finally:
            own_influxdb.proc.send_signal(signal.SIGCONT)
        await until(lambda: rt.writer.written >= 300 and not rt.writer.health()["spool_readings"], timeout=20,
                    what="everything written after the database wakes")
    rows = influx_rows(own_influxdb, database, "tel")
    assert sorted((r["time"], r["value"]) for r in rows) == [((now_ms + i) * 10**6, i / 4) for i in range(300)]


async def test_the_first_health_read_after_a_burst_shows_its_rate(mosquitto):
    """A probe that reads health once (or rarely) must see the rate of readings that just flowed, not 0."""
    prefix = f"rt{uuid.uuid4().hex[:6]}"
    collector = Collector()
    sub = MqttSubscription(TopicTemplate.parse(prefix + "/{site}/{device}"),
                           Decoder.create("json", fields={"level": FieldMap(unit="m")}))
    source = MqttSource("r", Hub(store=collector), host=mosquitto.host, port=mosquitto.port, subscriptions=[sub],
                        client_id=f"{prefix}-c")
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.state == "connected", what="connected")
        await publish(mosquitto.host, mosquitto.port, readings(prefix, int(time.time() * 1000), range(500)))
        await until(lambda: len(collector.readings) == 500, what="500 readings")
        health = source.health()  # the first read, a second after 500 readings arrived
        assert health["readings_total"] == 500
        assert 500 / 5 <= health["readings_per_s"] <= 500  # 500 readings within the last 5 s window
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)
