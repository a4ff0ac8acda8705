"""Long-running work: racing it against a stop request, and backing off between attempts.

Every actor (ingest sources, simulators) runs its work until it ends by
itself or ``stop()`` is called; both tasks are then cancelled and awaited,
so nothing is left running and nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def until_stopped(work: Coroutine[Any, Any, Any], stopping: asyncio.Event, name: str) -> asyncio.Task:
    """Run ``work`` until it returns or ``stopping`` is set; return its (finished) task.

    The task is cancelled when the stop came first; read its outcome with
    :func:`raise_failure` or ``task.exception()``.
    """
    task = asyncio.create_task(work, name=name)
    stop = asyncio.create_task(stopping.wait(), name=f"{name}-stop")
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stop):
            t.cancel()
        await asyncio.gather(task, stop, return_exceptions=True)
    return task


def raise_failure(task: asyncio.Task) -> None:
    """Re-raise the exception a finished task ended with, if any."""
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class Backoff:
    """Capped exponential back-off for reconnect loops."""

    def __init__(self, initial: float = 0.2, cap: float = 10.0) -> None:
        self.initial = initial
        self.cap = cap
        self.current = initial

    def next(self) -> float:
        """Return the delay to wait now, and grow it for next time."""
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay after a success."""
        self.current = self.initial
