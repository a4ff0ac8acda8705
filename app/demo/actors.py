"""How the demo's pieces start and stop beside the runtime (``run_server``'s extras)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SimulatorActor:
    """Run simulators (anything with ``run()`` and ``stop()``) as a task with a start/stop life."""

    def __init__(self, sims: Any) -> None:
        self.sims = sims
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.sims.run(), name="simulators")

    async def stop(self) -> None:
        await self.sims.stop()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


class StartedInBackground:
    """Start a slow piece without holding up the rest: the web page need not wait for it.

    The simulated PLC's asyncua server builds the standard OPC-UA address
    space when it starts: 2 s on a quiet 2-core machine, 7 s on a busy one,
    which held the demo's first page back that long. Vigie's OPC-UA source
    already retries until its server answers, as it must for a real PLC, so
    the PLC can come up beside the web server instead of before it.
    """

    def __init__(self, actor: Startable, name: str) -> None:
        self.actor = actor
        self.name = name
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.actor.start(), name=f"start-{self.name}")
        self.task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s did not start: %s", self.name, task.exception())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.actor.stop()
