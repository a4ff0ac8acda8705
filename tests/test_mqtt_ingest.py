"""MQTT ingest against a real Mosquitto: templates, decoders, bad input, persistence."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from app.hub import Hub
from app.ingest.decoders import Decoder, FieldMap
from app.ingest.mqtt import MqttSource, MqttSubscription
from app.ingest.topics import TopicTemplate
from tests.helpers import Collector, publish, until


def subscriptions(prefix: str) -> list[MqttSubscription]:
    return [
        MqttSubscription(
            TopicTemplate.parse(prefix + "/site/{site}/device/{device}/telemetry"),
            Decoder.create("json", timestamp_field="ts", timestamp_unit="ms",
                           fields={"level": FieldMap(metric="water_level", unit="m")}),
        ),
        MqttSubscription(
            TopicTemplate.parse(prefix + "/site/{site}/device/{device}/value/{metric}"),
            Decoder.create("number", unit="V"),
        ),
        MqttSubscription(TopicTemplate.parse(prefix + "/servers/{device}/metrics"),
                         Decoder.create("line_protocol", metric_template="{field}")),  # the former naming
    ]


async def running(source: MqttSource):
    task = asyncio.create_task(source.run())
    await until(lambda: source.state == "connected", what="MQTT connected")
    return task


async def test_json_number_and_line_protocol_payloads(mosquitto, request, mqtt_transport):
    prefix = request.node.name
    collector = Collector()
    source = MqttSource("t", Hub(store=collector), host=mosquitto.host, port=mosquitto.port,
                        subscriptions=subscriptions(prefix), client_id=f"{prefix}-c", transport=mqtt_transport)
    task = await running(source)
    ts_ms = int(time.time() * 1000) - 5000
    await publish(mosquitto.host, mosquitto.port, [
        (f"{prefix}/site/north/device/dam-1/telemetry", json.dumps({"ts": ts_ms, "level": 12.5, "inflow": 3})),
        (f"{prefix}/site/north/device/gauge-1/value/battery", b"3.71"),
        (f"{prefix}/servers/srv-1/metrics", f"system,rack=a cpu=12.5,mem=40i {ts_ms * 10**6}"),
    ])
    await until(lambda: len(collector.readings) >= 5, what="5 readings")
    got = collector.by_key()
    level = got["dam-1/water_level"][0]
    assert (level.value, level.unit, level.time_ns, level.tags) == (12.5, "m", ts_ms * 10**6, {"site": "north"})
    assert got["dam-1/inflow"][0].value == 3.0
    battery = got["gauge-1/battery"][0]
    assert (battery.value, battery.unit, battery.tags) == (3.71, "V", {"site": "north"})
    assert abs(battery.time_ns - time.time_ns()) < 5e9
    assert got["srv-1/cpu"][0].value == 12.5 and got["srv-1/cpu"][0].tags == {"rack": "a"}
    assert got["srv-1/mem"][0].value == 40.0
    await source.stop()
    await asyncio.wait_for(task, 5)
    assert source.state == "stopped"


async def test_bad_payloads_are_dead_lettered_and_good_ones_kept(mosquitto, request, caplog, mqtt_transport):
    caplog.set_level(logging.WARNING, logger="app.ingest.deadletters")
    prefix = request.node.name
    collector = Collector()
    source = MqttSource("t", Hub(store=collector), host=mosquitto.host, port=mosquitto.port,
                        subscriptions=subscriptions(prefix), client_id=f"{prefix}-c", transport=mqtt_transport)
    task = await running(source)
    now_ms = int(time.time() * 1000)
    tele = f"{prefix}/site/s/device/d/telemetry"
    bad = [
        (tele, b"{not json"),
        (tele, b"\xff\xfe\x00garbage"),
        (tele, json.dumps({"ts": now_ms, "level": "high"})),
        (tele, b'{"ts": %d, "level": NaN}' % now_ms),
        (tele, json.dumps({"level": 1.0})),
        (tele, json.dumps({"ts": now_ms + 10**9, "level": 1.0})),
        (tele, b"x" * 70000),
        (f"{prefix}/site//device/d/telemetry", b"1"),  # empty {site}: matches the filter only
        (f"{prefix}/site/s/device/d/value/v", b"abc"),
        (f"{prefix}/servers/srv/metrics", b"bad line protocol here\nsystem cpu=1 " + str(now_ms * 10**6).encode()),
    ]
    bad += [(tele, b"{still not json")] * 30 + [(tele, b"\xff\xfe")] * 30  # a flood of two kinds
    good = [(tele, json.dumps({"ts": now_ms + i, "level": float(i)})) for i in range(20)]
    mixed = [m for pair in zip(bad, good, strict=False) for m in pair] + bad[len(good):]
    await publish(mosquitto.host, mosquitto.port, mixed)
    await until(lambda: source.dead.total >= 70 and len(collector.readings) >= 21, what="all processed")
    levels = sorted(r.value for r in collector.readings if r.metric == "water_level")
    assert levels == [float(i) for i in range(20)]
    assert [r.metric for r in collector.readings if r.device == "srv"] == ["cpu"]
    kinds = source.dead.counts
    for kind in ("invalid_json", "not_utf8", "wrong_type", "not_finite", "missing_timestamp",
                 "future_timestamp", "oversized", "no_template", "not_a_number", "bad_line"):
        assert kinds[kind] >= 1, kind
    assert kinds["invalid_json"] == 31 and kinds["not_utf8"] == 31
    # Logged once per kind, then counted quietly: a flood of bad messages cannot flood the log.
    logged = [r.getMessage() for r in caplog.records if r.name == "app.ingest.deadletters"]
    assert len(logged) == len(kinds) and sum("(invalid_json)" in m for m in logged) == 1, logged
    health = source.health()
    assert health["dead_letters"]["total"] == source.dead.total
    assert all("reason" in d for d in health["dead_letters"]["recent"])
    await source.stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.slow
async def test_qos1_messages_published_while_broker_restarts_are_stored(own_mosquitto, request, mqtt_transport):
    prefix = "p"
    collector = Collector()
    source = MqttSource("t", Hub(store=collector), host=own_mosquitto.host, port=own_mosquitto.port,
                        subscriptions=subscriptions(prefix), client_id=f"persistent-vigie-{mqtt_transport}",
                        reconnect_max_delay_s=0.5, transport=mqtt_transport)
    task = await running(source)
    tele = f"{prefix}/site/s/device/d/telemetry"
    now_ms = int(time.time() * 1000)
    await publish(own_mosquitto.host, own_mosquitto.port,
                  [(tele, json.dumps({"ts": now_ms + i, "level": float(i)})) for i in range(10)])
    await until(lambda: len(collector.readings) == 10, what="first 10")
    # Stop Vigie's source, publish while it is away, restart the broker too.
    await source.stop()
    await asyncio.wait_for(task, 5)
    await publish(own_mosquitto.host, own_mosquitto.port,
                  [(tele, json.dumps({"ts": now_ms + i, "level": float(i)})) for i in range(10, 20)])
    await asyncio.to_thread(own_mosquitto.restart)
    await publish(own_mosquitto.host, own_mosquitto.port,
                  [(tele, json.dumps({"ts": now_ms + i, "level": float(i)})) for i in range(20, 30)])
    source2 = MqttSource("t", Hub(store=collector), host=own_mosquitto.host, port=own_mosquitto.port,
                         subscriptions=subscriptions(prefix), client_id=f"persistent-vigie-{mqtt_transport}",
                         reconnect_max_delay_s=0.5, transport=mqtt_transport)
    task2 = await running(source2)
    await until(lambda: len(collector.readings) >= 30, what="30 readings")
    # Broker restarted under a connected source: it reconnects by itself.
    await asyncio.to_thread(own_mosquitto.restart)
    await publish(own_mosquitto.host, own_mosquitto.port,
                  [(tele, json.dumps({"ts": now_ms + i, "level": float(i)})) for i in range(30, 40)])
    await until(lambda: len({r.value for r in collector.readings}) >= 40, timeout=15, what="40 readings")
    assert sorted({r.value for r in collector.readings}) == [float(i) for i in range(40)]
    await source2.stop()
    await asyncio.wait_for(task2, 5)


async def test_mqtt_payloads_become_exact_points_in_influxdb(mosquitto, influxdb, request, mqtt_transport):
    from app.store.influx import InfluxStore
    from app.store.writer import StoreWriter

    prefix = "exact"
    store = InfluxStore(influxdb.url, database=influxdb.database, measurement=f"mqtt_exact_{mqtt_transport}")
    await store.open()
    writer = StoreWriter(store, batch_size=100, flush_interval=0.05)
    writer_task = asyncio.create_task(writer.run())
    source = MqttSource("plant", Hub(store=writer), host=mosquitto.host, port=mosquitto.port,
                        subscriptions=subscriptions(prefix), client_id=f"exact-c-{mqtt_transport}",
                        transport=mqtt_transport)
    task = await running(source)
    ts_ms = int(time.time() * 1000) - 60_000
    await publish(mosquitto.host, mosquitto.port, [
        (f"{prefix}/site/north/device/dam-1/telemetry", json.dumps({"ts": ts_ms, "level": 12.5, "inflow": 3})),
        (f"{prefix}/site/south/device/gauge-1/value/battery", b"3.71"),
        (f"{prefix}/servers/srv-1/metrics", f"system,rack=a cpu=12.5,mem=40i {(ts_ms + 7) * 10**6}"),
    ])
    await until(lambda: writer.written >= 5, what="5 points written")
    rows = {(r["device"], r["metric"]): r
            for r in influxdb.points(f'SELECT * FROM "mqtt_exact_{mqtt_transport}" GROUP BY *')}
    assert set(rows) == {("dam-1", "water_level"), ("dam-1", "inflow"), ("gauge-1", "battery"),
                         ("srv-1", "cpu"), ("srv-1", "mem")}
    level = rows[("dam-1", "water_level")]
    assert (level["time"], level["value"], level["unit"], level["site"], level["quality"]) == (
        ts_ms * 10**6, 12.5, "m", "north", "good")
    assert rows[("dam-1", "inflow")]["value"] == 3.0 and rows[("dam-1", "inflow")]["time"] == ts_ms * 10**6
    battery = rows[("gauge-1", "battery")]
    assert (battery["value"], battery["unit"], battery["site"]) == (3.71, "V", "south")
    cpu = rows[("srv-1", "cpu")]
    assert (cpu["time"], cpu["value"], cpu["rack"]) == ((ts_ms + 7) * 10**6, 12.5, "a")
    assert rows[("srv-1", "mem")]["value"] == 40.0
    await source.stop()
    await asyncio.wait_for(task, 5)
    await writer.stop()
    await writer_task
    await store.close()


def test_the_transport_key_is_checked_when_the_config_is_loaded(tmp_path):
    from app.config import ConfigError, load_config

    def load(mqtt: str):
        (tmp_path / "vigie.yaml").write_text(f"mqtt:\n  - {mqtt}\n")
        return load_config(tmp_path)

    sub = "subscriptions: [{topic: 'a/{device}', qos: %d}]"
    assert load("{transport: gmqtt, %s}" % (sub % 1)).config.mqtt[0].transport == "gmqtt"
    with pytest.raises(ConfigError, match=r"mqtt\[0\].subscriptions\[0\].qos: QoS 2 is not offered"):
        load("{transport: gmqtt, %s}" % (sub % 2))
    with pytest.raises(ConfigError, match="transport"):
        load("{transport: hbmqtt, %s}" % (sub % 1))
    # Left to itself, Vigie reads with gmqtt, or with aiomqtt when a subscription needs QoS 2: configs
    # written before the transport key existed keep working.
    assert load(sub % 1).config.mqtt[0].chosen_transport() == "gmqtt"
    assert load(sub % 2).config.mqtt[0].chosen_transport() == "aiomqtt"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_mqtt5_properties_on_a_publish_do_not_reach_the_payload(mosquitto, request, mqtt_transport, protocol):
    """A publisher's MQTT 5 properties (expiry, content type, user properties) are skipped, not decoded as payload."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    prefix = f"props-{mqtt_transport}-{protocol.replace('.', '')}"
    collector = Collector()
    source = MqttSource("t", Hub(store=collector), host=mosquitto.host, port=mosquitto.port,
                        subscriptions=subscriptions(prefix), client_id=f"{prefix}-c", transport=mqtt_transport,
                        protocol=protocol)
    task = await running(source)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 3600
    props.ContentType = "application/json"
    props.UserProperty = [("plant", "north" * 40)]  # long enough for a two-byte properties length
    ts_ms = int(time.time() * 1000) - 5000
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for i in range(3):
            await client.publish(f"{prefix}/site/north/device/dam-{i}/telemetry",
                                 json.dumps({"ts": ts_ms + i, "level": 10.0 + i}), qos=1, properties=props)
    await until(lambda: len(collector.readings) >= 3, what="3 readings")
    assert sorted((r.device, r.value, r.time_ns) for r in collector.readings) == [
        (f"dam-{i}", 10.0 + i, (ts_ms + i) * 10**6) for i in range(3)]
    assert source.dead.total == 0
    await source.stop()
    await asyncio.wait_for(task, 5)
