"""Deterministic readings for the history tests: several series, days, late points and overwrites."""

from __future__ import annotations

import random

from app.model import Reading

MINUTE = 60 * 10**9
DAY = 86_400 * 10**9
T0 = 20_000 * DAY  # a UTC midnight in 2024
SERIES = [("pump-1", "flow"), ("pump-2", "flow"), ("tank", "level")]


def first_set(days: int = 3) -> list[Reading]:
    """Three series, one reading a minute for ``days`` days, interleaved by time."""
    rng = random.Random(1)
    return [Reading(d, m, T0 + i * MINUTE, round(rng.uniform(0, 100), 3))
            for i in range(days * 1440) for d, m in SERIES]


def second_set() -> list[Reading]:
    """Readings that overwrite some of the first set, repeat some unchanged, and add late and new ones."""
    rng = random.Random(2)
    first = first_set()
    out = [Reading(r.device, r.metric, r.time_ns, r.value + 1000) for r in rng.sample(first, 500)]  # corrected
    out += rng.sample(first, 300)  # a replayed spool: the same points again
    out += [Reading("pump-1", "flow", T0 + i * MINUTE + 30 * 10**9, -5.0) for i in range(0, 3 * 1440, 97)]  # late
    out += [Reading("tank", "level", T0 + 3 * DAY + i * MINUTE, 50.0 + i) for i in range(600)]  # new
    return out


def expected(*sets: list[Reading]) -> dict[str, dict[int, float]]:
    """Return the last value written per series and time, as the store must keep them."""
    out: dict[str, dict[int, float]] = {}
    for batch in sets:
        for r in batch:
            out.setdefault(r.key, {})[r.time_ns] = r.value
    return out
