"""An acknowledged reading survives a crash (issue 10).

A QoS 1 PUBACK and an HTTP 2xx are sent only once the readings are durable:
written to the store, spooled to disk, or refused by the store. Real
components: the store writer with a real DuckDB store and a real InfluxDB
client facing a closed port; ``vigie serve`` killed with SIGKILL during a
flood over a real Mosquitto; the HTTP API of a real server.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from app.config import load_config
from app.hub import Hub
from app.ingest.decoders import Decoder, FieldMap
from app.ingest.mqtt import MqttSource, MqttSubscription
from app.ingest.topics import TopicTemplate
from app.model import Reading
from app.runtime import Runtime
from app.server import run_server
from app.store.embedded import EmbeddedStore
from app.store.influx import InfluxStore
from app.store.writer import StoreWriter
from tests.helpers import publish, until
from tests.servers import free_port, wait_until
from tests.test_ingest_end_to_end import influx_rows, try_health, write_config
from tests.test_server import http

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ack-token"


def readings(n: int, start: int = 0, device: str = "d") -> list[Reading]:
    return [Reading(device, "level", 1_700_000_000_000_000_000 + i, float(i)) for i in range(start, start + n)]


# -- 1. the writer's watermark ---------------------------------------------
async def test_tickets_become_durable_only_after_the_write_or_the_spool_in_order(tmp_path):
    store = EmbeddedStore(tmp_path / "data")
    await store.open()
    writer = StoreWriter(store, spool_dir=tmp_path / "spool", batch_size=100, flush_interval=60)
    seen: list[int] = []
    writer.add_durable_listener(seen.append)
    try:
        t1 = writer.accept(readings(150))
        t2 = writer.accept(readings(60, start=150))
        assert (t1, t2) == (150, 210)
        fired: list[int] = []
        held: dict[int, int] = {}

        async def waiter(ticket: int) -> None:
            await writer.wait_durable(ticket)
            fired.append(ticket)
            held[ticket] = await store.count()  # what the store holds once the ticket fired

        waiters = [asyncio.create_task(waiter(t)) for t in (t2, t1)]
        await asyncio.sleep(0)  # let both register (no write can happen: the writer task is not running)
        assert writer.durable == 0 and not fired and await store.count() == 0

        await writer.flush()  # three batches of at most 100: the watermark moves once they are all in the store
        await asyncio.gather(*waiters)
        assert fired == [t1, t2] and held == {t1: 210, t2: 210}
        assert writer.durable == 210 and seen == [210]

        # One drain at a time: a later ticket waits for its own write.
        t3 = writer.accept(readings(40, start=210))
        late = asyncio.create_task(writer.wait_durable(t3))
        await writer.wait_durable(t2)  # already durable: returns at once
        await asyncio.sleep(0)
        assert not late.done() and await store.count() == 210
        await writer.flush()
        await asyncio.wait_for(late, 5)
        assert await store.count() == 250 and seen == [210, 250]
    finally:
        await store.close()

    # The store down: the same tickets fire once the batch is on disk, not before.
    down = InfluxStore(f"http://127.0.0.1:{free_port()}", database="nowhere")  # nothing listens there
    spooled = StoreWriter(down, spool_dir=tmp_path / "spool2", batch_size=100, flush_interval=60)
    t3 = spooled.accept(readings(30))
    wait = asyncio.create_task(spooled.wait_durable(t3))
    await asyncio.sleep(0)
    assert not wait.done() and spooled.spool.readings == 0
    await spooled.flush()
    await asyncio.wait_for(wait, 5)
    assert spooled.spool.readings == 30 and spooled.durable == 30 and not spooled.available


async def test_without_a_spool_and_with_the_store_down_nothing_is_durable(tmp_path):
    down = InfluxStore(f"http://127.0.0.1:{free_port()}", database="nowhere")
    writer = StoreWriter(down, spool_dir=None, batch_size=100, flush_interval=60)
    ticket = writer.accept(readings(10))
    await writer.flush()
    assert writer.durable == 0 and writer.queue_depth == 10  # kept in memory: not durable, not acknowledged
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.wait_durable(ticket), 0.2)


# -- 2. MQTT: message ids belong to their connection -------------------------
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_dropped_connection_forgets_its_message_ids_and_the_broker_sends_them_again(tmp_path, own_mosquitto,
                                                                                            mqtt_transport, protocol):
    """Unacknowledged at a disconnect: not acknowledged on the next connection, delivered again by the broker."""
    store = EmbeddedStore(tmp_path / "data")
    await store.open()
    writer = StoreWriter(store, spool_dir=tmp_path / "spool", flush_interval=60)  # not running: flush() by hand
    sub = MqttSubscription(TopicTemplate.parse("drop/{site}/{device}"),
                           Decoder.create("json", timestamp_field="ts", timestamp_unit="ms",
                                          fields={"level": FieldMap(unit="m")}))
    source = MqttSource("t", Hub(store=writer), host=own_mosquitto.host, port=own_mosquitto.port,
                        subscriptions=[sub], client_id=f"drop-{uuid.uuid4().hex[:6]}", reconnect_max_delay_s=0.5,
                        transport=mqtt_transport, protocol=protocol)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.state == "connected", what="connected")
        now_ms = int(time.time() * 1000) - 60_000
        await publish(own_mosquitto.host, own_mosquitto.port,
                      [(f"drop/s/d{i % 3}", json.dumps({"ts": now_ms + i, "level": i})) for i in range(40)])
        await until(lambda: source.meter.total == 40, what="40 readings")
        unacked_before = source.health().get("unacked_messages")  # nothing durable yet: nothing acknowledged

        await asyncio.to_thread(own_mosquitto.restart)  # the connection drops; the broker keeps the session
        await until(lambda: source.meter.total == 80 and source.state == "connected", timeout=15,
                    what="the 40 unacknowledged messages delivered again")
        assert (unacked_before, source.health()["unacked_messages"]) == (40, 40)  # then the new connection's only

        await writer.flush()
        assert source.health()["unacked_messages"] == 0 and await store.count() == 40  # a redelivery overwrites
    finally:
        await source.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


# -- 3. HTTP: the answer comes after the store has the readings ------------
async def test_http_answers_after_the_readings_are_in_the_store(tmp_path):
    cfg = write_config(tmp_path / "config", """\
        store: {engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 30}
        http: {token_env: TEST_TOKEN}
        """)
    runtime = Runtime(load_config(cfg, env={"TEST_TOKEN": TOKEN}), base_dir=tmp_path)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_server(runtime, port=port, stop_event=stop))
    base = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: runtime.started.is_set(), what="runtime started")
        await until(lambda: asyncio.to_thread(lambda: try_health(base + "/health") is not None), what="health")
        now_ms = int(time.time() * 1000)
        body = json.dumps([{"device": "h-1", "metric": "temp", "value": i, "ts": now_ms + i} for i in range(5)])
        t0 = time.monotonic()
        status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body.encode(), TOKEN)
        elapsed = time.monotonic() - t0
        assert status == 200 and doc["accepted"] == 5, doc
        assert await runtime.store.count("h-1/temp") == 5  # in the store when the 200 arrives
        assert elapsed < 10  # the request woke the writer: it did not wait for the 30 s flush tick

        lp = "\n".join(f"weather,device=h-2 temp={i} {now_ms + i}" for i in range(3)).encode()
        status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/write?precision=ms", lp, TOKEN)
        assert status == 200 and doc["accepted"] == 3, doc
        assert await runtime.store.count("h-2/weather.temp") == 3  # line protocol keeps the measurement
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


# -- 4. kill -9 during a QoS 1 flood ----------------------------------------
class Flood:
    """A paho publisher in a thread: ``total`` QoS 1 messages with unique sequence numbers."""

    def __init__(self, host: str, port: int, prefix: str, total: int, base_ms: int) -> None:
        self.total, self.prefix, self.base_ms = total, prefix, base_ms
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub",
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def _on_publish(self, *_args) -> None:
        self.acked += 1  # the broker has the message: from now on it must end up stored

    def _run(self) -> None:
        self.client.loop_start()
        for i in range(self.total):
            payload = json.dumps({"ts": self.base_ms + i, "level": i})
            self.client.publish(f"{self.prefix}/north/dam-{i % 4}", payload, qos=1)
            if i % 2000 == 1999:
                while self.acked < i - 3000:  # keep paho's queue short
                    time.sleep(0.001)

    def start(self) -> None:
        self.thread.start()

    def wait(self, timeout: float) -> None:
        wait_until(lambda: self.acked >= self.total, timeout=timeout, interval=0.05, what="every PUBACK")
        self.client.loop_stop()
        self.client.disconnect()


def start_vigie(cfg: Path, port: int, root: Path, log: Path) -> subprocess.Popen:
    """``python -m app.cli serve`` from this checkout (the ``vigie`` script may import another one)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--config", str(cfg),
                                 "--port", str(port), "--data-root", str(root)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(150)  # a loaded 2-core machine: aiomqtt drains 30,000 messages at ~1,000/s there
def test_kill_9_during_a_qos1_flood_loses_no_acknowledged_message(tmp_path, own_mosquitto, influxdb, mqtt_transport):
    """Every message the broker had PUBACKed from the publisher ends up stored after a SIGKILL and a restart.

    With acknowledgements on arrival, the messages Vigie had acknowledged but
    not yet written (up to a flush interval of traffic) were gone.
    """
    prefix = f"k9{uuid.uuid4().hex[:6]}"
    database = f"kill9_{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "config", f"""\
        store: {{engine: influx, url: '{influxdb.url}', database: {database}, measurement: tel, spool_dir: spool}}
        mqtt:
          - name: m
            host: 127.0.0.1
            port: {own_mosquitto.port}
            client_id: {prefix}-vigie
            transport: {mqtt_transport}
            subscriptions:
              - topic: {prefix}/{{site}}/{{device}}
                fields: {{level: {{unit: m}}}}
        """)
    port = free_port()
    health = f"http://127.0.0.1:{port}/health"
    log = tmp_path / "vigie.log"

    def source() -> dict:
        h = try_health(health)
        return h[1]["sources"]["m"] if h else {}

    total, base_ms = 30_000, int(time.time() * 1000) - 3_600_000
    proc = start_vigie(cfg, port, tmp_path, log)
    try:
        wait_until(lambda: source().get("state") == "connected", 30, 0.1, "vigie connected")
        flood = Flood(own_mosquitto.host, own_mosquitto.port, prefix, total, base_ms)
        flood.start()
        wait_until(lambda: source().get("readings_total", 0) >= 4000, 30, 0.01, "vigie mid-flood")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        acked_at_kill = flood.acked
        assert acked_at_kill < total, "the flood ended before the kill: nothing was in flight"

        proc = start_vigie(cfg, port, tmp_path, log)  # same client id: the broker resumes the session
        flood.wait(timeout=70)
        stored = wait_until(lambda: (n := len(influx_rows(influxdb, database, "tel"))) >= total and n,
                            timeout=40, interval=0.5, what=f"{total} readings in InfluxDB")
    except TimeoutError:
        have = {int(r["value"]) for r in influx_rows(influxdb, database, "tel")}
        missing = sorted(set(range(total)) - have)
        pytest.fail(f"{len(missing)} acknowledged readings lost, e.g. {missing[:20]}\n"
                    f"{log.read_text(errors='replace')[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = influx_rows(influxdb, database, "tel")
    assert stored == total and sorted(int(r["value"]) for r in rows) == list(range(total))
