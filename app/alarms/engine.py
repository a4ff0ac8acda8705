"""Threshold alarms: rules evaluated on every batch, before the live cache or the store see it.

A rule watches the series matching its pattern (``dam-*/water_level``) and
raises an alarm when a reading goes above ``above`` or below ``below``; the
alarm clears once the value is back inside by ``hysteresis``, so a value
hovering at the limit does not raise and clear on every reading. Readings of
bad quality neither raise nor clear: a failing sensor is not a flood.

The engine holds what is active now and the last transitions; dashboards
read it (tile and status colours, limit lines, the active alarms list, the
overview's worst alarm per site). Acknowledgement, "no data" and slope rules,
and notifications are for the alarms issue: this is the seat they build on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from app.model import Reading

log = logging.getLogger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")
# What operators see: low and medium are warnings (orange), high and critical alarms (red).
SEVERITY_STATE = {"low": "warning", "medium": "warning", "high": "alarm", "critical": "alarm"}
STATE_COLOR = {"warning": "#ef6c00", "alarm": "#c62828"}
STATE_RANK = {None: 0, "ok": 0, "warning": 1, "alarm": 2}


@dataclass(frozen=True, slots=True)
class Rule:
    """One threshold rule from the config's ``alarms.rules``."""

    name: str
    series: str  # device/metric; globs allowed
    severity: str = "high"
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    message: str = ""

    @property
    def state(self) -> str:
        """Return what an alarm of this rule shows as: warning or alarm."""
        return SEVERITY_STATE[self.severity]

    def crossed(self, value: float) -> bool:
        """Return whether a value is beyond the rule's limit."""
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    def back_inside(self, value: float) -> bool:
        """Return whether a value is back inside the limit by the hysteresis (the alarm clears)."""
        return ((self.above is None or value <= self.above - self.hysteresis)
                and (self.below is None or value >= self.below + self.hysteresis))


@dataclass(slots=True)
class Alarm:
    """An active alarm: a rule crossed by one series."""

    rule: Rule
    key: str
    device: str
    site: str | None
    raised_ns: int
    value: float
    unit: str = ""
    above: bool = True  # which limit was crossed (a rule may have both)
    raised_value: float = field(init=False)  # the value that crossed it (the message says it; ``value`` moves on)

    def __post_init__(self) -> None:
        self.raised_value = self.value

    def as_dict(self) -> dict[str, Any]:
        """Return the row the dashboards and the API show."""
        rule, unit = self.rule, f" {self.unit}" if self.unit else ""
        side, limit = (">", rule.above) if self.above else ("<", rule.below)
        message = rule.message or f"{rule.name}: {self.raised_value:g}{unit} ({side} {limit:g}{unit})"
        return {"time_ns": self.raised_ns, "severity": self.rule.severity, "series": self.key,
                "device": self.device, "site": self.site, "message": message, "state": "active",
                "rule": self.rule.name, "value": self.value}


class AlarmEngine:
    """Evaluates the rules on the ingest path; answers the dashboards' questions about alarm state."""

    def __init__(self, rules: Sequence[Rule], history: int = 200) -> None:
        self.rules = list(rules)
        self._rules_for: dict[str, tuple[Rule, ...]] = {}  # series key -> matching rules (cached per key)
        self._active: dict[tuple[str, str], Alarm] = {}  # (rule name, series key) -> alarm
        self.transitions: deque[dict[str, Any]] = deque(maxlen=history)
        self._last_ns: dict[str, int] = {}  # series key -> time of the newest reading evaluated
        self.raised_total = 0
        self.version = 0  # grows with every raise or clear: a cheap "anything changed?" for pages

    # -- ingest path ---------------------------------------------------------
    def rules_for(self, key: str) -> tuple[Rule, ...]:
        """Return the rules watching a series (patterns are matched once per series)."""
        rules = self._rules_for.get(key)
        if rules is None:
            rules = self._rules_for[key] = tuple(r for r in self.rules if fnmatchcase(key, r.series))
        return rules

    def accept(self, batch: Sequence[Reading]) -> None:
        """Evaluate a batch (the hub's first consumer: no alarm waits for storage or pages)."""
        rules_for, last_ns = self._rules_for, self._last_ns
        for r in batch:
            key = r.key
            rules = rules_for.get(key)
            if rules is None:
                rules = self.rules_for(key)
            if not rules or r.quality == "bad":
                continue
            # A late or back-filled reading (an import, a backlog) says nothing about now.
            if r.time_ns < last_ns.get(key, 0):
                continue
            last_ns[key] = r.time_ns
            for rule in rules:
                self._evaluate(rule, r, key)

    def _evaluate(self, rule: Rule, r: Reading, key: str) -> None:
        ident = (rule.name, key)
        alarm = self._active.get(ident)
        if alarm is None:
            if rule.crossed(r.value):
                above = rule.above is not None and r.value > rule.above
                alarm = Alarm(rule, key, r.device, r.tags.get("site"), r.time_ns, r.value, r.unit, above)
                self._active[ident] = alarm
                self.raised_total += 1
                self._transition("raised", alarm, r.time_ns)
        elif rule.back_inside(r.value):
            del self._active[ident]
            alarm.value = r.value
            self._transition("cleared", alarm, r.time_ns)
        else:
            alarm.value = r.value

    def _transition(self, what: str, alarm: Alarm, time_ns: int) -> None:
        self.version += 1
        row = {**alarm.as_dict(), "event": what, "event_ns": time_ns}
        self.transitions.append(row)
        log.warning("alarm %s: %s (%s, %s)", what, row["message"], alarm.key, alarm.rule.severity)

    # -- what pages ask ------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        """Return the active alarms as rows, newest first."""
        return sorted((a.as_dict() for a in self._active.values()), key=lambda a: a["time_ns"], reverse=True)

    def series_state(self, key: str) -> str | None:
        """Return ``ok`` / ``warning`` / ``alarm`` for a series with rules, None for one without."""
        if not self.rules_for(key):
            return None
        return self._worst(a for a in self._active.values() if a.key == key) or "ok"

    def device_state(self, device: str) -> str | None:
        """Return the worst state of a device's active alarms, None when it has none."""
        return self._worst(a for a in self._active.values() if a.device == device)

    def worst_for_site(self, site: str | None) -> dict[str, Any] | None:
        """Return the most severe (then newest) active alarm of a site (None: devices with no site), or None."""
        alarms = [a for a in self._active.values() if a.site == site]
        if not alarms:
            return None
        worst = max(alarms, key=lambda a: (SEVERITIES.index(a.rule.severity), a.raised_ns))
        return worst.as_dict()

    def limits(self, key: str) -> list[tuple[float, str, str]]:
        """Return the limit lines of a series' rules: (value, label, colour)."""
        out = []
        for rule in self.rules_for(key):
            color = STATE_COLOR[rule.state]
            out += [(limit, rule.name, color) for limit in (rule.above, rule.below) if limit is not None]
        return out

    @staticmethod
    def _worst(alarms) -> str | None:
        worst = None
        for a in alarms:
            if STATE_RANK[a.rule.state] > STATE_RANK[worst]:
                worst = a.rule.state
        return worst

    def health(self) -> dict[str, Any]:
        """Return rules, active alarms and raised total for the health endpoint."""
        return {"rules": len(self.rules), "active": len(self._active), "raised_total": self.raised_total}
