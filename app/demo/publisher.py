"""The life of a simulated MQTT publisher: connect, publish every period, reconnect, stop.

The demo's device simulators and its webcam share it; each subclass only
says what one connection publishes (``_publish_loop``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiomqtt

from app.tasks import Backoff, raise_failure, until_stopped

log = logging.getLogger(__name__)


class SimulatedPublisher:
    """Base of the demo publishers: ``run()`` until ``stop()``, reconnecting with back-off."""

    label = "simulator"  # for logs and task names
    client_prefix = "vigie-sim"

    def __init__(self, host: str, port: int, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, not {period_s}")
        self.host = host
        self.port = port
        self.period_s = period_s
        self.published = 0
        """Messages the broker acknowledged so far."""
        self.connected = False
        self.last_error: str | None = None
        """Why the last connection attempt failed or dropped, if one did."""
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Publish every period until ``stop()``; returns promptly once stopped."""
        try:
            work = await until_stopped(self._connect_loop(), self._stopping, self.label)
        finally:
            self.connected = False
        raise_failure(work)

    async def stop(self) -> None:
        """Ask ``run()`` to return (it cancels whatever it is waiting on)."""
        self._stopping.set()

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        """Publish on one connection until it fails (raises MqttError)."""
        raise NotImplementedError

    async def _connect_loop(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        failing = False
        while True:
            try:
                # Created here, inside the running loop, as aiomqtt requires.
                client = aiomqtt.Client(self.host, self.port, timeout=10,
                                        identifier=f"{self.client_prefix}-{uuid.uuid4().hex[:8]}")
                async with client:
                    self.connected, failing = True, False
                    backoff.reset()
                    log.info("%s publishing to %s:%s every %ss", self.label, self.host, self.port, self.period_s)
                    await self._publish_loop(client)
            except aiomqtt.MqttError as exc:
                was_connected, self.connected = self.connected, False
                self.last_error = str(exc)
                if was_connected:
                    log.warning("%s: lost MQTT broker %s:%s (%s), reconnecting", self.label, self.host, self.port,
                                exc)
                elif not failing:  # once per outage, not once per attempt
                    log.warning("%s: MQTT broker %s:%s unavailable (%s), retrying", self.label, self.host,
                                self.port, exc)
                failing = True
                await asyncio.sleep(backoff.next())
