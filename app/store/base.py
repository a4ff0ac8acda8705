"""The interface every storage engine implements.

Engines are registered by a short name (``engine_type``) so the config can
name them (``store: {engine: influx}``). Writes take whole batches; a write
that fails because the database cannot be reached raises
:class:`StoreUnavailable`, which the writer answers by retrying and spooling
to disk. Any other exception means the batch itself is bad.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from app.model import Envelope, LatestValue, Reading, SeriesInfo


class StoreUnavailable(Exception):
    """The database cannot be reached now; the write is worth retrying."""


class ReadingsRefused(Exception):
    """The engine stored a batch except these readings, which it can never store (each with its reason).

    Raised after the rest of the batch was written, so the writer
    dead-letters exactly these and counts the others as written.
    """

    def __init__(self, refused: Sequence[tuple[Reading, str]]) -> None:
        super().__init__(f"{len(refused)} readings refused: {refused[0][1] if refused else ''}")
        self.refused = list(refused)


class StoreEngine(ABC):
    """A place readings are written to and queried from."""

    engine_type: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[StoreEngine]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.engine_type:
            StoreEngine._registry[cls.engine_type] = cls

    @classmethod
    def engine_class(cls, name: str) -> type[StoreEngine]:
        """Return the engine registered under ``name``."""
        try:
            return cls._registry[name]
        except KeyError:
            known = ", ".join(sorted(cls._registry))
            raise ValueError(f"unknown store engine {name!r}; known: {known}") from None

    async def open(self) -> None:
        """Connect or open files; called once before the first write."""

    async def close(self) -> None:
        """Release connections and files."""

    @abstractmethod
    async def write(self, batch: Sequence[Reading]) -> None:
        """Store a batch; same series and timestamp overwrites.

        Raise :class:`StoreUnavailable` when the database cannot take it now,
        :class:`ReadingsRefused` when some readings can never be stored (the
        rest written), any other exception when the batch was refused.
        """

    @abstractmethod
    async def latest(self) -> list[LatestValue]:
        """Return the latest value of every series."""

    @abstractmethod
    async def series(self) -> list[SeriesInfo]:
        """Return every known series with its unit and tags."""

    @abstractmethod
    async def envelope(self, key: str, start_ns: int, end_ns: int, buckets: int) -> Envelope:
        """Return ``[start, end)`` of a series reduced to at most ``buckets`` buckets."""

    async def raw(self, key: str, start_ns: int, end_ns: int) -> list[tuple[int, float, str]]:
        """Return ``[start, end)`` of a series as (time_ns, value, quality), oldest first."""
        raise NotImplementedError

    async def count(self, key: str | None = None) -> int:
        """Return how many readings are stored (for one series, or all)."""
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """Return the engine's own state for the health endpoint."""
        return {"engine": self.engine_type}


def bucket_width_ns(start_ns: int, end_ns: int, buckets: int) -> int:
    """Return a bucket width that cuts ``[start, end)`` into at most ``buckets``."""
    span = max(end_ns - start_ns, 1)
    buckets = max(buckets, 1)
    width = -(-span // buckets)  # ceiling division
    # Round up to a whole millisecond so buckets align across engines.
    return max(1_000_000, -(-width // 1_000_000) * 1_000_000)
