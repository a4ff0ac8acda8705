"""One alarm's life, the ISA-18.2 way: the state machine between the condition and the operators.

An :class:`Alarm` is one rule on one series. Its condition (present or not,
after the on/off delays of :class:`Debounce`) comes from the rule; its state
(:class:`~app.model.AlarmState`) also follows the operators: acknowledge,
shelve, maintenance, rule disabled. Each change returns the
:class:`~app.model.AlarmEvent` that says so, and nothing else is touched:
the engine, the backtest and the tests drive the same functions.

    condition present:  normal -> unacknowledged;  returned-unack -> unacknowledged
    condition gone:     unacknowledged -> returned-unack;  acknowledged -> normal (latched: -> returned-unack)
    acknowledge:        unacknowledged -> acknowledged;  returned-unack -> normal
    shelve / suppress / out of service:  any -> shelved / suppressed / out of service;
    their end:          -> unacknowledged when the condition is present, else normal
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.alarms.rules import SEVERITIES, AlarmRule, Verdict
from app.model import AlarmEvent, AlarmState

NS = 1_000_000_000
_HELD = (AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE)


@dataclass(slots=True)
class Debounce:
    """On-delay and off-delay: a condition must persist before the alarm follows it."""

    active: bool = False  # the debounced condition
    since_ns: int | None = None  # when the raw condition started to differ from ``active``

    def step(self, raw: bool, t_ns: int, on_ns: int, off_ns: int) -> bool:
        """Feed the raw condition at ``t_ns``; return whether the debounced condition changed."""
        if raw == self.active:
            self.since_ns = None
            return False
        if self.since_ns is None:
            self.since_ns = t_ns
        if t_ns - self.since_ns >= (on_ns if raw else off_ns):
            self.active, self.since_ns = raw, None
            return True
        return False

    def due(self, t_ns: int, on_ns: int, off_ns: int) -> bool:
        """Return whether a pending change has waited its delay by ``t_ns`` (a clock tick)."""
        if self.since_ns is None:
            return False
        if t_ns - self.since_ns >= (off_ns if self.active else on_ns):
            self.active, self.since_ns = not self.active, None
            return True
        return False


@dataclass(slots=True)
class Alarm:
    """One rule on one series: its condition, its state and who did what."""

    rule: AlarmRule
    key: str
    device: str
    metric: str
    site: str | None = None
    unit: str = ""
    state: str = AlarmState.NORMAL
    debounce: Debounce | None = None
    level: str = ""
    severity: str = "high"
    value: float | None = None
    limit: float | None = None
    detail: dict[str, Any] | None = None
    raised_ns: int | None = None
    changed_ns: int = 0
    acked_by: str = ""
    acked_ns: int | None = None
    comment: str = ""
    shelved_until_ns: int | None = None
    held_reason: str = ""  # why shelved / suppressed / out of service
    text: str = ""  # the message as it was raised (the value that crossed; ``value`` moves on)
    v: Any = None  # the rule's parameter values (updated in place when the rule changes)

    def __post_init__(self) -> None:
        if self.debounce is None:
            self.debounce = Debounce()
        if self.v is None:
            self.v = self.rule.v

    @property
    def active(self) -> bool:
        """Return whether the (debounced) condition is present."""
        return self.debounce.active  # type: ignore[union-attr]

    @property
    def alarm_id(self) -> str:
        return f"{self.rule.name}|{self.key}"

    @property
    def shown(self) -> bool:
        """Return whether the alarm belongs on the console (anything but normal)."""
        return self.state != AlarmState.NORMAL

    # -- condition --------------------------------------------------------------------------------------
    def judge(self, verdict: Verdict, t_ns: int) -> AlarmEvent | None:
        """Follow a verdict of the rule at ``t_ns``; return the event when the alarm changed."""
        self.value = verdict.value if verdict.value is not None else self.value
        v = self.v
        changed = self.debounce.step(verdict.active, t_ns, int(v.on_delay_s * NS),  # type: ignore[union-attr]
                                     int(v.off_delay_s * NS))
        if verdict.active:
            severity = verdict.severity or v.severity
            escalated = self.active and not changed and _rank(severity) > _rank(self.severity)
            self.level, self.limit, self.detail = verdict.level, verdict.limit, verdict.detail
            if changed or escalated:
                self.severity = severity
                return self._condition(True, t_ns, "escalated" if escalated else "raised")
        elif self.active and not changed:
            return None  # waiting out the off-delay
        return self._condition(False, t_ns, "cleared") if changed else None

    def tick(self, t_ns: int) -> AlarmEvent | None:
        """Let the clock end a delay or a shelve at ``t_ns``; return the event when the alarm changed."""
        if self.state == AlarmState.SHELVED and self.shelved_until_ns is not None and t_ns >= self.shelved_until_ns:
            return self.release(AlarmState.SHELVED, t_ns, "unshelved", "shelve expired")
        v = self.v
        if self.debounce.due(t_ns, int(v.on_delay_s * NS), int(v.off_delay_s * NS)):  # type: ignore[union-attr]
            return self._condition(self.active, t_ns, "raised" if self.active else "cleared")
        return None

    def _condition(self, present: bool, t_ns: int, kind: str) -> AlarmEvent | None:
        previous = self.state
        if present:
            if kind == "raised":
                self.raised_ns = t_ns
                self.acked_by, self.acked_ns, self.comment = "", None, ""
            self.text = self.message(t_ns)
            if self.state not in _HELD:  # raised or escalated: somebody must see it (again)
                self.state = AlarmState.UNACKNOWLEDGED
        elif self.state == AlarmState.UNACKNOWLEDGED:
            self.state = AlarmState.RETURNED_UNACKNOWLEDGED
        elif self.state == AlarmState.ACKNOWLEDGED:
            self.state = AlarmState.RETURNED_UNACKNOWLEDGED if self.rule.latched else AlarmState.NORMAL
        self.changed_ns = t_ns
        return self.event(kind, previous, t_ns)

    # -- operators --------------------------------------------------------------------------------------
    def acknowledge(self, t_ns: int, user: str, comment: str = "") -> AlarmEvent | None:
        """Acknowledge: unacknowledged -> acknowledged, returned-unack -> normal; else nothing."""
        previous = self.state
        if previous == AlarmState.UNACKNOWLEDGED:
            self.state = AlarmState.ACKNOWLEDGED
        elif previous == AlarmState.RETURNED_UNACKNOWLEDGED:
            self.state = AlarmState.NORMAL
        else:
            return None
        self.acked_by, self.acked_ns, self.comment = user, t_ns, comment
        self.changed_ns = t_ns
        return self.event("acknowledged", previous, t_ns, user, comment)

    def hold(self, state: str, t_ns: int, user: str, reason: str, until_ns: int | None = None) -> AlarmEvent | None:
        """Shelve, suppress or take out of service (a stronger hold replaces a weaker one, never the reverse)."""
        previous = self.state
        if previous in _HELD and _HELD.index(previous) > _HELD.index(state):  # type: ignore[arg-type]
            return None
        self.state, self.held_reason = state, reason
        self.shelved_until_ns = until_ns if state == AlarmState.SHELVED else None
        self.changed_ns = t_ns
        kind = {AlarmState.SHELVED: "shelved", AlarmState.SUPPRESSED: "suppressed"}.get(state, "out_of_service")
        return self.event(kind, previous, t_ns, user, reason)

    def release(self, held: str, t_ns: int, kind: str, reason: str = "", user: str = "") -> AlarmEvent | None:
        """End a hold of kind ``held``: back to unacknowledged when the condition is present, else normal."""
        previous = self.state
        if previous != held:
            return None
        self.state = AlarmState.UNACKNOWLEDGED if self.active else AlarmState.NORMAL
        self.held_reason, self.shelved_until_ns = "", None
        if self.active:
            self.acked_by, self.acked_ns = "", None
        self.changed_ns = t_ns
        return self.event(kind, previous, t_ns, user, reason)

    # -- what it says -----------------------------------------------------------------------------------
    def message(self, t_ns: int) -> str:
        """Return the rule's text for this alarm now."""
        unit = f" {self.unit}" if self.unit else ""
        detail = self.detail or {}
        return self.rule.render(
            rule=self.rule.name, device=self.device, metric=self.metric, site=self.site or "",
            value=_fmt(self.value), unit=unit, limit=_fmt(self.limit), level=self.level,
            cmp="<" if self.level in ("L", "LL", "fall") else ">",
            time=datetime.fromtimestamp(t_ns / NS, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            **{"in": human_duration(detail["in_s"])} if "in_s" in detail else {},
        )

    def event(self, kind: str, previous: str, t_ns: int, user: str = "", comment: str = "") -> AlarmEvent:
        """Return the event of a change that just happened."""
        rule = self.rule
        text = self.text if kind in ("raised", "escalated") else self.message(t_ns)
        return AlarmEvent(kind, str(self.state), str(previous), rule.name, self.key, self.device, self.metric,
                          t_ns, self.severity, text, self.value, self.unit, self.limit, self.level,
                          self.site, rule.policy, rule.mode == "shadow", user, comment, self.raised_ns, self.active)

    def as_dict(self) -> dict[str, Any]:
        """Return the row the console, the dashboards and the API show."""
        return {"alarm_id": self.alarm_id, "rule": self.rule.name, "series": self.key, "device": self.device,
                "metric": self.metric, "site": self.site, "severity": self.severity, "state": str(self.state),
                "active": self.active, "level": self.level, "value": self.value, "unit": self.unit,
                "limit": self.limit, "time_ns": self.raised_ns or self.changed_ns, "changed_ns": self.changed_ns,
                "message": self.text or self.message(self.changed_ns), "acked_by": self.acked_by,
                "acked_ns": self.acked_ns, "comment": self.comment, "shelved_until_ns": self.shelved_until_ns,
                "reason": self.held_reason, "policy": self.rule.policy, "shadow": self.rule.mode == "shadow"}

    # -- kept across restarts ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Return what must survive a restart (the state, who acknowledged, the debounced condition)."""
        return {"state": str(self.state), "active": self.active, "level": self.level, "severity": self.severity,
                "value": self.value, "limit": self.limit, "raised_ns": self.raised_ns, "changed_ns": self.changed_ns,
                "acked_by": self.acked_by, "acked_ns": self.acked_ns, "comment": self.comment,
                "shelved_until_ns": self.shelved_until_ns, "held_reason": self.held_reason, "unit": self.unit,
                "site": self.site, "text": self.text}

    def restore(self, snap: dict[str, Any]) -> None:
        """Take back a snapshot (the rule may have changed since: only its identity matters)."""
        for k in ("level", "severity", "value", "limit", "raised_ns", "changed_ns", "acked_by", "acked_ns",
                  "comment", "shelved_until_ns", "held_reason", "unit", "site", "text"):
            if k in snap:
                setattr(self, k, snap[k])
        self.state = AlarmState(snap.get("state", "normal"))
        self.debounce = Debounce(active=bool(snap.get("active")))


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def human_duration(seconds: float) -> str:
    """Return a duration as an operator reads it: 1 h 40, 12 min, 40 s."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d}"
    if s >= 60:
        return f"{s // 60} min"
    return f"{s} s"
