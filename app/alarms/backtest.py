"""Test a rule on history: replay stored readings through the live engine's own code.

The replay feeds an :class:`~app.alarms.engine.AlarmEngine` holding only
the rule, with a clock that follows the readings' times and ticks every
``tick_s`` between them (so silences and delays end when they would have),
and collects its events. Nothing is notified and no state is shared with
the running engine. :func:`summarize` turns the events into what the
editor shows: each alarm's start, end and duration, and alarms per day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.alarms.engine import AlarmEngine
from app.alarms.rules import AlarmRule
from app.model import AlarmEvent, Reading

NS = 1_000_000_000


class ReplayClock:
    """A clock set by the replay, read by the engine."""

    def __init__(self, t_ns: int = 0) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns


def replay(rule: AlarmRule, readings: Iterable[Reading], *, tick_s: float = 1.0,
           end_ns: int | None = None) -> list[AlarmEvent]:
    """Return the events the rule would have raised on ``readings`` (in time order)."""
    clock = ReplayClock()
    engine = AlarmEngine([rule], clock=clock, log_events=False)
    events: list[AlarmEvent] = []
    engine.subscribe(events.append)
    step = max(1, int(tick_s * NS))
    next_tick: int | None = None

    def tick_until(limit_ns: int, inclusive: bool) -> None:
        nonlocal next_tick
        while next_tick is not None and (next_tick < limit_ns or (inclusive and next_tick == limit_ns)):
            due = engine.next_due()
            if due is None or due > limit_ns:
                # Nothing can happen before the limit: jump the grid there.
                gap = limit_ns - next_tick
                next_tick += (gap // step + (1 if gap % step or inclusive else 0)) * step
                return
            if due > next_tick:  # jump to the first grid tick at or after the due time
                next_tick += -(-(due - next_tick) // step) * step
                continue
            clock.t_ns = next_tick
            engine.tick(next_tick)
            next_tick += step

    for r in readings:
        if next_tick is not None and next_tick < r.time_ns:
            tick_until(r.time_ns, inclusive=False)
        clock.t_ns = r.time_ns
        engine.accept([r])
        if next_tick is None:
            next_tick = r.time_ns + step
    if end_ns is not None:
        tick_until(end_ns, inclusive=True)
    return events


@dataclass(frozen=True, slots=True)
class Episode:
    """One alarm as the backtest saw it: a series over its limit from start to end (None: still at the end)."""

    key: str
    start_ns: int
    end_ns: int | None
    severity: str
    message: str

    @property
    def duration_s(self) -> float | None:
        return None if self.end_ns is None else (self.end_ns - self.start_ns) / NS


def summarize(events: list[AlarmEvent], start_ns: int, end_ns: int) -> dict[str, Any]:
    """Return the episodes (raise to clear), their count per day and the longest one."""
    open_: dict[str, AlarmEvent] = {}
    episodes: list[Episode] = []
    for e in events:
        if e.kind == "raised":
            open_[e.key] = e
        elif e.kind == "cleared" and e.key in open_:
            raised = open_.pop(e.key)
            episodes.append(Episode(e.key, raised.time_ns, e.time_ns, raised.severity, raised.message))
    episodes += [Episode(k, e.time_ns, None, e.severity, e.message) for k, e in open_.items()]
    episodes.sort(key=lambda ep: ep.start_ns)
    days = max((end_ns - start_ns) / (86400 * NS), 1 / 24)
    durations = [ep.duration_s for ep in episodes if ep.duration_s is not None]
    return {"episodes": episodes, "count": len(episodes), "per_day": len(episodes) / days,
            "longest_s": max(durations) if durations else None,
            "total_s": sum(durations)}


async def backtest_on_history(rule: AlarmRule, store: Any, start_ns: int, end_ns: int, *, max_series: int = 20,
                          tick_s: float = 1.0) -> dict[str, Any]:
    """Replay the stored history of every series the rule targets (up to ``max_series``) through it.

    Returns the summary (episodes, count, per day), the series tested and
    those left out, and each series' points (for drawing the episodes over them).
    """
    targeted = sorted((s for s in await store.series() if rule.targets(s.key, s.tags)), key=lambda s: s.key)
    tested, points, readings = targeted[:max_series], {}, []
    for info in tested:
        rows = await store.raw(info.key, start_ns, end_ns)
        points[info.key] = rows
        readings += [Reading(info.device, info.metric, t, v, q, info.unit, "history", dict(info.tags))
                     for t, v, q in rows]
    readings.sort(key=lambda r: r.time_ns)
    events = replay(rule, readings, tick_s=tick_s, end_ns=end_ns)
    return {"summary": summarize(events, start_ns, end_ns), "events": events,
            "series": [s.key for s in tested], "left_out": [s.key for s in targeted[max_series:]],
            "points": points, "readings": len(readings)}
