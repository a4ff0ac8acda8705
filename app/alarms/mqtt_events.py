"""Alarm events on an MQTT topic of Vigie's own: other systems follow alarms, other Vigie processes share them.

Each alarm's current state is published, retained, as JSON on
``<prefix>/alarms/<rule>/<device>/<metric>`` (QoS 1), so a SCADA, a
municipal system or another Vigie process subscribing later still gets
the state of every alarm at once. Only the newest event of each alarm
waits to be sent: a broker outage cannot grow a backlog, and what is
published after it is the state now. The publisher is an actor with
``run()`` and ``stop()``, reconnecting with back-off; it never runs on the
ingest path (the engine only hands it events).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiomqtt

from app.ingest.mqtt import TlsOptions, tls_context
from app.model import AlarmEvent
from app.tasks import Backoff

log = logging.getLogger(__name__)


def topic_level(text: str) -> str:
    """Return text usable as MQTT topic levels (no wildcards; a rule name's slashes kept out)."""
    return text.replace("+", "_").replace("#", "_").replace("/", "_") or "_"


class AlarmTopicPublisher:
    """Publishes the newest state of each alarm, retained, under ``<prefix>/alarms/...``."""

    def __init__(self, prefix: str, *, host: str, port: int, client_id: str, username: str | None = None,
                 password: str | None = None, tls: TlsOptions | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.host, self.port = host, port
        self.client_id = client_id
        self._username, self._password, self._tls = username, password, tls
        self._pending: dict[str, AlarmEvent] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._backoff = Backoff(0.2, 10.0)
        self.published = 0
        self.connected = False
        self.last_error: str | None = None

    def topic(self, event: AlarmEvent) -> str:
        """Return the topic of an alarm's state."""
        return f"{self.prefix}/alarms/{topic_level(event.rule)}/{event.key}"

    def accept(self, event: AlarmEvent) -> None:
        """Take an event (an engine subscriber: never blocks; an alarm's newer event replaces its older one)."""
        self._pending.pop(event.alarm_id, None)
        self._pending[event.alarm_id] = event
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped; reconnect with back-off."""
        while not self._stopping.is_set():
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                          username=self._username, password=self._password,
                                          tls_context=tls_context(self._tls) if self._tls else None,
                                          timeout=10) as client:
                    self.connected = True
                    self._backoff.reset()
                    await self._publish_until_stopped(client)
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                if self.last_error is None or str(exc) != self.last_error:
                    log.warning("alarm topic publisher: broker %s:%s: %s", self.host, self.port, exc)
                self.last_error = str(exc)
                try:
                    await asyncio.wait_for(self._stopping.wait(), self._backoff.next())
                except TimeoutError:
                    pass
        self.connected = False

    async def _publish_until_stopped(self, client: aiomqtt.Client) -> None:
        while True:
            await self._send_pending(client)
            if self._stopping.is_set():
                return
            stop = asyncio.ensure_future(self._stopping.wait())
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (stop, wake):
                    f.cancel()
                await asyncio.gather(stop, wake, return_exceptions=True)

    async def _send_pending(self, client: aiomqtt.Client) -> None:
        self._wake.clear()
        while self._pending:
            alarm_id = next(iter(self._pending))
            event = self._pending[alarm_id]
            await client.publish(self.topic(event), json.dumps(self.payload(event), default=str), qos=1,
                                 retain=True)
            if self._pending.get(alarm_id) is event:  # not replaced while it was being sent
                del self._pending[alarm_id]
            self.published += 1

    @staticmethod
    def payload(event: AlarmEvent) -> dict[str, Any]:
        """Return what the topic carries: the event, which is also the alarm's state now."""
        return event.as_dict()

    async def stop(self) -> None:
        """Send what is pending (if connected) and return."""
        self._stopping.set()

    def health(self) -> dict[str, Any]:
        return {"topic": f"{self.prefix}/alarms/#", "connected": self.connected, "published_total": self.published,
                "pending": len(self._pending), "last_error": self.last_error}
