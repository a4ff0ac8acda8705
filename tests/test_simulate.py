"""Demo simulators and the embedded broker: wire formats over real MQTT, and the models' dynamics.

The formats are a contract with the demo config and the decoders, so they
are checked exactly, on what a real subscriber receives from Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from app.demo.broker import EmbeddedBroker
from app.demo.simulate import BATTERY_EVERY, CITY_CENTRE, Dam, IiotServer, Simulators, Tracker, _rng
from tests.helpers import until
from tests.servers import free_port

FILTERS = ("site/+/device/+/telemetry", "site/+/device/+/value/+", "fleet/+/gps", "servers/+/metrics")
TELEMETRY = re.compile(r"^site/(?P<site>vallon-[a-z0-9-]+)/device/(?P<device>dam-\d+)/telemetry$")
LINE = re.compile(r"^system cpu=(\d{1,3}\.\d),mem=(\d{1,3}\.\d),disk=(\d{1,3}\.\d) (\d{19})$")


async def _collect(client: aiomqtt.Client, into: dict[str, list[bytes]]) -> None:
    async for message in client.messages:
        into[str(message.topic)].append(bytes(message.payload))  # type: ignore[arg-type]


async def _drain_while(client: aiomqtt.Client, into: dict[str, list[bytes]], done: Callable[[], object],
                       timeout: float) -> None:
    """Collect messages until ``done()`` or the deadline; the collector task is always awaited."""
    task = asyncio.create_task(_collect(client, into))
    try:
        await until(done, timeout=timeout, what="simulator messages")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_for(sims: Simulators, coro: Awaitable[None]) -> None:
    """Run the simulators while ``coro`` runs, then stop them and check they returned promptly."""
    task = asyncio.create_task(sims.run())
    try:
        await coro
    finally:
        await sims.stop()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - t0 < 1.0


def _is_float(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x)


async def test_simulators_publish_the_documented_formats(mosquitto):
    received: dict[str, list[bytes]] = defaultdict(list)
    sims = Simulators(mosquitto.host, mosquitto.port, period_s=0.05, seed=7)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        for f in FILTERS:
            await sub.subscribe(f, qos=1)

        def enough() -> bool:
            battery = [t for t in received if t.endswith("/value/battery")]
            return len(received) == 10 and battery and len(received[battery[0]]) >= 2 and all(
                len(v) >= 5 for t, v in received.items() if not t.endswith("/battery"))

        await _run_for(sims, _drain_while(sub, received, enough, timeout=10))

    now_ms = time.time() * 1000
    dams = {t: v for t, v in received.items() if t.endswith("/telemetry")}
    matches = [TELEMETRY.match(t) for t in dams]
    assert all(matches), sorted(dams)
    assert sorted(m["device"] for m in matches) == ["dam-1", "dam-2", "dam-3", "dam-4", "dam-5"]
    sites = {m["site"] for m in matches}
    assert len(sites) == 5 and {"vallon-nord", "vallon-sud"} <= sites
    for payloads in dams.values():
        for raw in payloads:
            doc = json.loads(raw)
            assert set(doc) == {"ts", "water_level", "inflow", "rainfall"}
            assert type(doc["ts"]) is int and abs(doc["ts"] - now_ms) < 60_000
            assert all(_is_float(doc[k]) for k in ("water_level", "inflow", "rainfall")), doc
            assert 4.0 <= doc["water_level"] <= 25.0 and doc["inflow"] >= 0 and 0 <= doc["rainfall"] <= 50

    gps = {t: v for t, v in received.items() if t.startswith("fleet/")}
    assert sorted(gps) == ["fleet/truck-1/gps", "fleet/truck-2/gps", "fleet/truck-3/gps"]
    for payloads in gps.values():
        for raw in payloads:
            doc = json.loads(raw)
            assert set(doc) == {"ts", "lat", "lon", "speed"}
            assert type(doc["ts"]) is int and abs(doc["ts"] - now_ms) < 60_000
            assert all(_is_float(doc[k]) for k in ("lat", "lon", "speed")), doc
            assert abs(doc["lat"] - CITY_CENTRE[0]) < 0.1 and abs(doc["lon"] - CITY_CENTRE[1]) < 0.1
            assert 0 <= doc["speed"] <= 130

    lines = received.pop("servers/srv-1/metrics")
    assert not [t for t in received if t.startswith("servers/")]
    for raw in lines:
        m = LINE.match(raw.decode())
        assert m, raw
        assert all(0 <= float(v) <= 100 for v in m.groups()[:3])
        assert abs(int(m[4]) / 1e6 - now_ms) < 60_000

    battery = [t for t in received if "/value/" in t]
    assert battery == ["site/vallon-nord/device/rain-gauge-1/value/battery"]
    for raw in received[battery[0]]:
        assert re.fullmatch(rb"\d\.\d\d", raw) and 3.0 <= float(raw) <= 4.3
    # One battery reading per BATTERY_EVERY periods, counted against dam-1's (the collector may stop mid-tick).
    ticks = len(received["site/vallon-nord/device/dam-1/telemetry"])
    assert ticks // BATTERY_EVERY <= len(received[battery[0]]) <= ticks // BATTERY_EVERY + 1


async def test_simulators_wait_for_the_broker_ride_out_its_restart_and_stop_promptly():
    port = free_port()  # nothing listens here yet
    sims = Simulators("127.0.0.1", port, period_s=0.05, seed=1)
    task = asyncio.create_task(sims.run())
    try:
        await until(lambda: sims.last_error is not None, what="a failed first attempt")
        assert sims.ticks == 0 and not sims.connected
        async with EmbeddedBroker(port=port):
            await until(lambda: sims.published >= 20, timeout=10, what="publishing once the broker is up")
        await until(lambda: not sims.connected, what="the simulators to notice the broker is gone")
        published = sims.published
        async with EmbeddedBroker(port=port):
            await until(lambda: sims.published >= published + 20, timeout=10, what="publishing again after a restart")
            await sims.stop()
            t0 = time.monotonic()
            await asyncio.wait_for(task, 5)
            assert time.monotonic() - t0 < 1.0
    finally:
        await sims.stop()
        await asyncio.wait_for(task, 5)
    assert not sims.connected
    # Nothing generated was dropped at the restart: published + still waiting == generated.
    generated = sims.ticks * 9 + math.ceil(sims.ticks / BATTERY_EVERY)
    assert sims.published + sims.backlog == generated


async def test_a_broker_whose_shutdown_hangs_still_drops_its_clients(monkeypatch):
    """amqtt's shutdown sometimes waits forever on a client handler (seen in CI): the fallback must not only
    free the port but drop the connections, or clients think the broker is still there."""
    import app.demo.broker as broker_module

    monkeypatch.setattr(broker_module, "SHUTDOWN_TIMEOUT_S", 0.5)
    port = free_port()
    sims = Simulators("127.0.0.1", port, period_s=0.05, seed=1)
    task = asyncio.create_task(sims.run())
    broker = EmbeddedBroker(port=port)
    await broker.start()
    try:
        await until(lambda: sims.published >= 5, timeout=10, what="publishing")

        async def hang() -> None:  # the fault: amqtt's shutdown never returns
            await asyncio.Event().wait()

        monkeypatch.setattr(broker._broker, "shutdown", hang)
        await broker.stop()
        await until(lambda: not sims.connected, timeout=3, what="the simulators to notice the broker is gone")
    finally:
        await sims.stop()
        await asyncio.wait_for(task, 5)


async def test_embedded_broker_relays_qos1_to_a_persistent_session():
    port = free_port()
    async with EmbeddedBroker(port=port) as broker:
        assert broker.running
        kw = {"identifier": "vigie-test-persistent", "clean_session": False}
        async with aiomqtt.Client("127.0.0.1", port, **kw) as sub:
            await sub.subscribe("demo/#", qos=1)
            async with aiomqtt.Client("127.0.0.1", port) as pub:
                await pub.publish("demo/a", b"online", qos=1)
            message = await asyncio.wait_for(anext(aiter(sub.messages)), 5)
            assert (str(message.topic), message.payload, message.qos) == ("demo/a", b"online", 1)
        # Published while the subscriber is away: the broker keeps them for its session.
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            for i in range(3):
                await pub.publish("demo/b", f"{i}".encode(), qos=1)
        async with aiomqtt.Client("127.0.0.1", port, **kw) as sub:
            got = []
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    got.append(message.payload)
                    if len(got) == 3:
                        break
        assert got == [b"0", b"1", b"2"]
    assert not broker.running


async def test_embedded_broker_speaks_mqtt_311_only():
    """amqtt 0.12 leaves an MQTT 5 CONNECT unanswered: a source on the embedded broker must say 3.1.1."""
    port = free_port()
    async with EmbeddedBroker(port=port):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, timeout=0.5):
                pass
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311, timeout=2):
            pass


async def test_embedded_broker_refuses_a_port_in_use():
    port = free_port()
    async with EmbeddedBroker(port=port):
        second = EmbeddedBroker(port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await second.start()
        assert not second.running


# -- models, without MQTT --------------------------------------------------


def test_dam_levels_stay_plausible_over_a_long_run():
    for i in range(5):
        dam = Dam("vallon-nord", f"dam-{i}", _rng(42, f"dam-{i}"))
        assert 8.0 <= dam.base_level <= 15.0
        levels, rains = [], []
        for _ in range(6 * 3600):
            dam.step(1.0)
            r = dam.reading()
            levels.append(r["water_level"])
            rains.append(r["rainfall"])
            assert r["inflow"] >= 0.0
            assert 0.0 <= dam.fill <= 1.0
        assert dam.floor <= min(levels) and max(levels) <= dam.top
        assert max(levels) - min(levels) < 8.0
        assert max(rains) <= 50.0
        assert any(r > 0 for r in rains), "six hours without a single shower"
        assert sum(r > 0 for r in rains) < 0.8 * len(rains), "raining nearly all the time"


def test_a_shower_raises_the_level_with_a_lag_then_it_drains():
    dam = Dam("vallon-nord", "dam-1", _rng(3, "dam-1"))
    dam.mean_dry_s = math.inf  # no random weather: only our shower
    for _ in range(600):
        dam.step(1.0)
    before = dam.level
    dam.start_rain(30.0, 300.0)
    dam.step(10.0)
    assert dam.level - before < 0.05, "runoff takes time to reach the reservoir"
    peak = before
    for _ in range(600):
        dam.step(1.0)
        peak = max(peak, dam.level)
    assert dam.rain is None
    assert peak - before > 0.3
    for _ in range(3600):
        dam.step(1.0)
    assert abs(dam.level - before) < 0.05
    assert dam.rainfall == 0.0


def test_dam_big_steps_are_stable():
    """A long period (a slow demo) integrates in substeps, without overshooting."""
    dam = Dam("vallon-nord", "dam-1", _rng(5, "dam-1"))
    for _ in range(2000):
        dam.step(60.0)
        assert dam.floor <= dam.level <= dam.top


def test_models_are_reproducible_with_a_seed():
    a, b = Simulators("h", 1, seed=11), Simulators("h", 1, seed=11)
    c = Simulators("h", 1, seed=12)
    ra = [a.tick(0) for _ in range(50)]
    assert ra == [b.tick(0) for _ in range(50)]
    assert ra != [c.tick(0) for _ in range(50)]
    # A model's stream is its own: more trucks do not change the dams.
    d = Simulators("h", 1, seed=11, trackers=7)
    assert [m[: len(a.dams)] for m in ra] == [d.tick(0)[: len(a.dams)] for _ in range(50)]


def test_battery_every_tenth_period():
    sims = Simulators("h", 1, seed=1, dams=1, trackers=0, servers=0)
    with_battery = [i for i in range(35) if any(t.endswith("/battery") for t, _ in sims.tick(0))]
    assert with_battery == [0, 10, 20, 30]


def test_trucks_move_smoothly_round_the_centre():
    truck = Tracker("truck-1", _rng(9, "truck-1"))
    cos_lat = math.cos(math.radians(CITY_CENTRE[0]))
    prev = (truck.lat, truck.lon)
    travelled = 0.0
    for _ in range(3600):
        truck.step(1.0)
        step_m = math.hypot((truck.lat - prev[0]) * 111_320, (truck.lon - prev[1]) * 111_320 * cos_lat)
        assert step_m <= 75 / 3.6 * 1.05, "faster than the top speed: a jump"
        travelled += step_m
        prev = (truck.lat, truck.lon)
        assert abs(truck.lat - CITY_CENTRE[0]) < 0.06 and abs(truck.lon - CITY_CENTRE[1]) < 0.08
        assert 0.0 <= truck.reading()["speed"] <= 80.0
    assert travelled > 5_000


def test_server_metrics_walk_and_the_disk_fills():
    srv = IiotServer("srv-1", _rng(4, "srv-1"))
    disk0 = srv.disk
    for _ in range(3600):
        srv.step(1.0)
        m = LINE.match(srv.line(1_700_000_000_000_000_000))
        assert m and all(0.0 <= float(v) <= 100.0 for v in m.groups()[:3])
    assert srv.disk > disk0
