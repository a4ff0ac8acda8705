"""Sparkplug B ingest: edge nodes and devices over MQTT, Eclipse Tahu protobuf payloads (``spBv1.0``).

Vigie is a Sparkplug *host application*: it subscribes to
``spBv1.0/{group}/{NBIRTH,NDATA,NDEATH}/{edge_node}`` and
``spBv1.0/{group}/{DBIRTH,DDATA,DDEATH}/{edge_node}/{device}`` and decodes
each payload with the classes generated from Eclipse Tahu's
``sparkplug_b.proto`` (shipped by the ``tahutils`` package).

What it keeps per edge node (:class:`EdgeNode`): whether it is born, the
bdSeq of its NBIRTH, the last sequence number, and per node and device the
metrics its birth declared (name, alias, datatype, unit). With them:

- NBIRTH / DBIRTH: the metrics are recorded, their values become readings,
  the node's or device's alarms are released (after its values reached the
  alarm engine, so a no-data alarm that only counted the death's silence
  ends quietly).
- NDATA / DDATA: aliases are resolved to the birth's names. An unknown alias
  (or name) is a dead letter (``unknown_alias``, ``unknown_metric``) and a
  rebirth request.
- NDEATH / DDEATH: each series of the node (and all its devices) or the
  device gets one reading with quality ``bad`` and its last value, which
  live pages show as bad quality; their alarms are suppressed
  (:meth:`~app.alarms.engine.AlarmEngine.inhibit_device`) until the next
  birth. An NDEATH whose bdSeq is not the current NBIRTH's is a will from an
  older session: ignored and counted.
- Sequence numbers (0-255, wrapping) are checked per edge node over every
  message but NBIRTH (which sets it) and NDEATH (the broker's will). A gap,
  data from a node (or device) with no birth seen (Vigie started after it),
  or an unknown alias makes Vigie publish a rebirth request: an NCMD with
  ``Node Control/Rebirth`` = true to ``spBv1.0/{group}/NCMD/{edge_node}``,
  at most once per ``rebirth_interval_s`` per node. Data from a node with no
  birth cannot be named (aliases) and is dead-lettered (``no_birth``).

Values: Int8-64, UInt8-64, Float, Double and Boolean (1 / 0) become
readings; signed integers are read from their two's complement (the 8, 16,
32 or 64 bits of the type, which covers both Tahu encodings). String, Text,
UUID, DateTime, Bytes, File, DataSet, Template and null values are not
measurements Vigie stores: they are skipped and counted by type in the
source's health (``skipped_metrics``), not dead-lettered, since nothing is
wrong with them. A value that does not fit its declared type is a dead
letter (``bad_value``). Times: the metric's timestamp (ms), else the
payload's, else arrival.

Names: a device is ``device_template`` (``{group}.{edge_node}.{device}`` by
default) and node-level metrics belong to ``node_template``
(``{group}.{edge_node}``); Vigie names cannot hold ``/`` (it separates device
from metric in a series key), so Sparkplug's metric folders
(``Inputs/Temperature``) are joined with ``metric_separator`` (``.``):
``Inputs.Temperature``. ``bdSeq`` and ``Node Control/*`` metrics are
protocol, not measurements: never readings.

The connection is a clean session (the Sparkplug host application's rule:
what was missed while away is recovered by rebirths, not by a broker queue),
QoS 1 subscriptions, reconnection with capped back-off, TLS and credentials
as the ``mqtt`` kind (its :func:`~app.ingest.mqtt.tls_context` and
:class:`~app.ingest.mqtt.BatchQueue` are reused). With ``host_id`` set,
Vigie also publishes its Sparkplug 3.0 STATE (``spBv1.0/STATE/{host_id}``,
retained, with a will saying offline), for edge nodes that wait for their
primary host.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import numpy as np
from google.protobuf.message import DecodeError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tahutils.tahu.sparkplug_b_pb2 import Payload  # Eclipse Tahu's generated classes

from app.hub import Hub
from app.ingest.base import ConnectionState, Source
from app.ingest.mqtt import BatchQueue, TlsOptions, tls_context
from app.model import Quality, Reading, now_ns
from app.tasks import Backoff, raise_failure, until_stopped

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
NODE_MESSAGES = ("NBIRTH", "NDATA", "NDEATH")
DEVICE_MESSAGES = ("DBIRTH", "DDATA", "DDEATH")
REBIRTH_METRIC = "Node Control/Rebirth"
BOOLEAN = 11
DATATYPES = {
    0: "Unknown", 1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16", 7: "UInt32",
    8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String", 13: "DateTime", 14: "Text",
    15: "UUID", 16: "DataSet", 17: "Bytes", 18: "File", 19: "Template", 20: "PropertySet",
    21: "PropertySetList",
}
_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}
_NUMERIC = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
_UNIT_KEYS = ("engUnit", "engUnits", "EngUnit", "unit", "units")
MS = 1_000_000
MAX_NODES = 10_000  # edge nodes followed by one source (junk node ids beyond are dead letters)
MAX_DEVICES_PER_NODE = 10_000


@dataclass(slots=True)
class MetricInfo:
    """One metric a birth declared: its Vigie name, type, unit and last value (for the death's reading)."""

    name: str
    datatype: int
    unit: str = ""
    last: tuple[int, float] | None = None  # (time_ns, value)


@dataclass(slots=True)
class Member:
    """The metrics of an edge node itself, or of one of its devices, as its last birth declared them."""

    device: str  # the Vigie device name
    tags: dict[str, str]
    online: bool = False
    by_alias: dict[int, MetricInfo] = field(default_factory=dict)
    by_name: dict[str, MetricInfo] = field(default_factory=dict)  # Sparkplug name -> metric

    def metrics(self) -> list[MetricInfo]:
        return list(self.by_name.values())


@dataclass(slots=True)
class EdgeNode:
    """What Vigie knows of one edge node: its session (bdSeq), sequence, own metrics and devices."""

    group: str
    node: str
    own: Member
    online: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    devices: dict[str, Member] = field(default_factory=dict)  # Sparkplug device id -> its metrics
    rebirth_at: float | None = None  # monotonic time of the last rebirth request


def parse_topic(topic: str) -> tuple[str, str, str, str | None] | None:
    """Return (message type, group, edge node, device or None) of a Sparkplug topic, or None."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == NAMESPACE and parts[2] in NODE_MESSAGES:
        return parts[2], parts[1], parts[3], None
    if len(parts) == 5 and parts[0] == NAMESPACE and parts[2] in DEVICE_MESSAGES:
        return parts[2], parts[1], parts[3], parts[4]
    return None


def metric_value(m: Any, datatype: int) -> tuple[float | None, str | None, str | None]:
    """Return (value, skipped type, fault) of a metric: exactly one is not None."""
    if datatype not in _NUMERIC:
        return None, DATATYPES.get(datatype, "unknown type"), None  # one key: made-up types cannot grow it
    if m.is_null:
        return None, "null", None
    which = m.WhichOneof("value")
    if which == "int_value" or which == "long_value":
        raw = m.int_value if which == "int_value" else m.long_value
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:  # two's complement in the type's width (Tahu's Python and Java encodings both)
            raw &= (1 << bits) - 1
            if raw >> (bits - 1):
                raw -= 1 << bits
        return float(raw), None, None
    if which == "double_value":
        return m.double_value, None, None
    if which == "float_value":  # a 32-bit float: its shortest decimal (21.3, not 21.299999237060547)
        return float(str(np.float32(m.float_value))), None, None
    if which == "boolean_value":
        return (1.0 if m.boolean_value else 0.0), None, None
    if which is None:
        return None, None, f"{DATATYPES[datatype]} metric without a value"
    return None, None, f"{DATATYPES[datatype]} metric carries a {which}"


def metric_unit(m: Any) -> str:
    """Return the engineering unit of a birth's metric from its properties (engUnit...), or ""."""
    if not m.HasField("properties"):
        return ""
    props = m.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key in _UNIT_KEYS and value.WhichOneof("value") == "string_value":
            return value.string_value
    return ""


def rebirth_payload() -> bytes:
    """Return the NCMD payload that asks an edge node for a rebirth."""
    p = Payload(timestamp=time.time_ns() // MS)
    m = p.metrics.add()
    m.name, m.datatype, m.boolean_value, m.timestamp = REBIRTH_METRIC, BOOLEAN, True, p.timestamp
    return p.SerializeToString()


class SparkplugSource(Source):
    """One broker, as a Sparkplug B host application."""

    source_type = "sparkplug"

    def __init__(
        self,
        name: str,
        hub: Hub,
        *,
        host: str,
        port: int = 1883,
        groups: list[str] | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsOptions | None = None,
        protocol: str = "5",
        keepalive_s: int = 30,
        reconnect_max_delay_s: float = 10.0,
        device_template: str = "{group}.{edge_node}.{device}",
        node_template: str = "{group}.{edge_node}",
        metric_separator: str = ".",
        rebirth_interval_s: float = 5.0,
        host_id: str | None = None,
        max_bytes: int = 1_000_000,
    ) -> None:
        super().__init__(name, hub)
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
        self.host = host
        self.port = port
        self.groups = list(groups or ["+"])
        self.client_id = (client_id or f"vigie-{name}").replace("{hostname}", socket.gethostname())
        self._username = username
        self._password = password
        self.tls = tls
        self.protocol = protocol
        self.keepalive_s = keepalive_s
        self.device_template = device_template
        self.node_template = node_template
        self.metric_separator = metric_separator
        self.rebirth_interval_s = rebirth_interval_s
        self.host_id = host_id
        self.max_bytes = max_bytes
        self.nodes: dict[tuple[str, str], EdgeNode] = {}
        self._state_ms = time.time_ns() // MS
        # Rebirth requests to nodes not (yet) known: bounded, so junk topics cannot grow memory or traffic.
        self._unknown_rebirths: dict[tuple[str, str], float] = {}
        self.rebirths_requested = 0
        self.sequence_gaps = 0
        self.stale_deaths_ignored = 0
        self.skipped: dict[str, int] = {}  # metrics not stored, by datatype (String, DataSet...) or "null"
        self._rebirths: dict[tuple[str, str], str] = {}  # (group, node) -> why, waiting to be published
        self._backoff = Backoff(initial=0.2, cap=reconnect_max_delay_s)
        self._queue: BatchQueue | None = None

    # -- connection ---------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Return the topic filters: node and device messages of each configured group."""
        return ([f"{NAMESPACE}/{g}/{t}/+" for g in self.groups for t in NODE_MESSAGES]
                + [f"{NAMESPACE}/{g}/{t}/+/+" for g in self.groups for t in DEVICE_MESSAGES])

    def _state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host_id}"

    def _state_payload(self, online: bool) -> bytes:
        # One timestamp per connection for the will, the online and the clean offline STATE (Sparkplug 3.0:
        # the online message repeats the will's): a node that ignores STATE older than the last it saw then
        # believes the will when Vigie's connection is lost, and stores and forwards meanwhile.
        return json.dumps({"online": online, "timestamp": self._state_ms}).encode()

    def _client(self) -> aiomqtt.Client:
        kwargs: dict[str, Any] = {}
        self._state_ms = time.time_ns() // MS
        if self.protocol == "5":  # a clean start whose session ends with the connection
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=True, properties=props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=True)
        if self.tls:
            kwargs["tls_context"] = tls_context(self.tls)
        if self.host_id:
            kwargs["will"] = aiomqtt.Will(self._state_topic(), self._state_payload(False), qos=1, retain=True)
        return aiomqtt.Client(self.host, self.port, identifier=self.client_id, username=self._username,
                              password=self._password, keepalive=self.keepalive_s,
                              queue_type=self._new_queue, timeout=10, **kwargs)  # type: ignore[arg-type]

    def _new_queue(self, maxsize: int = 0) -> BatchQueue:
        self._queue = BatchQueue(maxsize)
        return self._queue

    async def run(self) -> None:
        """Connect, subscribe and ingest until stopped; reconnect with back-off."""
        while not self.stopping:
            try:
                async with self._client() as client:
                    for topic in self.subscriptions():
                        await client.subscribe(topic, qos=1)
                    if self.host_id:
                        await client.publish(self._state_topic(), self._state_payload(True), qos=1, retain=True)
                    self.set_state(ConnectionState.CONNECTED)
                    self._backoff.reset()
                    consume = await until_stopped(self._consume(client), self._stopping, f"sparkplug-{self.name}")
                    raise_failure(consume)
                    self._take_left_over()
                    if self.host_id:  # a clean stop says offline itself (the will is for a lost connection)
                        await client.publish(self._state_topic(), self._state_payload(False), qos=1, retain=True)
            except aiomqtt.MqttError as exc:
                self._take_left_over()
                self.set_state(ConnectionState.DISCONNECTED, f"{exc}")
                if await self.sleep_or_stop(self._backoff.next()):
                    break
        self.set_state(ConnectionState.STOPPED)

    def _take_left_over(self) -> None:
        """Handle what the client received but the consumer had not taken (at a stop or a lost connection)."""
        if self._queue is not None and self._queue.qsize():
            self.handle(self._queue.take_all())

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for queue in client.messages:
            self.handle(queue.take_all())  # type: ignore[attr-defined]
            await self._send_rebirths(client)

    async def _send_rebirths(self, client: aiomqtt.Client) -> None:
        """Publish the rebirth requests the last batch asked for (QoS 0, as Sparkplug's NCMD)."""
        while self._rebirths:
            (group, node), why = self._rebirths.popitem()
            await client.publish(f"{NAMESPACE}/{group}/NCMD/{node}", rebirth_payload(), qos=0)
            self.rebirths_requested += 1
            log.info("sparkplug %s: rebirth requested from %s/%s (%s)", self.name, group, node, why)

    # -- decoding -----------------------------------------------------
    def handle(self, messages: list[aiomqtt.Message]) -> None:
        """Decode a batch of messages; publish their readings in order around births and deaths."""
        out: list[Reading] = []
        received = now_ns()
        for m in messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            self.handle_message(m.topic.value, payload, received, out)
        self.publish(out)

    def handle_message(self, topic: str, payload: bytes, received: int, out: list[Reading]) -> None:
        """Decode one Sparkplug message into ``out`` (births and deaths publish what precedes them first)."""
        parsed = parse_topic(topic)
        if parsed is None:
            self.dead.add(topic, "not_sparkplug", "not a spBv1.0 node or device message topic", payload)
            return
        kind, group, node_id, device_id = parsed
        if len(payload) > self.max_bytes:
            self.dead.add(topic, "oversized", f"{len(payload)} bytes (max_bytes {self.max_bytes})", payload)
            return
        try:
            p = Payload.FromString(payload)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            self.dead.add(topic, "invalid_protobuf", f"not a Sparkplug B payload: {exc}", payload)
            return
        key = (group, node_id)
        node = self.nodes.get(key)
        if kind == "NBIRTH":
            self._node_birth(key, p, received, out)
            return
        if kind == "NDEATH":
            self._node_death(node, p, topic, received, out)
            return
        if node is None or not node.online:
            self.dead.add(topic, "no_birth", f"{kind} from an edge node with no NBIRTH since Vigie started "
                          "or since its death: rebirth requested", payload)
            self._request_rebirth(key, f"{kind} before NBIRTH")
            return
        self._check_sequence(node, p, kind)
        if kind == "NDATA":
            self._data(node, node.own, p, topic, received, out)
            return
        assert device_id is not None
        if kind == "DBIRTH":
            self._device_birth(node, device_id, p, received, out)
            return
        member = node.devices.get(device_id)
        if member is None or not member.online:
            self.dead.add(topic, "no_birth", f"{kind} from a device with no DBIRTH since Vigie started or "
                          "since its death: rebirth requested", payload)
            self._request_rebirth(key, f"{kind} of {device_id} before DBIRTH")
            return
        if kind == "DDATA":
            self._data(node, member, p, topic, received, out)
        else:
            self._device_death(node, member, p, received, out)

    def _check_sequence(self, node: EdgeNode, p: Any, kind: str) -> None:
        """Check the message's seq follows the node's last one (0-255 wrapping); a gap asks for a rebirth."""
        seq = p.seq if p.HasField("seq") else None
        expected = None if node.seq is None else (node.seq + 1) % 256
        if seq is None or seq != expected:
            self.sequence_gaps += 1
            self._request_rebirth((node.group, node.node), f"{kind} seq {seq}, expected {expected}")
        node.seq = seq

    def _request_rebirth(self, key: tuple[str, str], why: str) -> None:
        """Ask an edge node for a rebirth with the next publish, at most once per ``rebirth_interval_s``.

        A node Vigie has no birth of is not remembered as a node (only the time of the request, among at
        most :data:`MAX_NODES`): a stream of made-up node ids costs neither memory nor a flood of NCMDs.
        """
        now = time.monotonic()
        node = self.nodes.get(key)
        if node is None:
            last = self._unknown_rebirths.get(key)
            if last is not None and now - last < self.rebirth_interval_s:
                return
            if last is None and len(self._unknown_rebirths) >= MAX_NODES:
                return
            self._unknown_rebirths[key] = now
            self._rebirths[key] = why
            return
        if node.rebirth_at is not None and now - node.rebirth_at < self.rebirth_interval_s:
            return
        node.rebirth_at = now
        self._rebirths[key] = why

    def _member(self, group: str, node: str, device: str | None) -> Member:
        values = {"group": group, "edge_node": node, "device": device or ""}
        template = self.node_template if device is None else self.device_template
        return Member(template.format(**values), {"group": group, "edge_node": node})

    def _metric_name(self, name: str) -> str:
        return name.replace("/", self.metric_separator)

    def _birth(self, member: Member, p: Any, topic: str, received: int, out: list[Reading]) -> None:
        """Record a birth's metrics (names, aliases, types, units) and emit their values."""
        member.by_alias.clear()
        member.by_name.clear()
        for m in p.metrics:
            if not m.name:
                self.dead.add(topic, "bad_birth", "a birth metric without a name is ignored", repr(m)[:120])
                continue
            if m.name == "bdSeq" or m.name.startswith("Node Control/"):
                continue  # protocol, not measurements
            info = MetricInfo(self._metric_name(m.name), m.datatype, metric_unit(m))
            member.by_name[m.name] = info
            if m.HasField("alias"):
                member.by_alias[m.alias] = info
        self._values(member, p, topic, received, out, birth=True)

    def _data(self, node: EdgeNode, member: Member, p: Any, topic: str, received: int,
              out: list[Reading]) -> None:
        self._values(member, p, topic, received, out, birth=False, node=node)

    def _values(self, member: Member, p: Any, topic: str, received: int, out: list[Reading], *, birth: bool,
                node: EdgeNode | None = None) -> None:
        """Turn a payload's metrics into readings of ``member`` (aliases resolved to its birth's names)."""
        default_ns = p.timestamp * MS if p.HasField("timestamp") else received
        device, tags, source = member.device, member.tags, self.name
        for m in p.metrics:
            if birth or m.name:
                info = member.by_name.get(m.name)
                if info is None:
                    if not birth and m.name != "bdSeq" and not m.name.startswith("Node Control/"):
                        self.dead.add(topic, "unknown_metric", f"metric {m.name!r} is not in the birth: "
                                      "rebirth requested", repr(m)[:120])
                        if node is not None:
                            self._request_rebirth((node.group, node.node), f"unknown metric {m.name!r} in {topic}")
                    continue
            else:
                info = member.by_alias.get(m.alias) if m.HasField("alias") else None
                if info is None:
                    why = f"alias {m.alias} is not in the birth" if m.HasField("alias") else "no name or alias"
                    self.dead.add(topic, "unknown_alias", why + ": rebirth requested", repr(m)[:120])
                    if node is not None:
                        self._request_rebirth((node.group, node.node), f"unknown alias {m.alias} in {topic}")
                    continue
            datatype = m.datatype if m.HasField("datatype") else info.datatype
            value, skipped, fault = metric_value(m, datatype)
            if value is None:
                if skipped is not None:
                    self.skipped[skipped] = self.skipped.get(skipped, 0) + 1
                else:
                    self.dead.add(topic, "bad_value", f"{info.name}: {fault}", repr(m)[:120])
                continue
            t = m.timestamp * MS if m.HasField("timestamp") else default_ns
            info.last = (t, value)
            out.append(Reading(device, info.name, t, value, Quality.GOOD, info.unit, source, tags))

    def _flush(self, out: list[Reading]) -> None:
        """Publish what precedes a birth or death, so alarms see it before the inhibition changes."""
        self.publish(out)
        out.clear()

    def _stale(self, member: Member, t: int, out: list[Reading]) -> None:
        """Give each series of a dead node or device one bad-quality reading with its last value."""
        for info in member.metrics():
            if info.last is not None:
                last_t, value = info.last
                out.append(Reading(member.device, info.name, max(t, last_t), value, Quality.BAD, info.unit,
                                   self.name, member.tags))

    def _node_birth(self, key: tuple[str, str], p: Any, received: int, out: list[Reading]) -> None:
        group, node_id = key
        node = self.nodes.get(key)
        if node is None:
            if len(self.nodes) >= MAX_NODES:
                self.dead.add(f"{NAMESPACE}/{group}/NBIRTH/{node_id}", "too_many_nodes",
                              f"{MAX_NODES} edge nodes known already: this one is ignored")
                return
            node = self.nodes[key] = EdgeNode(group, node_id, self._member(group, node_id, None))
            self._unknown_rebirths.pop(key, None)
        topic = f"{NAMESPACE}/{group}/NBIRTH/{node_id}"
        bd_seq = next((m.long_value or m.int_value for m in p.metrics if m.name == "bdSeq"), None)
        if bd_seq is None:
            self.dead.add(topic, "bad_birth", "NBIRTH without bdSeq: its NDEATH cannot be matched")
        node.bd_seq = bd_seq
        node.seq = p.seq if p.HasField("seq") else None
        node.online = True
        node.rebirth_at = None
        self._flush(out)
        self._birth(node.own, p, topic, received, out)
        self._flush(out)  # its values reach the alarms before the release (a no-data alarm ends quietly)
        node.own.online = True
        self.set_device_online(node.own.device, True)

    def _device_birth(self, node: EdgeNode, device_id: str, p: Any, received: int, out: list[Reading]) -> None:
        member = node.devices.get(device_id)
        if member is None:
            if len(node.devices) >= MAX_DEVICES_PER_NODE:
                self.dead.add(f"{NAMESPACE}/{node.group}/DBIRTH/{node.node}/{device_id}", "too_many_devices",
                              f"edge node {node.node} has {MAX_DEVICES_PER_NODE} devices already: ignored")
                return
            member = node.devices[device_id] = self._member(node.group, node.node, device_id)
        self._flush(out)
        self._birth(member, p, f"{NAMESPACE}/{node.group}/DBIRTH/{node.node}/{device_id}", received, out)
        self._flush(out)
        member.online = True
        self.set_device_online(member.device, True)

    def _device_death(self, node: EdgeNode, member: Member, p: Any, received: int, out: list[Reading]) -> None:
        self._flush(out)
        member.online = False
        self.set_device_online(member.device, False, f"Sparkplug DDEATH of {member.device}")
        self._stale(member, p.timestamp * MS if p.HasField("timestamp") else received, out)
        self._flush(out)

    def _node_death(self, node: EdgeNode | None, p: Any, topic: str, received: int, out: list[Reading]) -> None:
        bd_seq = next((m.long_value or m.int_value for m in p.metrics if m.name == "bdSeq"), None)
        if node is None or not node.online or bd_seq != node.bd_seq:
            # A will from an older session (the node reconnected since), or of a node already dead.
            self.stale_deaths_ignored += 1
            log.debug("sparkplug %s: %s ignored (bdSeq %s, current %s)", self.name, topic, bd_seq,
                      None if node is None else node.bd_seq)
            return
        self._flush(out)
        node.online = False
        for member in (node.own, *node.devices.values()):  # the broker's will: its time is now, not the payload's
            if member.online or member is node.own:
                member.online = False
                self.set_device_online(member.device, False,
                                       f"Sparkplug NDEATH of {node.group}/{node.node}")
                self._stale(member, received, out)
        self._flush(out)

    def health(self) -> dict[str, Any]:
        """Add broker, subscriptions and the Sparkplug bookkeeping to the base health."""
        h = super().health()
        h.update(
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            subscriptions=self.subscriptions(),
            nodes_known=len(self.nodes),
            nodes_online=sum(1 for n in self.nodes.values() if n.online),
            devices_online=sum(1 for n in self.nodes.values() for d in n.devices.values() if d.online),
            rebirths_requested=self.rebirths_requested,
            sequence_gaps=self.sequence_gaps,
            stale_deaths_ignored=self.stale_deaths_ignored,
            skipped_metrics=dict(self.skipped),
        )
        return h
