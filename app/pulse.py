"""Wake live dashboards when data they show arrives, instead of polling on a timer.

A session polling the live cache on a 2 Hz timer sees a reading 0–500 ms
after it arrived (250 ms on average), and refreshes twice a second whether
anything it shows changed or not. The pulse waits for the live cache to
change, lets a burst settle (``coalesce_s``: one simulator tick or one
gateway's batch arrives over a few milliseconds), then wakes the dashboards
that show one of the devices that changed. A woken dashboard only schedules
a refresh on its own session's document (at most one per its
``refresh_ms``); the pulse itself never runs session code, and ingest only
sets an event, so viewers still cannot slow ingest down.

Measured with ``bench/sessions.py`` (bench/README.md): with the demo's
simulators publishing once a second, a "Flood dams" session refreshes about
once a second instead of twice, right after the data came.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import ClassVar, Protocol

from app.globs import literal, matches
from app.live import LiveCache

log = logging.getLogger(__name__)

class Interest:
    """Which devices a dashboard shows: exact names and glob patterns, each device matched once.

    :meth:`of` shares one instance (and its memo of matched devices) between
    every session of the same layout.
    """

    _shared: ClassVar[dict[tuple[str, ...], Interest]] = {}

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Interest:
        """Return the shared interest for these patterns."""
        key = tuple(sorted(set(patterns)))
        interest = cls._shared.get(key)
        if interest is None:
            if len(cls._shared) > 1000:  # layouts edited many times: start again
                cls._shared.clear()
            interest = cls._shared[key] = cls(key)
        return interest

    def __init__(self, patterns: Iterable[str]) -> None:
        pats = sorted(set(patterns))
        self.key = tuple(pats)
        self.exact = set(literal(pats))
        self.globs = [p for p in pats if p not in self.exact]
        self._known: dict[str, bool] = {}

    def wants(self, device: str) -> bool:
        """Return whether ``device`` is shown."""
        if device in self.exact:
            return True
        if not self.globs:
            return False
        known = self._known.get(device)
        if known is None:
            if len(self._known) > 100_000:  # a fleet's device names churn: keep the memo bounded
                self._known.clear()
            known = self._known[device] = matches(device, self.globs)
        return known

    def any_of(self, devices: Iterable[str]) -> bool:
        """Return whether any of ``devices`` is shown."""
        return any(self.wants(d) for d in devices)


class Listener(Protocol):
    """What the pulse wakes (a :class:`~app.dashboard.dashboard.Dashboard`)."""

    interest: Interest | None

    def wake(self) -> None:
        """Schedule a refresh soon; must not refresh here."""


class Pulse:
    """The process's one "live data changed" signal, fanned out to interested dashboards."""

    def __init__(self, live: LiveCache, *, coalesce_s: float = 0.02, filter_limit: int = 512) -> None:
        self.live = live
        self.coalesce_s = coalesce_s
        # Beyond this many devices changed in one pulse, every dashboard is woken without
        # checking (each refreshes at most once per its period anyway).
        self.filter_limit = filter_limit
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task | None = None
        self.pulses = 0
        self.wakes = 0
        self.errors = 0

    def subscribe(self, listener: Listener) -> None:
        """Wake ``listener`` when something it shows changes."""
        self._listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop waking ``listener`` (idempotent)."""
        self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        """How many dashboards are subscribed."""
        return len(self._listeners)

    def start(self) -> None:
        """Start the pulse on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-pulse")

    async def stop(self) -> None:
        """Stop the pulse and forget every listener."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._listeners.clear()

    async def _run(self) -> None:
        changed_event = self.live.changed
        while True:
            await changed_event.wait()
            await asyncio.sleep(self.coalesce_s)
            changed_event.clear()
            try:
                self.notify(self.live.take_changed())
            except Exception:  # never let one bad pulse end the task: dashboards would only idle-refresh
                self.errors += 1
                log.exception("live pulse failed; carrying on")

    @property
    def running(self) -> bool:
        """Whether the pulse task is alive."""
        return self._task is not None and not self._task.done()

    def notify(self, devices: set[str]) -> None:
        """Wake the listeners that show one of ``devices`` (all of them past ``filter_limit``)."""
        if not devices:
            return
        self.pulses += 1
        unfiltered = len(devices) > self.filter_limit
        decided: dict[tuple[str, ...], bool] = {}  # sessions of one layout show the same: decide once
        for listener in list(self._listeners):
            interest = listener.interest
            if not unfiltered and interest is not None:
                wanted = decided.get(interest.key)
                if wanted is None:
                    wanted = decided[interest.key] = interest.any_of(devices)
                if not wanted:
                    continue
            try:
                listener.wake()
                self.wakes += 1
            except Exception:  # a session torn down under us: drop it, keep the others
                log.exception("waking %r failed; unsubscribing it", listener)
                self._listeners.discard(listener)

    def health(self) -> dict[str, int | bool]:
        """Return whether it runs, how many dashboards listen, and how often they were woken."""
        return {"running": self.running, "listeners": len(self._listeners), "pulses_total": self.pulses,
                "wakes_total": self.wakes, "errors_total": self.errors}
