"""Small helpers shared by tests: collecting consumers, async polling, publishing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiomqtt

from app.model import Reading


class Collector:
    """A hub consumer that keeps every reading it is given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def accept(self, batch: Sequence[Reading]) -> None:
        self.readings.extend(batch)

    def by_key(self) -> dict[str, list[Reading]]:
        out: dict[str, list[Reading]] = {}
        for r in self.readings:
            out.setdefault(r.key, []).append(r)
        return out


async def until(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` (sync or async) on the loop until truthy, against a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def publish(host: str, port: int, messages: Iterable[tuple[str, bytes | str]], qos: int = 1,
                  **client_options: Any) -> None:
    """Publish messages at QoS 1 and return once the broker acknowledged them all.

    ``client_options`` go to ``aiomqtt.Client`` (``tls_context``, ``username``, ``password``).
    """
    async with aiomqtt.Client(host, port, identifier=None, **client_options) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=qos)
