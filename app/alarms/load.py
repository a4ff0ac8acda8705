"""Alarm-load figures, ISA-18.2 / EEMUA 191 style: is the alarm system usable by the people on duty?

From the journal's "raised" events of a period and the alarms shown now:
alarms per hour and the busiest 10 minutes (EEMUA 191 calls under one alarm
per 10 minutes manageable, over 10 in the first 10 minutes of an upset a
flood), the most frequent rules (the "bad actors" that make most of the
load), chattering alarms (raised again and again within a short time) and
stale ones (shown for days).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

NS = 1_000_000_000
CHATTER_WINDOW_S = 60
CHATTER_RAISES = 3
STALE_S = 86400


def alarm_load(events: Iterable[dict[str, Any]], shown: Iterable[dict[str, Any]], start_ns: int, end_ns: int,
               *, top: int = 10) -> dict[str, Any]:
    """Return the load figures of ``[start, end)`` (journal rows) and the alarms shown now (console rows)."""
    raised = sorted((e for e in events if e.get("kind") == "raised" and not e.get("shadow")
                     and start_ns <= e["time_ns"] < end_ns), key=lambda e: e["time_ns"])
    hours = max((end_ns - start_ns) / (3600 * NS), 1 / 6)
    per_10_min: Counter[int] = Counter(e["time_ns"] // (600 * NS) for e in raised)
    by_rule: Counter[str] = Counter(e["rule"] for e in raised)
    times: dict[str, list[int]] = defaultdict(list)
    for e in raised:
        times[e["alarm_id"]].append(e["time_ns"])
    chattering = []
    for alarm_id, ts in times.items():
        worst = max((sum(1 for u in ts[i:] if u - t < CHATTER_WINDOW_S * NS) for i, t in enumerate(ts)), default=0)
        if worst >= CHATTER_RAISES:
            chattering.append({"alarm_id": alarm_id, "raises": len(ts), "most_in_a_minute": worst})
    stale = [{"alarm_id": a["alarm_id"], "since_ns": a["time_ns"], "state": a["state"],
              "days": round((end_ns - a["time_ns"]) / (86400 * NS), 1)}
             for a in shown if a.get("active") and a.get("time_ns") and end_ns - a["time_ns"] > STALE_S * NS]
    return {
        "raised": len(raised),
        "per_hour": round(len(raised) / hours, 2),
        "busiest_10_min": max(per_10_min.values(), default=0),
        "top_rules": by_rule.most_common(top),
        "chattering": sorted(chattering, key=lambda c: -c["most_in_a_minute"]),
        "stale": sorted(stale, key=lambda s: s["since_ns"]),
    }
