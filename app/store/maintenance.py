"""A store's background task: the embedded store's compaction, rollups and retention, InfluxDB's rollups and retention.

Owned by the store: its ``open()`` starts it, its ``close()`` stops it and
awaits the pass in progress (a blocking pass runs in a worker thread, an
async one on the loop; neither is abandoned half-way, and if one were, each
store's design still leaves it readable). It runs a pass when woken (the hot table grew past
``compact_rows``) or every ``interval_s``. A pass that fails is logged, its
error kept for health(), and retried on the next tick with capped back-off;
the store keeps serving reads and writes from the hot table meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Maintenance:
    """Runs ``pass_`` on demand or every ``interval_s``: in a worker thread if blocking, on the loop if async."""

    def __init__(self, pass_: Callable[[], dict[str, Any]] | Callable[[], Awaitable[dict[str, Any]]],
                 interval_s: float, name: str = "embedded-store-maintenance") -> None:
        self.name = name
        self._pass = pass_
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running = asyncio.Lock()  # the task and an explicit run_once() never overlap
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_pass: dict[str, Any] = {}
        self.last_pass_at: float | None = None

    def start(self) -> None:
        """Start the task on the running loop (from the store's open())."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def poke(self) -> None:
        """Ask for a pass soon (the hot table is big enough to compact)."""
        self._wake.set()

    async def run_once(self) -> dict[str, Any]:
        """Run one pass now and return what it did; raise what it raised."""
        async with self._running:
            try:
                if inspect.iscoroutinefunction(self._pass):
                    result = await self._pass()
                else:
                    result = await asyncio.to_thread(self._pass)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            self.passes += 1
            self.last_error = None
            self.last_pass = result
            self.last_pass_at = time.time()
            return result

    async def stop(self) -> None:
        """Stop the task, letting the pass in progress finish."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = self.interval_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                await self.run_once()
                delay = self.interval_s
            except Exception:
                log.exception("%s failed (retrying)", self.name)
                delay = min(max(1.0, delay * 2), 300.0)

    def health(self) -> dict[str, Any]:
        """Return passes, failures, the last error and what the last pass did."""
        return {"passes": self.passes, "failures": self.failures, "last_error": self.last_error,
                "last_pass": self.last_pass,
                "last_pass_age_s": None if self.last_pass_at is None else round(time.time() - self.last_pass_at, 1)}
