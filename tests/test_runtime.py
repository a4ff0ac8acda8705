"""The whole ingest path in one process: MQTT -> hub -> live cache + store, stop, restart."""

from __future__ import annotations

import asyncio
import json
import time

from app.config import load_config
from app.runtime import Runtime
from tests.helpers import publish, until


def config(tmp_path, port: int):
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    (d / "v.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 5}\n"
        f"mqtt:\n  - name: m\n    port: {port}\n    client_id: runtime-test\n    subscriptions:\n"
        "      - topic: rt/{site}/{device}\n        fields: {level: {unit: m}}\n"
    )
    return load_config(d, env={})


async def test_readings_reach_live_cache_and_store_and_survive_a_restart(tmp_path, mosquitto):
    loaded = config(tmp_path, mosquitto.port)
    runtime = Runtime(loaded, base_dir=tmp_path)
    await runtime.start()
    await until(lambda: runtime.sources[0].state == "connected", what="connected")
    now_ms = int(time.time() * 1000)
    await publish(mosquitto.host, mosquitto.port,
                  [(f"rt/north/dam-{i % 3}", json.dumps({"ts": now_ms + i, "level": i / 10})) for i in range(300)])
    await until(lambda: runtime.hub.published >= 300, what="300 published")
    ring = runtime.live.get("dam-0/level")
    assert ring is not None and ring.seq == 100 and ring.unit == "m" and ring.tags == {"site": "north"}
    # The flush interval is 5 s: these readings are still in the writer when Vigie stops.
    assert runtime.writer.queue_depth == 300
    await runtime.stop()

    again = Runtime(loaded, base_dir=tmp_path)
    await again.start()
    try:
        assert await again.store.count() == 300
        env = await again.store.envelope("dam-1/level", now_ms * 10**6, (now_ms + 300) * 10**6, 10)
        assert len(env) == 10 and env.min[0] == 0.1 and env.max[-1] == 29.8
        assert {v.key for v in await again.store.latest()} == {"dam-0/level", "dam-1/level", "dam-2/level"}
        series = {s.key: s for s in await again.store.series()}
        assert series["dam-2/level"].unit == "m" and series["dam-2/level"].tags == {"site": "north"}
        # Pages show the last known state at once, not "no data" until every device reports again.
        last = again.live.get("dam-2/level").latest()
        assert (last.value, last.time_ns) == (29.9, (now_ms + 299) * 10**6)
        assert (last.unit, last.tags) == ("m", {"site": "north"})
        assert again.live.keys() == ["dam-0/level", "dam-1/level", "dam-2/level"]
    finally:
        await again.stop()


async def test_a_store_that_is_down_at_start_does_not_stop_vigie_starting(tmp_path, caplog):
    from tests.servers import free_port

    d = tmp_path / "config"
    d.mkdir()
    (d / "v.yaml").write_text(f"store: {{engine: influx, url: 'http://127.0.0.1:{free_port()}', database: v, "
                              "spool_dir: spool}\n")
    runtime = Runtime(load_config(d, env={}), base_dir=tmp_path)
    await runtime.start()
    try:
        assert runtime.started.is_set() and runtime.live.keys() == []
        assert "live cache not seeded from the store" in caplog.text
    finally:
        await runtime.stop()


async def test_stop_is_prompt_and_clean(tmp_path, mosquitto):
    runtime = Runtime(config(tmp_path, mosquitto.port), base_dir=tmp_path)
    await runtime.start()
    await until(lambda: runtime.sources[0].state == "connected", what="connected")
    t0 = time.monotonic()
    await runtime.stop()
    assert time.monotonic() - t0 < 3
    assert runtime.sources[0].state == "stopped"
    assert all(t.done() for t in asyncio.all_tasks() if t.get_name().startswith(("source-", "store-")))


async def _count_is(runtime: Runtime, n: int) -> bool:
    await runtime.writer.flush()
    return await runtime.store.count() == n


async def test_stopping_mid_stream_loses_no_acknowledged_message(tmp_path, mosquitto):
    """paho acknowledges a message when it arrives: one Vigie has not decoded yet at a stop must still be stored."""
    import aiomqtt

    loaded = config(tmp_path, mosquitto.port)
    total, now_ms = 12_000, int(time.time() * 1000)

    async def stream() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, max_queued_outgoing_messages=None) as client:
            for i in range(total):
                await client.publish(f"rt/mid/dam-{i % 4}", json.dumps({"ts": now_ms + i, "level": i}), qos=1)

    publisher = None
    for round_ in range(4):  # three stops while messages stream in, then one to the end
        runtime = Runtime(loaded, base_dir=tmp_path)
        await runtime.start()
        try:
            await until(lambda r=runtime: r.sources[0].state == "connected", what="connected")
            if publisher is None:
                publisher = asyncio.create_task(stream())
            if round_ < 3:
                target = runtime.hub.published + 1500
                await until(lambda r=runtime, n=target: r.hub.published >= n, what="more readings")
            else:
                await publisher
                # The distinct points, not a sum of readings published: with acks sent once durable, a
                # message in flight at a stop is delivered again after the restart (and overwrites itself).
                await until(lambda r=runtime: _count_is(r, total), timeout=20, what="the rest")
        finally:
            await runtime.stop()
    check = Runtime(loaded, base_dir=tmp_path)
    await check.store.open()
    try:
        assert await check.store.count() == total  # every message once (a redelivery overwrites itself)
    finally:
        await check.store.close()
