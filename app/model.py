"""The vocabulary every part of Vigie speaks: readings, series and quality.

A reading is one value of one metric of one device at one instant. Ingest
sources produce them, the hub fans them out, the store, the live cache and
the alarm engine consume them. They are frozen and slotted because tens of
thousands are created per second on the ingest path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Quality(StrEnum):
    """OPC-UA style quality of a reading, reduced to its three classes."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


def series_key(device: str, metric: str) -> str:
    """Return the key that names one series across the platform."""
    return f"{device}/{metric}"


def now_ns() -> int:
    """Return the current UTC time in nanoseconds since the epoch."""
    return time.time_ns()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def datetime_to_ns(dt: datetime) -> int:
    """Return a datetime (naive means UTC) in ns since the epoch, exactly (integer arithmetic, to the µs)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICROSECOND * 1000


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric of one device at one instant (UTC, ns)."""

    device: str
    metric: str
    time_ns: int
    value: float
    quality: str = Quality.GOOD
    unit: str = ""
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series known to the store: identity, unit and descriptive tags."""

    device: str
    metric: str
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The last value a store or the live cache holds for a series."""

    device: str
    metric: str
    time_ns: int
    value: float
    quality: str = Quality.GOOD
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A range of a series reduced to buckets: min, mean and max per bucket.

    ``time_ns`` holds each bucket's start; empty buckets are left out.
    """

    key: str
    bucket_ns: int
    time_ns: list[int]
    min: list[float]
    mean: list[float]
    max: list[float]

    def __len__(self) -> int:
        return len(self.time_ns)
