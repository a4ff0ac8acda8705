"""MQTT ingest with aiomqtt: topic templates, decoders, persistent QoS 1 sessions.

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
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.hub import Hub
from app.ingest.base import Backoff, ConnectionState, Source
from app.ingest.decoders import Context, Decoder
from app.ingest.topics import TopicTemplate
from app.model import Reading, now_ns
from app.tasks import raise_failure, until_stopped

log = logging.getLogger(__name__)

_ROUTE_CACHE_MAX = 200_000


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
        self.shared_group = shared_group
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        self._backoff = Backoff(initial=0.2, cap=reconnect_max_delay_s)
        self._routes: dict[str, tuple[Decoder, str | None, str | None, dict[str, str]] | None] = {}
        self._queue: BatchQueue | None = None  # the current client's, for messages left at a stop

    # -- connection ---------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls.ca_file)
            if self.tls.cert_file:
                ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            if self.tls.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["tls_context"] = ctx
        return aiomqtt.Client(
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

    def topic_filter(self, sub: MqttSubscription) -> str:
        """Return the filter to subscribe to, shared when a group is set."""
        f = sub.template.filter
        return f"$share/{self.shared_group}/{f}" if self.shared_group else f

    async def run(self) -> None:
        """Connect, subscribe and ingest until stopped; reconnect with back-off."""
        while not self.stopping:
            try:
                async with self._client() as client:
                    for sub in self.subscriptions:
                        await client.subscribe(self.topic_filter(sub), qos=sub.qos)
                    self.set_state(ConnectionState.CONNECTED)
                    self._backoff.reset()
                    await self._consume_until_stopped(client)
            except aiomqtt.MqttError as exc:
                self._handle_left_over()
                self.set_state(ConnectionState.DISCONNECTED, f"{exc}")
                if await self.sleep_or_stop(self._backoff.next()):
                    break
            else:
                self._handle_left_over()
        self.set_state(ConnectionState.STOPPED)

    def _handle_left_over(self) -> None:
        """Handle what the client received but nobody took: at a stop or a lost connection.

        paho acknowledged these messages when they arrived, so the broker
        will not deliver them again: dropping them would lose them.
        """
        if self._queue is not None and self._queue.qsize():
            self.handle(self._queue.take_all())

    def _new_queue(self, maxsize: int = 0) -> BatchQueue:
        """Make the client's message queue (aiomqtt's ``queue_type``) and keep it for :meth:`_handle_left_over`."""
        self._queue = BatchQueue(maxsize)
        return self._queue

    async def _consume_until_stopped(self, client: aiomqtt.Client) -> None:
        consume = await until_stopped(self._consume(client), self._stopping, f"mqtt-consume-{self.name}")
        raise_failure(consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for queue in client.messages:
            self.handle(queue.take_all())  # type: ignore[attr-defined]

    # -- decoding -----------------------------------------------------
    def _route(self, topic: str) -> tuple[Decoder, str | None, str | None, dict[str, str]] | None:
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
                route = (sub.decoder, device, metric, levels)
                break
        if len(self._routes) > _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def handle(self, messages: list[aiomqtt.Message]) -> None:
        """Decode a batch of messages and publish their readings as one batch."""
        out: list[Reading] = []
        received = now_ns()
        for m in messages:
            topic = m.topic.value
            route = self._route(topic)
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            if route is None:
                self.dead.add(topic, "no_template", "topic matches no configured template", payload)
                continue
            decoder, device, metric, tags = route
            decoder.decode(payload, Context(self.name, topic, received, device, metric, tags), out, self.dead)
        self.publish(out)

    def health(self) -> dict[str, Any]:
        """Add broker address, client id and subscriptions to the base health."""
        h = super().health()
        h.update(
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            subscriptions=[self.topic_filter(s) for s in self.subscriptions],
        )
        return h
