"""An MQTT broker inside the Vigie process, for the zero-install demo.

Why amqtt: the demo must run with nothing but ``pip install``; amqtt is a pure
Python broker that runs on our own event loop. It is slow (FIELD-NOTES), so
production and the tests use a real Mosquitto; this is only for the demo.

Why our own auth plugin: amqtt's ``AnonymousAuthPlugin`` marks every session
it lets in as anonymous, and amqtt neither keeps anonymous sessions after a
disconnect nor queues QoS 1 messages for them, so a persistent Vigie session
(``clean_session=False``) would lose whatever was published while Vigie
restarted. ``OpenAuthPlugin`` lets everyone in without that mark.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiomqtt
from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 5.0

_NOISY_LOGGERS = ("amqtt", "transitions")


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client, without marking it anonymous, so persistent sessions keep their queue."""

    async def authenticate(self, *, session: Session) -> bool:
        """Let the client in."""
        return True


class EmbeddedBroker:
    """amqtt's broker on the running loop: anonymous access, loopback only by default.

    MQTT 3.1.1 only: amqtt 0.12 never answers an MQTT 5 CONNECT (the client
    times out), so a source pointed at it must use protocol ``3.1.1``.
    Persistent sessions and their queued QoS 1 messages live in memory for
    ``session_expiry_s`` after a disconnect, and die with the process.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, session_expiry_s: int | None = 24 * 3600) -> None:
        self.host = host
        self.port = port
        self.session_expiry_s = session_expiry_s
        self._broker: Broker | None = None

    def _config(self) -> dict[str, Any]:
        # Only our auth plugin: amqtt's defaults add $SYS topics and packet/event loggers, which cost CPU.
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "session_expiry_interval": self.session_expiry_s,
            "plugins": {f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}": {}},
        }

    @property
    def running(self) -> bool:
        """Return whether the broker was started and not stopped."""
        return self._broker is not None

    async def start(self, timeout: float = 10.0) -> None:
        """Start listening and return once an MQTT client can connect.

        Raises ``OSError`` when the port cannot be bound (amqtt also logs its
        own traceback of it), and ``TimeoutError`` when no client gets a
        CONNACK before ``timeout``.
        """
        if self._broker is not None:
            return
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        broker = Broker(self._config())
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__ or exc
            raise OSError(f"embedded MQTT broker cannot listen on {self.host}:{self.port}: {cause}") from exc
        self._broker = broker
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        log.info("embedded MQTT broker listening on %s:%s", self.host, self.port)

    async def _wait_ready(self, timeout: float) -> None:
        # A real CONNECT/CONNACK round trip, so "started" means "serves MQTT", not just "socket bound".
        probe_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with aiomqtt.Client(probe_host, self.port, identifier=f"vigie-probe-{uuid.uuid4().hex[:8]}",
                                          timeout=2):
                    return
            except aiomqtt.MqttError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"embedded broker on {self.host}:{self.port} not ready: {exc}") from exc
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Close every session and the listener."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            # amqtt's shutdown has been seen waiting forever on a client handler (once in a few hundred
            # restarts): a stuck demo broker must not hang Ctrl-C. Free the port at least.
            log.warning("embedded MQTT broker on %s:%s did not shut down within %s s; closing its listeners",
                        self.host, self.port, SHUTDOWN_TIMEOUT_S)
            for server in getattr(broker, "_servers", {}).values():
                if getattr(server, "instance", None) is not None:
                    server.instance.close()
            # And drop its clients' connections, so they notice at once that the broker is gone instead of
            # after their next unanswered publish or keepalive (tests/test_simulate.py waited 10 s in vain).
            for _session, handler in list(getattr(broker, "_sessions", {}).values()):
                writer = getattr(getattr(handler, "writer", None), "_writer", None)
                if writer is not None:
                    writer.transport.abort()
            return
        log.info("embedded MQTT broker on %s:%s stopped", self.host, self.port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
