"""In-process fan-out from ingest sources to the consumers of readings.

Every batch goes first to the alarm engine, then to the live cache, then to
the store writer's queue, so that a storage backlog can never delay an alarm
or a live view. Consumers take a whole batch in one synchronous call: the
ingest path never awaits per reading, and a consumer that raises is logged
and skipped without starving the ones after it.

The store consumer may also say when readings are durable (the store
writer's watermark, :class:`Durability`): ``hub.durability`` lets a source
acknowledge its peer only then. Without one (tests with a collecting
consumer), a source acknowledges on arrival.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from app.model import Reading

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """Anything that takes batches of readings without blocking."""

    def accept(self, batch: Sequence[Reading]) -> None:
        """Take a batch of readings; must not block or await."""


@runtime_checkable
class Durability(Protocol):
    """A consumer that says when the readings it took are durable (the store writer).

    ``accepted`` is the ticket of the last batch taken; readings become
    durable oldest first, and ``durable`` counts them.
    """

    accepted: int
    durable: int

    async def wait_durable(self, ticket: int) -> None:
        """Return once every reading up to ``ticket`` is durable."""

    def add_durable_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(durable)`` as the durable count grows; return the remover."""

    def flush_soon(self) -> None:
        """Make what is pending durable now rather than at the next flush tick."""


class Hub:
    """Hand each batch to the alarm engine, the live cache and the store writer."""

    def __init__(
        self,
        *,
        alarms: Consumer | None = None,
        live: Consumer | None = None,
        store: Consumer | None = None,
    ) -> None:
        # The order is the contract: alarms, live view, then storage.
        self._consumers: list[Consumer] = [c for c in (alarms, live, store) if c is not None]
        self.durability: Durability | None = store if isinstance(store, Durability) else None
        self.published = 0

    def add(self, consumer: Consumer) -> None:
        """Append a consumer after the built-in ones (tests, exporters)."""
        self._consumers.append(consumer)

    def publish(self, batch: Sequence[Reading]) -> None:
        """Fan a batch out to every consumer, in order."""
        if not batch:
            return
        self.published += len(batch)
        for consumer in self._consumers:
            try:
                consumer.accept(batch)
            except Exception:
                log.exception("consumer %r failed on a batch of %d readings", consumer, len(batch))
