"""MQTT ingest: topic templates, decoders, persistent QoS 1 sessions, over gmqtt or aiomqtt.

Two transports (``transport:``), one source: ``gmqtt`` (the default,
app/ingest/mqtt_gmqtt.py: reads the socket in chunks, a quarter to a third
of aiomqtt's CPU per message, bench/README.md) and ``aiomqtt`` (paho
underneath). Decoding, routing, the durable acknowledgement bookkeeping,
back-off and health are the source's, the same for both; what follows
describes the aiomqtt path, and the gmqtt module says how it does the same.

Why a batching queue: aiomqtt's ``client.messages`` iterator creates an
asyncio task per message, which measured 2-3x costlier than the work itself
(FIELD-NOTES). aiomqtt takes a ``queue_type``; ours collects messages into a
list and its ``get()`` returns the whole list, so one pass of the public
iterator hands over every message that arrived since the last pass (one task
per batch), and disconnects still surface as ``MqttError`` from the iterator.

The session is persistent (MQTT 3.1.1 ``clean_session=False`` or MQTT 5
``clean_start=False`` with a session expiry) under a stable client id, so the
broker queues QoS 1 messages while Vigie is away and delivers them after.
For scale-out, ``shared_group`` subscribes through ``$share/<group>/...`` so
several Vigie processes split a subscription.

Acknowledgement (``ack: durable``, the default): a QoS 1 message is
acknowledged (PUBACK) only once its readings are durable (written to the
store, spooled to disk, or refused by the store and dead-lettered), so a
crash of Vigie never loses a message the broker thinks delivered: the broker
sends it again. The writer's watermark (``hub.durability``) says how far
readings are durable; each consumed batch is kept as (ticket, message ids)
and acknowledged from the writer's durability callback, never from the
consume loop. Message ids belong to a connection: on a disconnect the
waiting ids are forgotten (the broker redelivers those messages; the stores
overwrite the same series and time, so a duplicate costs nothing).
aiomqtt 2.5 has no manual-ack switch and hands its paho client only as
``client._client``; the message's ``mid`` and ``qos`` are public. The broker
stops sending once ``receive_maximum`` messages (MQTT 5 Receive Maximum; with
3.1.1 the broker's ``max_inflight_messages``) wait for their PUBACK, so
the writer is woken as soon as half that many wait. ``ack: on_arrival``
lets paho acknowledge on arrival, as before (cheaper, loses what was in
flight at a crash). QoS 2 is not covered: paho sends PUBREC on arrival,
which hands the message over.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.hub import Hub
from app.ingest.base import ConnectionState, Source
from app.ingest.decoders import Context, Decoder
from app.ingest.topics import TopicTemplate
from app.model import Reading, now_ns
from app.tasks import Backoff, raise_failure, until_stopped

log = logging.getLogger(__name__)

_ROUTE_CACHE_MAX = 200_000
_PUBACK = 0x4002_0000  # a PUBACK packet (type 4, remaining length 2) once the packet id is or-ed in
ACK_MODES = ("durable", "on_arrival")
TRANSPORTS = ("aiomqtt", "gmqtt")


def paho_acker(client: Any) -> Callable[[list[tuple[int, int]]], None]:
    """Return a function sending the PUBACKs of (message id, qos) pairs through a paho client, in one write.

    paho's ``ack(mid, qos)`` queues one packet per message, and paho sends
    each with a ``send`` of its own; QoS 1 PUBACKs are 4 bytes, so a batch's
    are joined into one queued packet (paho's ``_packet_queue``, which
    ``ack`` itself calls; aiomqtt 2.5 exposes no manual ack). QoS 2 goes
    through ``ack`` (its PUBCOMP).
    """
    def ack(acks: list[tuple[int, int]]) -> None:
        mids = [_PUBACK | mid for mid, qos in acks if qos == 1]
        if mids:
            client._packet_queue(PUBACK, struct.pack(f"!{len(mids)}I", *mids), 0, 0)
        for mid, qos in acks:
            if qos == 2:
                client.ack(mid, qos)

    return ack


class BatchQueue(asyncio.Queue):
    """An aiomqtt message queue that says "messages are waiting"; the consumer takes them all at once.

    ``get()`` returns no message, only the queue itself once something is
    waiting: the messages are taken by :meth:`take_all` in the consumer's own
    step. aiomqtt's iterator runs ``get()`` as a task of its own and drops that
    task's result when the iterator is cancelled (a stop), so a ``get()`` that
    took the messages itself would lose them, though paho has already sent
    their PUBACK and the broker will never send them again.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._batch: list[aiomqtt.Message] = []
        self._ready = asyncio.Event()

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Add a message (called by aiomqtt from paho's read callback)."""
        self._batch.append(item)
        self._ready.set()

    async def get(self) -> BatchQueue:  # type: ignore[override]
        """Wait until messages are waiting; return the queue (take them with :meth:`take_all`)."""
        await self._ready.wait()
        return self

    def take_all(self) -> list[aiomqtt.Message]:
        """Take every waiting message."""
        self._ready.clear()
        batch, self._batch = self._batch, []
        return batch

    def qsize(self) -> int:
        """Return how many messages wait."""
        return len(self._batch)


@dataclass(frozen=True, slots=True)
class MqttSubscription:
    """A topic template and the decoder of its payloads."""

    template: TopicTemplate
    decoder: Decoder
    qos: int = 1


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker: CA, optional client certificate, verification."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    """Return the TLS context of a broker connection (Vigie's subscriptions and its own alarm topic)."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttSource(Source):
    """One broker connection with any number of topic subscriptions."""

    source_type = "mqtt"

    def __init__(
        self,
        name: str,
        hub: Hub,
        *,
        host: str,
        port: int = 1883,
        subscriptions: list[MqttSubscription],
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsOptions | None = None,
        protocol: str = "5",
        shared_group: str | None = None,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        reconnect_max_delay_s: float = 10.0,
        max_inflight: int = 1000,
        ack: str = "durable",
        receive_maximum: int = 1000,
        transport: str = "gmqtt",
    ) -> None:
        super().__init__(name, hub)
        self.host = host
        self.port = port
        self.subscriptions = subscriptions
        self.client_id = (client_id or f"vigie-{name}").replace("{hostname}", socket.gethostname())
        self._username = username
        self._password = password
        self.tls = tls
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
        self.protocol = protocol
        if transport not in TRANSPORTS:
            raise ValueError(f"MQTT transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        self.transport = transport
        if transport == "gmqtt" and any(s.qos > 1 for s in subscriptions):
            raise ValueError("the gmqtt MQTT transport takes QoS 0 or 1 subscriptions, not QoS 2")
        self.shared_group = shared_group
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        if ack not in ACK_MODES:
            raise ValueError(f"MQTT ack must be one of {', '.join(ACK_MODES)}, not {ack!r}")
        if not 1 <= receive_maximum <= 65535:
            raise ValueError(f"MQTT receive_maximum must be between 1 and 65535, not {receive_maximum}")
        self.ack = ack
        self.receive_maximum = receive_maximum
        self._flush_at = max(1, receive_maximum // 2)  # unacked messages that wake the writer
        # Unacknowledged messages beyond which the gmqtt transport stops reading: a broker should never send
        # more than its window, but Mosquitto 2.0.11 overran it (tens of thousands) while acks flowed.
        self._pause_at = 4 * receive_maximum
        self._acker: Any = None  # sends the current connection's PUBACKs ((mid, qos) list), while acks are delayed
        self._awaiting: deque[tuple[int, list[tuple[int, int]]]] = deque()  # (ticket, [(mid, qos)]) oldest first
        self._unacked = 0
        self._unlisten: Callable[[], None] | None = None
        self._backoff = Backoff(initial=0.2, cap=reconnect_max_delay_s)
        self._routes: dict[str, tuple[Decoder, Context] | None] = {}
        self._queue: BatchQueue | None = None  # the current client's, for messages left at a stop
        self._gmqtt: Any = None  # the current gmqtt connection (transport: gmqtt)

    # -- connection ---------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = self.receive_maximum
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if self.tls:
            kwargs["tls_context"] = tls_context(self.tls)
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self._username,
            password=self._password,
            keepalive=self.keepalive_s,
            queue_type=self._new_queue,  # type: ignore[arg-type]
            max_inflight_messages=self.max_inflight,
            timeout=10,
            **kwargs,
        )
        if self.ack == "durable":
            client._client.manual_ack_set(True)  # aiomqtt 2.5 exposes no manual ack (see the module docstring)
        return client

    def topic_filter(self, sub: MqttSubscription) -> str:
        """Return the filter to subscribe to, shared when a group is set."""
        f = sub.template.filter
        return f"$share/{self.shared_group}/{f}" if self.shared_group else f

    async def run(self) -> None:
        """Connect, subscribe and ingest until stopped; reconnect with back-off."""
        from app.ingest.mqtt_gmqtt import GmqttConnectError

        connect = self._run_gmqtt if self.transport == "gmqtt" else self._run_aiomqtt
        while not self.stopping:
            try:
                await connect()
            except (aiomqtt.MqttError, GmqttConnectError) as exc:
                self._handle_left_over()
                self.set_state(ConnectionState.DISCONNECTED, f"{exc}")
                if await self.sleep_or_stop(self._backoff.next()):
                    break
            else:
                self._handle_left_over()
        self.set_state(ConnectionState.STOPPED)

    async def _run_aiomqtt(self) -> None:
        """One aiomqtt connection: subscribe, then ingest until stopped or disconnected."""
        async with self._client() as client:
            self._start_acks(paho_acker(client._client))
            try:
                for sub in self.subscriptions:
                    await client.subscribe(self.topic_filter(sub), qos=sub.qos)
                self.set_state(ConnectionState.CONNECTED)
                self._backoff.reset()
                await self._consume_until_stopped(client)
                await self._ack_before_leaving()
            finally:
                self._end_acks()

    async def _run_gmqtt(self) -> None:
        """One gmqtt connection: subscribe, then ingest until stopped or disconnected."""
        from app.ingest.mqtt_gmqtt import GmqttConnection

        conn = GmqttConnection(
            host=self.host, port=self.port, client_id=self.client_id, username=self._username,
            password=self._password, tls=tls_context(self.tls) if self.tls else None, protocol=self.protocol,
            session_expiry_s=self.session_expiry_s, receive_maximum=self.receive_maximum,
            keepalive_s=self.keepalive_s, on_batch=self._take_raw)
        self._gmqtt = conn
        # Before the CONNACK: a resumed session's messages arrive right behind it, and are handed over at once.
        self._start_acks(conn.ack)
        try:
            await conn.open()
            for sub in self.subscriptions:
                await conn.subscribe(self.topic_filter(sub), sub.qos)
            self.set_state(ConnectionState.CONNECTED)
            self._backoff.reset()
            lost = await until_stopped(conn.wait_lost(), self._stopping, f"mqtt-link-{self.name}")
            raise_failure(lost)
            await self._ack_before_leaving()
        finally:
            self._end_acks()
            await conn.close()

    def _take_raw(self, batch: list[tuple[bytes, bytes, int, int]]) -> None:
        """Handle a batch from the gmqtt transport: decode it, then acknowledge it (now or once durable)."""
        self._decode([(topic.decode(errors="replace"), payload) for topic, payload, _, _ in batch])
        acks = [(mid, qos) for _, _, mid, qos in batch if qos]
        if self.ack == "durable":
            self._ack_when_durable(acks)
        elif acks and self._gmqtt is not None:
            self._gmqtt.ack(acks)

    def _handle_left_over(self) -> None:
        """Handle what the client received but nobody took: at a stop or a lost connection.

        With aiomqtt and ``ack: on_arrival``, paho acknowledged these messages
        when they arrived, so the broker will not deliver them again: dropping
        them would lose them. (Unacknowledged ones are delivered again.)
        """
        if self._queue is not None and self._queue.qsize():
            self.handle(self._queue.take_all())
        if self._gmqtt is not None:
            left = self._gmqtt.take_all()
            self._gmqtt = None
            if left:
                self._decode([(topic.decode(errors="replace"), payload) for topic, payload, _, _ in left])

    def _new_queue(self, maxsize: int = 0) -> BatchQueue:
        """Make the client's message queue (aiomqtt's ``queue_type``) and keep it for :meth:`_handle_left_over`."""
        self._queue = BatchQueue(maxsize)
        return self._queue

    async def _consume_until_stopped(self, client: aiomqtt.Client) -> None:
        consume = await until_stopped(self._consume(client), self._stopping, f"mqtt-consume-{self.name}")
        raise_failure(consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for queue in client.messages:
            batch = queue.take_all()  # type: ignore[attr-defined]
            self.handle(batch)
            if self._acker is not None:
                self._ack_when_durable([(m.mid, m.qos) for m in batch if m.qos])

    # -- acknowledgement ----------------------------------------------
    def _start_acks(self, acker: Callable[[list[tuple[int, int]]], None]) -> None:
        """Acknowledge this connection's messages when durable (``ack: durable``).

        ``acker`` sends the PUBACKs of a list of (message id, qos), in one write.
        """
        if self.ack != "durable":
            return
        self._acker = acker
        durability = self.hub.durability
        if durability is not None:
            self._unlisten = durability.add_durable_listener(self._on_durable)

    def _end_acks(self) -> None:
        """Forget the connection's waiting message ids: the broker sends those messages again."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self._acker = None
        self._awaiting.clear()
        self._unacked = 0

    def _ack_when_durable(self, acks: list[tuple[int, int]]) -> None:
        """Keep a consumed batch's (message id, qos) until its readings are durable; acknowledge then."""
        if self._acker is None or not acks:
            return
        durability = self.hub.durability
        if durability is None or durability.durable >= durability.accepted:
            self._send_acks(acks)  # no store to wait for, or nothing pending
            return
        self._awaiting.append((durability.accepted, acks))
        self._unacked += len(acks)
        if self._unacked >= self._pause_at and self._gmqtt is not None:
            self._gmqtt.pause_reading()  # the broker overran its window: stop reading until the store catches up
        if self._unacked >= self._flush_at:  # the broker's window is half used: write now
            durability.flush_soon()

    def _on_durable(self, durable: int) -> None:
        """Acknowledge every waiting batch whose readings are now durable (the writer's callback)."""
        awaiting = self._awaiting
        if not awaiting or awaiting[0][0] > durable:
            return
        acks = awaiting.popleft()[1]
        while awaiting and awaiting[0][0] <= durable:  # every batch made durable: one write for all
            acks = acks + awaiting.popleft()[1]
        self._unacked -= len(acks)
        self._acker(acks)
        if self._gmqtt is not None and self._unacked < self._pause_at:
            self._gmqtt.resume_reading()

    def _send_acks(self, acks: list[tuple[int, int]]) -> None:
        self._acker(acks)

    async def _ack_before_leaving(self, timeout: float = 5.0) -> None:
        """On stop: handle what is waiting, make it durable and acknowledge it before disconnecting.

        Without this, what arrived since the last write would be delivered
        again at the next start (harmless, but a restart should not replay).
        """
        if self._queue is not None and self._queue.qsize():
            batch = self._queue.take_all()
            self.handle(batch)
            if self._acker is not None:
                self._ack_when_durable([(m.mid, m.qos) for m in batch if m.qos])
        if self._gmqtt is not None:
            left = self._gmqtt.take_all()
            if left:
                self._take_raw(left)
        durability = self.hub.durability
        if not self._awaiting or durability is None:
            return
        durability.flush_soon()
        try:
            await asyncio.wait_for(durability.wait_durable(self._awaiting[-1][0]), timeout)
        except TimeoutError:
            log.warning("mqtt %s: %d messages not durable at stop; the broker will send them again",
                        self.name, self._unacked)

    # -- decoding -----------------------------------------------------
    def _route(self, topic: str) -> tuple[Decoder, Context] | None:
        """Return the topic's decoder and its decoding context (cached per topic; decoders never change it,
        only its ``received_ns`` is set per batch)."""
        try:
            return self._routes[topic]
        except KeyError:
            pass
        route = None
        for sub in self.subscriptions:
            levels = sub.template.match(topic)
            if levels is not None:
                device = levels.pop("device", None)
                metric = levels.pop("metric", None)
                route = (sub.decoder, Context(self.name, topic, 0, device, metric, levels))
                break
        if len(self._routes) > _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def handle(self, messages: list[aiomqtt.Message]) -> None:
        """Decode a batch of aiomqtt messages and publish their readings as one batch."""
        self._decode([(m.topic.value, m.payload if isinstance(m.payload, bytes) else str(m.payload).encode())
                      for m in messages])

    def _decode(self, messages: list[tuple[str, bytes]]) -> None:
        """Decode a batch of (topic, payload) and publish their readings as one batch."""
        out: list[Reading] = []
        received = now_ns()
        for topic, payload in messages:
            route = self._route(topic)
            if route is None:
                self.dead.add(topic, "no_template", "topic matches no configured template", payload)
                continue
            decoder, ctx = route
            ctx.received_ns = received
            decoder.decode(payload, ctx, out, self.dead)
        self.publish(out)

    def health(self) -> dict[str, Any]:
        """Add broker address, client id and subscriptions to the base health."""
        h = super().health()
        h.update(
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            subscriptions=[self.topic_filter(s) for s in self.subscriptions],
            ack=self.ack,
            unacked_messages=self._unacked,
        )
        return h
