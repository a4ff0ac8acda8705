"""What every ingest source shares: a name, a run/stop life, health.

A source is an actor: ``run()`` loops until ``stop()`` is called, reconnecting
on its own when its peer goes away, and hands batches of readings to the hub.
It registers under a short ``source_type`` (``mqtt``, ``opcua``...) so the
config and the health page can name it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from app.hub import Hub
from app.ingest.deadletters import PREVIEW_BYTES, DeadLetters
from app.model import Reading, ReadingScreen

log = logging.getLogger(__name__)


class ConnectionState:
    """Connection states a source reports as health."""

    STARTING = "starting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class RateMeter:
    """Readings per second over the last few seconds, counted in one-second buckets as they arrive.

    Counting on arrival (not when health is read) gives the rate of the last
    ``window_s`` seconds to the first probe, and to one that reads rarely.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._started = time.monotonic()
        self._buckets: deque[list[int]] = deque()  # [whole second, readings], oldest first
        self.total = 0

    def add(self, n: int) -> None:
        """Count ``n`` more readings (once per batch, on the ingest path: a few operations)."""
        self.total += n
        second = int(time.monotonic())
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += n
            return
        buckets.append([second, n])
        while buckets[0][0] < second - self.window_s - 1:
            buckets.popleft()

    def rate(self) -> float:
        """Return readings per second over the last ``window_s`` seconds (since start, when younger)."""
        now = time.monotonic()
        first = int(now) - int(self.window_s)  # whole seconds: the window's first bucket, up to the current one
        count = sum(n for second, n in self._buckets if second >= first)
        return count / max(1.0, now - max(self._started, first))


class Source:
    """Base class of ingest sources."""

    source_type: ClassVar[str] = ""

    def __init__(self, name: str, hub: Hub) -> None:
        self.name = name
        self.hub = hub
        self.dead = DeadLetters(name)
        self.meter = RateMeter()
        self.screen = ReadingScreen()
        self.state_listeners: list[Callable[[Source, str, str | None], None]] = []  # e.g. alarm inhibition
        # Devices the source itself reports dead or back while it stays connected (Sparkplug deaths):
        # listener(source, device, online, reason), e.g. the alarm engine's per-device inhibition.
        self.device_listeners: list[Callable[[Source, str, bool, str | None], None]] = []
        self.state = ConnectionState.STARTING
        self.last_error: str | None = None
        self.last_error_ns: int | None = None
        self.previous_error: str | None = None
        """The last error cleared by :meth:`clear_error` (a source that clears on reconnect), kept for health."""
        self.previous_error_ns: int | None = None
        self._stopping = asyncio.Event()

    def publish(self, batch: Sequence[Reading]) -> None:
        """Screen a batch, dead-letter what no store can hold, hand the rest to the hub and count it.

        This is the edge every source shares: one reading with a lone
        surrogate in its name or a NaN value is refused here with its reason,
        so it can never make the store refuse the batch of good readings it
        would have been written with.
        """
        if batch:
            self.hand_over(self.screened(batch, self.dead))

    def screened(self, batch: Sequence[Reading], dead: DeadLetters) -> list[Reading]:
        """Return the readings of a batch a store can hold; dead-letter the others in ``dead`` with the reason."""
        good, bad = self.screen.split(batch)
        for r, reason in bad:
            dead.add(f"{self.name} {r.device!a}/{r.metric!a}", "invalid_reading", reason, ascii(r)[:PREVIEW_BYTES])
        return good

    def hand_over(self, good: Sequence[Reading]) -> None:
        """Hand readings already screened to the hub and count them."""
        if good:
            self.meter.add(len(good))
            self.hub.publish(good)

    def set_state(self, state: str, error: str | None = None) -> None:
        """Record a connection state change, logging transitions once."""
        changed = state != self.state
        if changed:
            self.log_state_change(state, error)
        self.state = state
        if error:
            self.last_error = error
            self.last_error_ns = time.time_ns()
        if changed:
            for listener in self.state_listeners:
                try:
                    listener(self, state, error)
                except Exception:
                    log.exception("source state listener %r failed", listener)

    def set_device_online(self, device: str, online: bool, reason: str | None = None) -> None:
        """Tell the device listeners that one of this source's devices died or came back."""
        for listener in self.device_listeners:
            try:
                listener(self, device, online, reason)
            except Exception:
                log.exception("device state listener %r failed", listener)

    def log_state_change(self, state: str, error: str | None) -> None:
        """Log a state transition at INFO (a source that logs its own outages overrides this)."""
        log.info("%s %s: %s%s", self.source_type, self.name, state, f" ({error})" if error else "")

    def clear_error(self) -> None:
        """Move ``last_error`` (if any) to ``previous_error``, after a recovery: health shows no current error."""
        if self.last_error is not None:
            self.previous_error, self.previous_error_ns = self.last_error, self.last_error_ns
        self.last_error = self.last_error_ns = None

    async def run(self) -> None:
        """Ingest until stopped."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Ask ``run()`` to return; it returns after closing its connection."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Return whether stop was requested."""
        return self._stopping.is_set()

    async def sleep_or_stop(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; return True when stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def health(self) -> dict[str, Any]:
        """Return connection state, rate and dead letters."""
        return {
            "type": self.source_type,
            "state": self.state,
            "readings_total": self.meter.total,
            "readings_per_s": round(self.meter.rate(), 1),
            "dead_letters": self.dead.health(),
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "previous_error": self.previous_error,
            "previous_error_ns": self.previous_error_ns,
        }

