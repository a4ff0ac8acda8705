"""The live cache: the recent past of every series, in shared ring buffers.

Ingest writes into it once per reading; browser sessions read from it on
their own periodic callbacks (pull, never push), so the number of viewers
can never slow ingest down. Each series keeps a fixed-size ring of times
and values plus its latest value, unit, quality and tags. A monotonically
growing sequence number per series lets a session ask for "what is new
since I last looked" without copying the whole ring.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.model import LatestValue, Reading

INITIAL_SIZE = 64


class SeriesRing:
    """A fixed-capacity ring of (time_ns, value) for one series."""

    __slots__ = ("capacity", "device", "metric", "quality", "seq", "source", "tags", "times", "unit", "usual",
                 "values")

    def __init__(self, device: str, metric: str, capacity: int) -> None:
        self.device = device
        self.metric = metric
        self.capacity = capacity
        # Start small and double up to capacity: most series of a large fleet are sparse,
        # and 3,600 preallocated points per series cost 56 KiB each (275 MiB for 5,000).
        size = min(INITIAL_SIZE, capacity)
        self.times = np.zeros(size, dtype=np.int64)
        self.values = np.full(size, np.nan)
        self.seq = 0  # how many points were ever appended
        self.unit = ""
        self.quality = "good"
        self.tags: dict[str, str] = {}
        self.source = ""  # the source of the newest reading (its expected_interval_s says when it is silent)
        self.usual: tuple[int, float | None] | None = None  # (seq, usual interval) once asked

    def append(self, r: Reading) -> None:
        """Add one reading (out-of-order readings are kept in arrival order)."""
        size = len(self.times)
        if self.seq == size and size < self.capacity:
            self._grow()
            size = len(self.times)
        i = self.seq % size
        self.times[i] = r.time_ns
        self.values[i] = r.value
        self.seq += 1
        self.unit = r.unit or self.unit
        self.quality = r.quality
        self.tags = r.tags
        self.source = r.source

    def _grow(self) -> None:
        size = min(len(self.times) * 2, self.capacity)
        self.times = np.concatenate([self.times, np.zeros(size - len(self.times), dtype=np.int64)])
        self.values = np.concatenate([self.values, np.full(size - len(self.values), np.nan)])

    def since(self, seq: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Return the points appended after sequence number ``seq`` and the new one."""
        start = max(seq, self.seq - self.capacity)
        if start >= self.seq:
            return self.times[:0], self.values[:0], self.seq
        idx = np.arange(start, self.seq) % len(self.times)
        return self.times[idx], self.values[idx], self.seq

    def window(self, start_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the ring's points in arrival order, optionally from ``start_ns``."""
        times, values, _ = self.since(0)
        if start_ns is not None:
            keep = times >= start_ns
            return times[keep], values[keep]
        return times, values

    def usual_interval_s(self, points: int = 16) -> float | None:
        """Return the median gap between the last ``points`` readings (None under 3 readings).

        How often the series usually reports: the overview calls a device
        silent after a few of these without a reading. Kept until the next
        reading (a silent series, the one that matters, is not computed again).
        """
        cached = self.usual
        if cached is not None and cached[0] == self.seq:
            return cached[1]
        size = len(self.times)
        n = min(self.seq, size, points)
        value = None
        if n >= 3:
            start = (self.seq - n) % size
            raw = (self.times[start:start + n].tolist() if start + n <= size
                   else self.times[start:].tolist() + self.times[:start + n - size].tolist())
            raw.sort()
            gaps = [b - a for a, b in itertools.pairwise(raw) if b > a]
            value = statistics.median(gaps) / 1e9 if gaps else None
        self.usual = (self.seq, value)
        return value

    def latest(self) -> LatestValue | None:
        """Return the newest point, or None when empty."""
        if not self.seq:
            return None
        i = (self.seq - 1) % len(self.times)
        return LatestValue(self.device, self.metric, int(self.times[i]), float(self.values[i]), self.quality,
                           self.unit, self.tags)


class LiveCache:
    """Per-series rings shared by every session of the process."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self._rings: dict[str, SeriesRing] = {}
        self.version = 0  # grows with every accepted batch: a cheap "anything new?" check
        # For the pulse (app/pulse.py): set on every batch, with the devices that changed since
        # the pulse last took them. Setting an event with no waiter is all ingest pays.
        self.changed = asyncio.Event()
        self._changed_devices: set[str] = set()

    def accept(self, batch: Sequence[Reading]) -> None:
        """Append a batch (called by the hub, on the ingest path).

        On the event loop's thread only, as every ingest source runs: the
        ``changed`` event is an asyncio one.
        """
        rings = self._rings
        changed = self._changed_devices.add
        for r in batch:
            ring = rings.get(r.key)
            if ring is None:
                ring = rings[r.key] = SeriesRing(r.device, r.metric, self.capacity)
            ring.append(r)
            changed(r.device)
        self.version += 1
        self.changed.set()

    def take_changed(self) -> set[str]:
        """Return the devices with new readings since the last call, and start a new set."""
        out, self._changed_devices = self._changed_devices, set()
        return out

    def get(self, key: str) -> SeriesRing | None:
        """Return the ring of a series, if it was seen."""
        return self._rings.get(key)

    def keys(self) -> list[str]:
        """Return every series key seen, sorted."""
        return sorted(self._rings)

    def latest(self) -> list[LatestValue]:
        """Return the latest value of every series, sorted by key."""
        out = []
        for key in sorted(self._rings):
            v = self._rings[key].latest()
            if v is not None:
                out.append(v)
        return out

    def health(self) -> dict[str, Any]:
        """Return the number of series held."""
        return {"series": len(self._rings), "capacity_per_series": self.capacity}
