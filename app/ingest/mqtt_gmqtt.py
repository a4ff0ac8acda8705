"""The gmqtt transport of the MQTT source: one broker connection, messages in batches, PUBACKs when asked.

Why a second transport: under aiomqtt, paho reads each PUBLISH with 3-4
``recv`` calls and one event-loop pass, builds an MQTT 5 ``Properties``
object per message and sends each PUBACK through a wake-up of its own; that
was about three quarters of Vigie's CPU on a flood (bench/README.md). gmqtt
reads the socket in 64 KiB chunks through an asyncio protocol and parses
every packet of a chunk in one go.

How it is used (gmqtt 0.8): gmqtt has no manual-acknowledgement switch. Its
PUBLISH handler either acknowledges on arrival (``optimistic_acknowledgement``)
or, without it, once an ``async`` ``on_message`` has finished (a task per
message; a plain function's messages are never acknowledged), and it never
gives ``on_message`` the packet id. So this module installs its own PUBLISH handler in the client's
packet-handler table (``_package_handler._handler_cache``): it parses the
packet (topic, packet id, MQTT 5 properties skipped, payload), appends it to
the current batch and, once per read chunk, schedules one ``call_soon`` that
hands the whole batch to the source. Nothing is acknowledged by gmqtt; the
source calls :meth:`GmqttConnection.ack` with the packet ids once the
readings are durable (or at once with ``ack: on_arrival``), and all those
PUBACKs go out in one ``transport.write``. gmqtt's own reconnect is switched
off (the source reconnects with its back-off and reports its state, as with
aiomqtt), and a new client is made for each connection, so packet ids never
outlive their connection. These are private parts of gmqtt: the version is
pinned in pyproject.toml and tests/test_mqtt_ingest.py, tests/test_durable_ack.py
check the behaviour (nothing acknowledged before it is durable, redelivery
after a dropped connection).

Reading stops (:meth:`GmqttConnection.pause_reading`) while the source holds
more than 4 x ``receive_maximum`` unacknowledged messages: Mosquitto 2.0.11
was seen sending tens of thousands past its window once acknowledgements
flowed, and a reader this fast would otherwise take them all into memory.

QoS 2 is not offered on this transport (a config error; refused when the
source is made).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

log = logging.getLogger(__name__)
# gmqtt logs each connection and subscription at INFO and a lost connection with a traceback; the source
# logs its own state changes (connected, disconnected and why).
logging.getLogger("gmqtt").setLevel(logging.WARNING)
logging.getLogger("gmqtt.mqtt.protocol").setLevel(logging.ERROR)

# One inbound message as the source takes it: (topic, payload, packet id, qos).
Raw = tuple[bytes, bytes, int, int]

_PUBACK = 0x4002_0000  # PUBACK, remaining length 2, then the packet id (MQTT 5: reason 0 may be left out)


class GmqttConnectError(Exception):
    """The connection could not be made or was lost (the source retries with its back-off)."""


class _Client(gmqtt.Client):
    """A gmqtt client that never reconnects by itself: the source does, with its own back-off."""

    async def reconnect(self, delay: bool = False) -> None:
        return


class GmqttConnection:
    """One connection to the broker, made by :meth:`open`; batches go to ``on_batch``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        tls: ssl.SSLContext | None,
        protocol: str,
        session_expiry_s: int,
        receive_maximum: int,
        keepalive_s: int,
        on_batch: Callable[[list[Raw]], None],
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.keepalive_s = keepalive_s
        self.timeout = timeout
        self.version = MQTTv50 if protocol == "5" else MQTTv311
        props: dict[str, Any] = {}
        if self.version == MQTTv50:
            props = {"session_expiry_interval": session_expiry_s, "receive_maximum": receive_maximum}
        self.client = _Client(client_id, clean_session=False, optimistic_acknowledgement=False, **props)
        if username is not None:
            self.client.set_auth_credentials(username, password)
        handler = self.client._package_handler
        handler._handler_cache[MQTTCommands.PUBLISH] = self._on_publish  # ours: no ack, the packet id kept
        self._handler = handler
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self._on_batch = on_batch
        self._batch: list[Raw] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._failure: BaseException | None = None
        self._subacks: dict[int, asyncio.Future] = {}
        self._paused = False

    # -- connection ---------------------------------------------------
    async def open(self) -> None:
        """Connect and wait for the CONNACK; raise :class:`GmqttConnectError` when refused or unreachable."""
        try:
            await asyncio.wait_for(
                self.client.connect(self.host, self.port, ssl=self.tls or False, keepalive=self.keepalive_s,
                                    version=self.version),
                self.timeout)
        except (OSError, TimeoutError, MQTTConnectError) as exc:
            await self.close()
            raise GmqttConnectError(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        """Disconnect (an MQTT DISCONNECT: the persistent session stays at the broker)."""
        with contextlib.suppress(Exception):
            if self.client._connection is not None and not self.client._connection.is_closing():
                await asyncio.wait_for(self.client.disconnect(), self.timeout)
        self._lost.set()

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        """Subscribe and wait for the SUBACK; raise :class:`GmqttConnectError` when refused."""
        mid = self.client.subscribe(topic_filter, qos=qos)
        granted = self._loop.create_future()
        self._subacks[mid] = granted
        try:
            codes = await asyncio.wait_for(granted, self.timeout)
        except TimeoutError:
            raise GmqttConnectError(f"no SUBACK for {topic_filter!r}") from None
        finally:
            self._subacks.pop(mid, None)
        if any(c >= 0x80 for c in codes):
            raise GmqttConnectError(f"subscription to {topic_filter!r} refused (code {codes[0]:#x})")

    def _on_subscribe(self, _client: Any, mid: int, codes: tuple[int, ...], _properties: Any) -> None:
        fut = self._subacks.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _on_disconnect(self, _client: Any, _packet: Any, exc: Any = None) -> None:
        self._lost.set()

    async def wait_lost(self) -> None:
        """Return once the connection is gone; raise what a batch handler raised."""
        await self._lost.wait()
        if self._failure is not None:
            raise self._failure
        raise GmqttConnectError("connection lost")

    @property
    def connected(self) -> bool:
        conn = self.client._connection
        return conn is not None and not conn.is_closing() and not self._lost.is_set()

    # -- receiving ----------------------------------------------------
    def _on_publish(self, cmd: int, raw: bytes) -> None:
        """Parse one PUBLISH (called by gmqtt for each packet of a read chunk) and add it to the batch."""
        qos = (cmd >> 1) & 3
        end = 2 + ((raw[0] << 8) | raw[1])
        topic = raw[2:end]
        mid = 0
        if qos:
            mid = (raw[end] << 8) | raw[end + 1]
            end += 2
        if self.version == MQTTv50:
            length, shift, i = 0, 0, end
            while True:  # the properties' length, a variable byte integer
                byte = raw[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if length:
                topic = self._topic_alias(topic, raw[end:])
            end = i + length
        self._batch.append((topic, raw[end:], mid, qos))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._hand_over)

    def _topic_alias(self, topic: bytes, rest: bytes) -> bytes:
        """Resolve an MQTT 5 topic alias (Vigie announces none, so a broker should not use them)."""
        properties, _ = self._handler._parse_properties(rest)
        alias = (properties or {}).get("topic_alias")
        if not alias:
            return topic
        aliases = self._handler._server_topics_aliases
        if topic:
            aliases[alias[0]] = topic
            return topic
        return aliases.get(alias[0], b"")

    def _hand_over(self) -> None:
        """Give the batch gathered from the last read chunk(s) to the source."""
        self._scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            self._on_batch(batch)
        except Exception as exc:  # the consumer's failure ends the connection, as with aiomqtt
            self._failure = exc
            self._lost.set()
        if self._paused:  # asyncio's stream reader resumes the transport when its own buffer drains
            conn = self.client._connection
            if conn is not None and not conn.is_closing():
                conn._transport.pause_reading()

    def take_all(self) -> list[Raw]:
        """Take what was received but not handed over yet (at a stop or a lost connection)."""
        batch, self._batch = self._batch, []
        return batch

    def pause_reading(self) -> None:
        """Stop reading the socket (the broker keeps what it has not sent): the store is behind."""
        conn = self.client._connection
        if not self._paused and conn is not None and not conn.is_closing():
            self._paused = True
            conn._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        conn = self.client._connection
        if self._paused and conn is not None and not conn.is_closing():
            self._paused = False
            conn._transport.resume_reading()

    # -- acknowledging ------------------------------------------------
    def ack(self, acks: list[tuple[int, int]]) -> None:
        """Send the PUBACKs of these (packet id, qos), all in one write."""
        conn = self.client._connection
        if not acks or conn is None or conn.is_closing():
            return
        conn.send_package(struct.pack(f"!{len(acks)}I", *[_PUBACK | mid for mid, _ in acks]))
