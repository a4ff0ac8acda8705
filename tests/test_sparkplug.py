"""Sparkplug B ingest against a real Mosquitto, with edge nodes built from Eclipse Tahu's protobuf classes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiomqtt
import pytest
from tahutils.tahu import sparkplug_b as tahu
from tahutils.tahu.sparkplug_b_pb2 import Payload

from app.config import ConfigError, load_config
from app.hub import Hub
from app.ingest.sparkplug import SparkplugSource, metric_value
from app.runtime import Runtime
from tests.helpers import Collector, publish, until

T = tahu.MetricDataType
S = 10**9


def now_ms() -> int:
    return time.time_ns() // 10**6


class EdgeNode:
    """A Sparkplug edge node as a device would run one: payloads made with Tahu's helpers, seq and bdSeq kept."""

    def __init__(self, group: str, node: str, bd_seq: int = 0) -> None:
        self.group, self.node, self.bd_seq, self.seq = group, node, bd_seq, 0

    def _payload(self, metrics: list[tuple], seq: int | None) -> bytes:
        p = Payload()
        p.timestamp = now_ms()
        if seq is not None:
            p.seq = seq
        for name, alias, datatype, value, *rest in metrics:
            m = tahu.addMetric(p, name, alias, datatype, value, rest[0] if rest else None)
            if datatype == T.String:
                m.string_value = value  # Tahu's addMetric sets no String value
            if len(rest) > 1:  # an engineering unit, as Ignition and Tahu's examples declare it
                m.properties.keys.append("engUnit")
                prop = m.properties.values.add()
                prop.type, prop.string_value = T.String, rest[1]
        return p.SerializeToString()

    def _next(self, seq: int | None) -> int:
        self.seq = (self.seq + 1) % 256 if seq is None else seq
        return self.seq

    def nbirth(self, metrics: list[tuple], seq: int = 0) -> tuple[str, bytes]:
        self.seq = seq
        base = [("bdSeq", None, T.Int64, self.bd_seq), ("Node Control/Rebirth", None, T.Boolean, False)]
        return f"spBv1.0/{self.group}/NBIRTH/{self.node}", self._payload(base + metrics, seq)

    def ndeath(self, bd_seq: int | None = None) -> tuple[str, bytes]:
        bd = self.bd_seq if bd_seq is None else bd_seq
        return f"spBv1.0/{self.group}/NDEATH/{self.node}", self._payload([("bdSeq", None, T.Int64, bd)], None)

    def ndata(self, metrics: list[tuple], seq: int | None = None) -> tuple[str, bytes]:
        return f"spBv1.0/{self.group}/NDATA/{self.node}", self._payload(metrics, self._next(seq))

    def dbirth(self, device: str, metrics: list[tuple]) -> tuple[str, bytes]:
        return f"spBv1.0/{self.group}/DBIRTH/{self.node}/{device}", self._payload(metrics, self._next(None))

    def ddata(self, device: str, metrics: list[tuple], seq: int | None = None) -> tuple[str, bytes]:
        return f"spBv1.0/{self.group}/DDATA/{self.node}/{device}", self._payload(metrics, self._next(seq))

    def ddeath(self, device: str) -> tuple[str, bytes]:
        return f"spBv1.0/{self.group}/DDEATH/{self.node}/{device}", self._payload([], self._next(None))


PUMP_BIRTH = [
    ("Inputs/Temperature", 10, T.Float, 21.3, None, "°C"),
    ("Running", 11, T.Boolean, True),
    ("Count", 12, T.Int16, -5),
    ("Label", 13, T.String, "pump one"),
]


def group_of(request) -> str:
    return "".join(c for c in request.node.name if c.isalnum())[-40:]


@contextlib.asynccontextmanager
async def running(source):
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.state == "connected", what="Sparkplug source connected")
        yield source
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def node_commands(broker, group: str):
    """Collect the NCMD messages Vigie publishes to a group's edge nodes, decoded with Tahu's classes."""
    got: list[tuple[str, Payload]] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"spBv1.0/{group}/NCMD/+", qos=1)

        async def read():
            async for m in client.messages:
                got.append((m.topic.value, Payload.FromString(m.payload)))

        task = asyncio.create_task(read())
        try:
            yield got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def is_rebirth_request(payload: Payload) -> bool:
    return [(m.name, m.datatype, m.boolean_value) for m in payload.metrics] == [
        ("Node Control/Rebirth", T.Boolean, True)]


def source_for(broker, group: str, collector: Collector, **kw) -> SparkplugSource:
    return SparkplugSource("spb", Hub(store=collector), host=broker.host, port=broker.port, groups=[group],
                           client_id=f"vigie-{group}", **kw)


async def test_births_and_aliased_data_become_named_readings(mosquitto, request):
    group = group_of(request)
    collector = Collector()
    edge = EdgeNode(group, "plc-1")
    async with running(source_for(mosquitto, group, collector)) as source, \
            node_commands(mosquitto, group) as commands:
        t1 = now_ms() - 3000
        await publish(mosquitto.host, mosquitto.port, [
            edge.nbirth([("Uptime", 1, T.UInt32, 100, t1)]),
            edge.dbirth("pump-1", PUMP_BIRTH),
            edge.ddata("pump-1", [(None, 10, T.Float, 22.25, t1 + 1000), (None, 12, T.Int16, -7, t1 + 1000),
                                  (None, 13, T.String, "renamed", t1 + 1000)]),
            edge.ndata([(None, 1, T.UInt32, 101, t1 + 2000)]),
        ])
        await until(lambda: len(collector.readings) >= 7, what="7 readings")
        got = {k: [(r.value, r.time_ns) for r in v] for k, v in collector.by_key().items()}
        pump = f"{group}.plc-1.pump-1"
        assert got[f"{group}.plc-1/Uptime"] == [(100.0, t1 * 10**6), (101.0, (t1 + 2000) * 10**6)]
        assert [v for v, _t in got[f"{pump}/Inputs.Temperature"]] == [21.3, 22.25]  # Float: 21.3, not 21.2999...
        assert got[f"{pump}/Inputs.Temperature"][1][1] == (t1 + 1000) * 10**6
        assert [v for v, _t in got[f"{pump}/Count"]] == [-5.0, -7.0]
        assert [v for v, _t in got[f"{pump}/Running"]] == [1.0]
        temp = collector.by_key()[f"{pump}/Inputs.Temperature"][0]
        assert (temp.unit, temp.source, temp.quality, temp.tags) == ("°C", "spb", "good",
                                                                      {"group": group, "edge_node": "plc-1"})
        # bdSeq and Node Control are protocol, not series; the String is skipped and counted.
        assert not [k for k in got if "bdSeq" in k or "Node Control" in k]
        health = source.health()
        assert health["skipped_metrics"] == {"String": 2}
        assert (health["nodes_online"], health["devices_online"], health["rebirths_requested"]) == (1, 1, 0)
        assert health["dead_letters"]["total"] == 0

        # An alias no birth declared: a dead letter with its reason, and a rebirth request on the broker.
        await publish(mosquitto.host, mosquitto.port, [edge.ddata("pump-1", [(None, 99, T.Double, 1.0)])])
        await until(lambda: commands, what="the rebirth request")
        [(topic, payload)] = commands
        assert topic == f"spBv1.0/{group}/NCMD/plc-1" and is_rebirth_request(payload)
        assert source.dead.counts["unknown_alias"] == 1
        assert "alias 99 is not in the birth" in source.dead.recent[-1].reason
        assert source.health()["rebirths_requested"] == 1


def runtime_config(tmp_path, port: int, group: str):
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    (d / "v.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool}\n"
        f"sparkplug:\n  - {{name: spb, port: {port}, client_id: rt-{group}, groups: [{group}]}}\n"
        "alarms:\n  rules:\n"
        "    - {name: hot, series: '*/Inputs.Temperature', h: 50, severity: high}\n"
        "    - {name: silent, type: no_data, series: '*/Inputs.Temperature', timeout_s: 5, severity: high}\n")
    return load_config(d, env={})


async def test_a_dead_device_shows_bad_quality_and_its_alarms_are_suppressed_until_its_rebirth(
        tmp_path, mosquitto, request):
    group = group_of(request)
    runtime = Runtime(runtime_config(tmp_path, mosquitto.port, group), base_dir=tmp_path)
    engine = runtime.alarms
    await runtime.start()
    try:
        source = runtime.sources[0]
        await until(lambda: source.state == "connected", what="connected")
        edge = EdgeNode(group, "plc-1")
        pump, other = f"{group}.plc-1.pump-1", f"{group}.plc-1.pump-2"
        await publish(mosquitto.host, mosquitto.port, [
            edge.nbirth([]), edge.dbirth("pump-1", PUMP_BIRTH), edge.dbirth("pump-2", PUMP_BIRTH),
            edge.ddata("pump-1", [(None, 10, T.Float, 80.0)]),
        ])

        def states(device):
            return {a["rule"]: a["state"] for a in engine.active() if a["device"] == device}

        await until(lambda: states(pump) == {"hot": "unacknowledged"}, what="hot raised")
        await publish(mosquitto.host, mosquitto.port, [edge.ddeath("pump-1")])
        ring = runtime.live.get(f"{pump}/Inputs.Temperature")
        await until(lambda: ring.quality == "bad", what="the series marked bad")
        assert ring.latest().value == 80.0  # the last value, shown with bad quality
        assert runtime.live.get(f"{other}/Inputs.Temperature").quality == "good"
        assert states(pump) == {"hot": "suppressed"}
        assert engine.health()["inhibited_devices"] == [pump]
        # Silent while dead: the no-data rule would raise for both pumps; only the live one raises.
        engine.tick(time.time_ns() + 60 * S)
        assert states(pump) == {"hot": "suppressed", "silent": "suppressed"}
        assert states(other) == {"silent": "unacknowledged"}
        assert engine.unacknowledged() == 1

        # Reborn, back to normal values: released, nothing left to acknowledge for it.
        await publish(mosquitto.host, mosquitto.port, [edge.dbirth("pump-1", PUMP_BIRTH)])
        await until(lambda: engine.health()["inhibited_devices"] == [], what="released")
        assert ring.quality == "good" and ring.latest().value == 21.3
        assert states(pump) == {}, engine.active()
        assert source.health()["devices_online"] == 2
    finally:
        await runtime.stop()


async def test_an_ndeath_from_an_older_session_is_ignored_and_the_current_one_kills_the_node(mosquitto, request):
    group = group_of(request)
    collector = Collector()
    edge = EdgeNode(group, "plc-1", bd_seq=4)
    src = source_for(mosquitto, group, collector)
    changes: list[tuple[str, bool]] = []
    src.device_listeners.append(lambda _s, device, online, _why: changes.append((device, online)))
    async with running(src) as source:
        await publish(mosquitto.host, mosquitto.port, [
            edge.nbirth([("Uptime", 1, T.UInt32, 7)]), edge.dbirth("pump-1", PUMP_BIRTH),
            edge.ndeath(bd_seq=3),  # the will of the session before this one, delivered late
        ])
        await until(lambda: source.stale_deaths_ignored == 1, what="the stale NDEATH handled")
        assert source.health()["nodes_online"] == 1
        assert not [r for r in collector.readings if r.quality == "bad"]
        await publish(mosquitto.host, mosquitto.port, [edge.ndeath()])
        await until(lambda: source.health()["nodes_online"] == 0, what="the node dead")
        bad = {r.key: r.value for r in collector.readings if r.quality == "bad"}
        assert bad == {f"{group}.plc-1/Uptime": 7.0, f"{group}.plc-1.pump-1/Inputs.Temperature": 21.3,
                       f"{group}.plc-1.pump-1/Running": 1.0, f"{group}.plc-1.pump-1/Count": -5.0}
        assert changes[-2:] == [(f"{group}.plc-1", False), (f"{group}.plc-1.pump-1", False)]
        assert source.health()["devices_online"] == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_sequence_gap_asks_the_node_for_a_rebirth_and_255_wraps_to_0(mosquitto, request, protocol):
    group = group_of(request)
    collector = Collector()
    edge = EdgeNode(group, "plc-1")
    async with running(source_for(mosquitto, group, collector, protocol=protocol)) as source, \
            node_commands(mosquitto, group) as commands:
        await publish(mosquitto.host, mosquitto.port, [
            edge.nbirth([("Uptime", 1, T.UInt32, 1)], seq=254),
            edge.ndata([(None, 1, T.UInt32, 2)]), edge.ndata([(None, 1, T.UInt32, 3)]),  # 255, 0
            edge.ndata([(None, 1, T.UInt32, 4)]),  # 1
        ])
        await until(lambda: len(collector.readings) == 4, what="4 readings")
        assert source.sequence_gaps == 0 and commands == []
        await publish(mosquitto.host, mosquitto.port, [edge.ndata([(None, 1, T.UInt32, 5)], seq=5)])
        await until(lambda: commands, what="the rebirth request")
        [(topic, payload)] = commands
        assert topic == f"spBv1.0/{group}/NCMD/plc-1" and is_rebirth_request(payload)
        assert source.sequence_gaps == 1 and len(collector.readings) == 5  # the data itself is kept


async def test_data_from_a_node_born_before_vigie_started_asks_for_a_rebirth_once(mosquitto, request):
    group = group_of(request)
    collector = Collector()
    edge = EdgeNode(group, "plc-9")
    edge.seq = 40  # it has been running for a while
    async with running(source_for(mosquitto, group, collector, rebirth_interval_s=60)) as source, \
            node_commands(mosquitto, group) as commands:
        await publish(mosquitto.host, mosquitto.port, [edge.ddata("pump-1", [(None, 10, T.Float, 30.0)]),
                                                       edge.ddata("pump-1", [(None, 10, T.Float, 31.0)])])
        await until(lambda: source.dead.counts["no_birth"] == 2, what="both dead-lettered")
        await until(lambda: commands, what="the rebirth request")
        assert [t for t, p in commands if is_rebirth_request(p)] == [f"spBv1.0/{group}/NCMD/plc-9"]
        assert source.rebirths_requested == 1  # once per rebirth_interval_s, not once per message
        # The node answers the request: births, then its data is named again.
        await publish(mosquitto.host, mosquitto.port, [
            edge.nbirth([]), edge.dbirth("pump-1", PUMP_BIRTH), edge.ddata("pump-1", [(None, 10, T.Float, 32.5)])])
        await until(lambda: len(collector.readings) == 4, what="birth and data readings")
        assert [r.value for r in collector.readings if r.metric == "Inputs.Temperature"] == [21.3, 32.5]
        assert len(commands) == 1


@pytest.mark.parametrize(("datatype", "field", "raw", "value"), [
    (T.Int8, "int_value", 255, -1.0),  # Tahu's Python: + 2**8
    (T.Int8, "int_value", 2**32 - 1, -1.0),  # Tahu's Java: 32-bit two's complement
    (T.Int16, "int_value", 2**16 - 300, -300.0),
    (T.Int32, "int_value", 2**31, -(2.0**31)),
    (T.Int64, "long_value", 2**64 - 2, -2.0),
    (T.UInt32, "int_value", 2**32 - 1, 4294967295.0),
    (T.UInt64, "long_value", 2**63, 2.0**63),
    (T.Float, "float_value", 0.1, 0.1),
    (T.Double, "double_value", 0.1, 0.1),
    (T.Boolean, "boolean_value", False, 0.0),
])
def test_numeric_types_become_values(datatype, field, raw, value):
    m = Payload().metrics.add()
    m.datatype = datatype
    setattr(m, field, raw)
    assert metric_value(m, datatype) == (value, None, None)


def test_other_types_are_skipped_and_a_value_that_does_not_fit_its_type_is_a_fault():
    p = Payload()
    m = p.metrics.add()
    m.string_value = "x"
    assert metric_value(m, T.String) == (None, "String", None)
    assert metric_value(m, T.Double)[2] == "Double metric carries a string_value"
    n = p.metrics.add()
    n.is_null = True
    assert metric_value(n, T.Double) == (None, "null", None)
    assert metric_value(p.metrics.add(), T.Double)[2] == "Double metric without a value"


def test_config_section_and_its_checks(tmp_path):
    (tmp_path / "v.yaml").write_text(
        "sparkplug:\n  - name: plant\n    groups: [plant-a]\n    device_template: '{edge_node}-{device}'\n")
    [spec] = load_config(tmp_path, env={}).config.sparkplug
    source = spec.build(type("Ctx", (), {"hub": Hub(), "secret": lambda self, k: None, "cameras": None})())
    assert source.subscriptions()[0] == "spBv1.0/plant-a/NBIRTH/+" and len(source.subscriptions()) == 6
    assert source._member("plant-a", "plc", "pump").device == "plc-pump"
    (tmp_path / "v.yaml").write_text(
        "sparkplug:\n  - device_template: '{group}/{edge_node}/{device}'\n    node_template: '{site}'\n"
        "    groups: ['a/b']\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "sparkplug[0].device_template" in text and "cannot hold '/'" in text
    assert "node_template: unknown field(s) site" in text and "sparkplug[0].groups[0]" in text


def test_the_readme_example_is_a_valid_config(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("### Sparkplug B edge nodes\n\n```yaml\n", 1)[1].split("```", 1)[0]
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    (tmp_path / "v.yaml").write_text(block.replace("/etc/vigie/ca.pem", str(ca)))
    [spec] = load_config(tmp_path, env={"MQTT_USER": "u", "MQTT_PASSWORD": "p"}).config.sparkplug
    assert (spec.groups, spec.host_id, spec.port) == (["plant-a", "plant-b"], "vigie", 8883)


async def test_with_a_host_id_vigie_says_online_and_offline_in_its_retained_state(mosquitto, request):
    group = group_of(request)
    host_id = f"vigie-{group}"
    source = source_for(mosquitto, group, Collector(), host_id=host_id)

    async def state() -> dict:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"spBv1.0/STATE/{host_id}", qos=1)
            async for m in client.messages:  # retained: delivered on subscription
                return json.loads(m.payload)
        return {}

    async with running(source):
        online = await asyncio.wait_for(state(), 5)
        assert online["online"] is True and abs(online["timestamp"] - now_ms()) < 60_000
    assert (await asyncio.wait_for(state(), 5))["online"] is False


def test_what_is_not_a_sparkplug_payload_is_dead_lettered_with_its_reason():
    source = SparkplugSource("spb", Hub(), host="127.0.0.1", max_bytes=1000)
    edge = EdgeNode("g", "n")
    out: list = []
    for topic, payload in [("spBv1.0/g/NCMD/n", b""), ("spBv1.0/g/NDATA/n/extra", b""), ("other/g/NDATA/n", b""),
                           ("spBv1.0/g/NDATA/n", b"\xff\xff\xff"), ("spBv1.0/g/NDATA/n", b"\x0a" * 2000),
                           edge.nbirth([("Uptime", 1, T.UInt32, 1)]),
                           edge.ndata([("Uptim", None, T.UInt32, 2), (None, 1, T.Double, 0.5)])]:
        source.handle_message(topic, payload, time.time_ns(), out)
    assert dict(source.dead.counts) == {"not_sparkplug": 3, "invalid_protobuf": 1, "oversized": 1,
                                        "unknown_metric": 1}
    assert [(r.metric, r.value) for r in out] == [("Uptime", 0.5)]  # NBIRTH's 1 was published at the birth
    assert source._rebirths == {("g", "n"): "unknown metric 'Uptim' in spBv1.0/g/NDATA/n"}


async def test_vigie_online_state_repeats_its_will_timestamp():
    """Sparkplug 3.0: the online STATE carries the will's timestamp, or nodes take the will for stale."""
    source = SparkplugSource("spb", Hub(), host="127.0.0.1", host_id="vigie")
    client = source._client()
    will = json.loads(client._client._will_payload)
    await asyncio.sleep(0.002)  # a later clock reading must not change it
    assert json.loads(source._state_payload(True)) == {"online": True, "timestamp": will["timestamp"]}
    assert will == {"online": False, "timestamp": will["timestamp"]}


def test_made_up_node_ids_cost_neither_memory_nor_a_flood_of_rebirth_requests(monkeypatch):
    import app.ingest.sparkplug as sparkplug

    monkeypatch.setattr(sparkplug, "MAX_NODES", 50)
    source = SparkplugSource("spb", Hub(), host="127.0.0.1", groups=["g"])
    out: list = []
    for i in range(500):
        source.handle_message(f"spBv1.0/g/NDATA/junk-{i}", Payload().SerializeToString(), time.time_ns(), out)
        source._rebirths.clear()  # as if sent
    assert source.nodes == {} and len(source._unknown_rebirths) == 50
    assert source.dead.counts["no_birth"] == 500 and out == []
    for i in range(60):  # real births are followed, up to the cap
        source.handle_message(f"spBv1.0/g/NBIRTH/n{i}", EdgeNode("g", f"n{i}").nbirth([("U", 1, T.UInt32, 1)])[1],
                              time.time_ns(), out)
    assert len(source.nodes) == 50 and source.dead.counts["too_many_nodes"] == 10


def test_a_template_that_merges_devices_is_refused(tmp_path):
    (tmp_path / "s.yaml").write_text("sparkplug:\n  - device_template: '{group}.{edge_node}'\n"
                                     "    node_template: '{group}'\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "device_template: must contain {device}" in text and "node_template: must contain {edge_node}" in text
