"""The alarm engine: every rule judged on every reading, before the live cache or the store see it.

The hub hands each batch to :meth:`AlarmEngine.accept` first, so no alarm
waits for storage or pages. The engine finds the rules that target each
series (matched once per series), asks each rule for its verdict
(:mod:`app.alarms.rules`, pure) and lets the series' :class:`Alarm` follow
it (:mod:`app.alarms.lifecycle`, the ISA-18.2 states). A clock of its own
(:meth:`tick`, driven by :class:`AlarmClock`) judges what no reading
brings: silence (no-data rules), the end of an on/off-delay, a shelve that
expires. Operators act through :meth:`acknowledge`, :meth:`shelve`,
:meth:`set_maintenance`; a source that disconnects suppresses its series'
alarms (:meth:`inhibit_source`) instead of raising twenty of them, and so
does a device its source reports dead (:meth:`inhibit_device`, e.g. a
Sparkplug DDEATH or NDEATH) while the source itself stays connected.

Every change is an :class:`~app.model.AlarmEvent` handed to the
subscribers in order (the journal, the pages' version counter, the MQTT
publisher, the notifier): each must take it without blocking.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from app.alarms.lifecycle import Alarm
from app.alarms.rules import (
    SEVERITIES,
    SEVERITY_CLASS,
    AlarmRule,
    CompositeRule,
    NoDataRule,
    SeriesState,
    ThresholdRule,
)
from app.model import AlarmEvent, AlarmState, Reading, now_ns

log = logging.getLogger(__name__)

_CLASS_RANK = {None: 0, "ok": 0, "warning": 1, "alarm": 2}
_LIVE = (AlarmState.UNACKNOWLEDGED, AlarmState.ACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED)

Subscriber = Callable[[AlarmEvent], None]


class AlarmEngine:
    """Judges readings and ticks against the rules; keeps every alarm's state; tells subscribers."""

    def __init__(self, rules: Sequence[AlarmRule], *, clock: Callable[[], int] = now_ns, history: int = 500,
                 log_events: bool = True) -> None:
        self.clock = clock
        self.log_events = log_events  # a replay of history says nothing in the log
        self._alarms: dict[tuple[str, str], Alarm] = {}
        self._states: dict[tuple[str, str], SeriesState] = {}
        self._tick_index: dict[str, dict[str, SeriesState]] = {}  # rule judged by the clock -> its series' states
        self._subscribers: list[Subscriber] = []
        self.note_listeners: list[Callable[..., None]] = []  # operator actions that are not transitions
        self.source_intervals: dict[str, float] = {}  # source -> how often its series report (no-data default)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=history)
        self._last_ns: dict[str, int] = {}
        self._series: dict[str, tuple[str | None, str]] = {}  # key -> (site, source), for new alarms and inhibition
        self.maintenance: dict[str, dict[str, Any]] = {}  # device -> {user, reason, since_ns}
        self.inhibited: dict[str, str] = {}  # source -> reason
        # (source, device) reported dead by that source -> reason: another source's device of the same name
        # (an MQTT gauge called like a Sparkplug device) keeps its alarms
        self.inhibited_devices: dict[tuple[str, str], str] = {}
        self.raised_total = 0
        self.event_counts: Counter[str] = Counter()  # events by kind, for /metrics (one increment per event)
        self.version = 0  # grows with every event: a cheap "anything changed?" for pages
        self.rules: list[AlarmRule] = []
        self.set_rules(rules)

    # -- rules -----------------------------------------------------------------------------------------
    def set_rules(self, rules: Sequence[AlarmRule], user: str = "") -> None:
        """Take a new rule set (an edit takes effect without a restart); keep the alarms of unchanged rules."""
        old = {r.name: r for r in self.rules}
        self.rules = list(rules)
        self._by_name = {r.name: r for r in self.rules}
        self._composites = [r for r in self.rules if isinstance(r, CompositeRule) and r.mode != "disabled"]
        self._ticking = [r for r in self.rules if r.needs_ticks and r.mode != "disabled"]
        self._rules_for: dict[str, tuple[Any, ...]] = {}
        # Rules indexed by the literal start of their series pattern: a new series is matched against the
        # few rules whose prefix it starts with, not against every rule (50,000 new series x 1,000 rules).
        self._by_prefix: dict[int, dict[str, list[AlarmRule]]] = {}
        self._order = {id(r): i for i, r in enumerate(self.rules)}  # rules keep the file's order per series
        for rule in self.rules:
            prefix = rule.literal_prefix()
            self._by_prefix.setdefault(len(prefix), {}).setdefault(prefix, []).append(rule)
        changed = {name for name, before in old.items() if self._by_name.get(name) is not before}
        for name in changed:
            self._tick_index.pop(name, None)
        for ident, state in list(self._states.items()):
            if ident[0] not in changed:
                continue
            rule = self._by_name.get(ident[0])
            del self._states[ident]  # new parameters (or a rule gone): windows and levels start again
            if rule is not None and rule.needs_ticks:  # but a silence goes on: keep when it began
                fresh = self._states[ident] = SeriesState(last_ns=state.last_ns, expected_s=state.expected_s)
                self._tick_index.setdefault(rule.name, {})[ident[1]] = fresh
        now = self.clock()
        for ident, alarm in list(self._alarms.items()):
            rule = self._by_name.get(ident[0])
            if rule is None:  # the rule is gone: its alarms go with it, said once
                del self._alarms[ident]
                if alarm.shown:
                    alarm.state = AlarmState.NORMAL
                    self._emit(alarm.event("removed", AlarmState.NORMAL, now, user, "rule removed"))
                continue
            alarm.rule, alarm.v = rule, rule.v
            if rule.mode == "disabled":
                self._emit(alarm.hold(AlarmState.OUT_OF_SERVICE, now, user, "rule disabled"))
            else:
                self._emit(alarm.release(AlarmState.OUT_OF_SERVICE, now, "in_service", "rule enabled", user))

    def rules_for(self, key: str, tags: dict[str, str] | None = None) -> tuple[AlarmRule, ...]:
        """Return the rules watching a series (matched once per series)."""
        return tuple(c[0] for c in self._compiled_for(key, tags))

    def _compiled_for(self, key: str, tags: dict[str, str] | None = None) -> tuple[tuple[Any, ...], ...]:
        """Return (rule, its values, its pure judgement) for each rule watching a series, cached per series."""
        compiled = self._rules_for.get(key)
        if compiled is None:
            tags = tags if tags is not None else {}
            candidates = {self._order[id(r)]: r for n, rules in self._by_prefix.items() for r in rules.get(key[:n], ())}
            ordered = [candidates[i] for i in sorted(candidates) if candidates[i].targets(key, tags)]
            compiled = self._rules_for[key] = tuple((r, r.v, type(r).evaluate) for r in ordered)
        return compiled

    # -- the ingest path ---------------------------------------------------------------------------------
    def accept(self, batch: Sequence[Reading]) -> None:
        """Judge a batch (the hub's first consumer)."""
        rules_for, last_ns, states, alarms = self._rules_for, self._last_ns, self._states, self._alarms
        changed = False
        for r in batch:
            key = r.key
            compiled = rules_for.get(key)
            if compiled is None:
                compiled = self._compiled_for(key, r.tags)
            if not compiled:
                continue
            # A late or back-filled reading (an import, a backlog) says nothing about now.
            t = r.time_ns
            if t < last_ns.get(key, 0):
                continue
            last_ns[key] = t
            if key not in self._series:
                self._series[key] = (r.tags.get("site"), r.source)
            for rule, v, evaluate in compiled:
                if v.mode == "disabled":
                    continue
                ident = (v.name, key)
                state = states.get(ident)
                if state is None:
                    state = states[ident] = SeriesState(expected_s=self.source_intervals.get(r.source))
                    if rule.needs_ticks:
                        self._tick_index.setdefault(v.name, {})[key] = state
                verdict = evaluate(v, state, r)
                if verdict is None:
                    continue
                alarm = alarms.get(ident)
                if alarm is None:
                    if not verdict[0]:  # a normal series needs no alarm (most of them, most of the time)
                        continue
                    alarm = self._new_alarm(rule, key, r.unit)
                elif not verdict[0] and alarm.debounce.since_ns is None and not alarm.debounce.active:
                    alarm.value = verdict[1]  # still normal: nothing to judge
                    continue
                if r.unit:
                    alarm.unit = r.unit
                event = alarm.judge(verdict, t)
                if event is not None:
                    self._emit(event)
                    changed = True
        if changed and self._composites:
            self._judge_composites(self.clock())

    def tick(self, now: int | None = None) -> None:
        """Judge what the clock brings: silence, the end of a delay, an expired shelve."""
        now = self.clock() if now is None else now
        for rule in self._ticking:
            for key, state in list(self._tick_index.get(rule.name, {}).items()):
                verdict = rule.judge_tick(state, now)
                if verdict is None:
                    continue
                alarm = self._alarms.get((rule.name, key)) or self._new_alarm(rule, key, "")
                self._emit(alarm.judge(verdict, now))
        for alarm in list(self._alarms.values()):
            event = alarm.tick(now)
            if event is not None:
                self._emit(event)
        if self._composites:  # every tick too: "not x" holds before anything ever happened
            self._judge_composites(now)

    def next_due(self) -> int | None:
        """Return the earliest time a tick could change anything (None: only a reading can).

        A replay of history jumps straight there instead of ticking through
        hours where nothing can happen; skipped ticks would have done nothing.
        """
        due: list[int] = []
        for rule in self._ticking:
            due += [s.last_ns + int(NoDataRule.timeout(rule.v, s) * 1e9) + 1
                    for s in self._tick_index.get(rule.name, {}).values() if s.last_ns]
        for a in self._alarms.values():
            d = a.debounce
            if d is not None and d.since_ns is not None:
                due.append(d.since_ns + int((a.rule.v.off_delay_s if d.active else a.rule.v.on_delay_s) * 1e9))
            if a.shelved_until_ns is not None:
                due.append(a.shelved_until_ns)
        if self._composites:
            return None if not due else min(due)
        return min(due) if due else None

    def _judge_composites(self, now: int) -> None:
        active = {a.rule.name for a in self._alarms.values() if a.active and not isinstance(a.rule, CompositeRule)}
        for rule in self._composites:
            key = f"composite/{rule.name}"
            alarm = self._alarms.get((rule.name, key)) or self._new_alarm(rule, key, "")
            event = alarm.judge(rule.judge_states(active), now)
            if event is not None:
                self._emit(event)

    def _new_alarm(self, rule: AlarmRule, key: str, unit: str) -> Alarm:
        device, _, metric = key.rpartition("/")
        site, source = self._series.get(key, (None, ""))
        alarm = self._alarms[(rule.name, key)] = Alarm(rule, key, device, metric, site, unit, severity=rule.severity)
        now = self.clock()
        if rule.mode == "disabled":
            alarm.hold(AlarmState.OUT_OF_SERVICE, now, "", "rule disabled")
        elif device in self.maintenance:
            alarm.hold(AlarmState.SUPPRESSED, now, "", f"{device} in maintenance")
        elif source in self.inhibited:
            alarm.hold(AlarmState.SUPPRESSED, now, "", self.inhibited[source])
        elif (source, device) in self.inhibited_devices:
            alarm.hold(AlarmState.SUPPRESSED, now, "", self.inhibited_devices[(source, device)])
        return alarm

    def _emit(self, event: AlarmEvent | None) -> None:
        if event is None:
            return
        self.version += 1
        self.event_counts[event.kind] += 1
        if event.kind == "raised":
            self.raised_total += 1
        self.transitions.append({**event.as_dict(), "event": event.kind, "event_ns": event.time_ns,
                                 "series": event.key})
        if self.log_events and event.kind in ("raised", "escalated", "cleared") and not event.shadow:
            log.warning("alarm %s: %s (%s, %s, %s)", event.kind, event.message, event.key, event.severity,
                        event.state)
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("alarm event subscriber %r failed", subscriber)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Hand every event to ``subscriber`` from now on (it must not block)."""
        self._subscribers.append(subscriber)

    # -- operators ---------------------------------------------------------------------------------------
    def alarm(self, alarm_id: str) -> Alarm | None:
        """Return an alarm by its id (``rule|series``)."""
        rule, _, key = alarm_id.partition("|")
        return self._alarms.get((rule, key))

    def acknowledge(self, alarm_ids: Iterable[str], user: str, comment: str = "") -> list[AlarmEvent]:
        """Acknowledge alarms (one or several, with a comment); return the events of those that changed."""
        return self._act(alarm_ids, lambda a, now: a.acknowledge(now, user, comment))

    def shelve(self, alarm_ids: Iterable[str], duration_s: float, user: str, reason: str) -> list[AlarmEvent]:
        """Shelve alarms for a while (they come back by themselves when it expires)."""
        def do(a: Alarm, now: int) -> AlarmEvent | None:
            return a.hold(AlarmState.SHELVED, now, user, reason, now + int(duration_s * 1e9))
        return self._act(alarm_ids, do)

    def unshelve(self, alarm_ids: Iterable[str], user: str) -> list[AlarmEvent]:
        """End a shelve before it expires."""
        return self._act(alarm_ids, lambda a, now: a.release(AlarmState.SHELVED, now, "unshelved", "", user))

    def _act(self, alarm_ids: Iterable[str], do: Callable[[Alarm, int], AlarmEvent | None]) -> list[AlarmEvent]:
        now = self.clock()
        events = []
        for alarm_id in alarm_ids:
            alarm = self.alarm(alarm_id)
            if alarm is None:
                raise KeyError(alarm_id)
            event = do(alarm, now)
            if event is not None:
                self._emit(event)
                events.append(event)
        return events

    def set_maintenance(self, device: str, on: bool, user: str, reason: str = "") -> list[AlarmEvent]:
        """Put a device in maintenance (its alarms suppressed by design) or take it out."""
        now = self.clock()
        if on:
            self.maintenance[device] = {"user": user, "reason": reason, "since_ns": now}
        elif self.maintenance.pop(device, None) is None:
            return []
        for listener in self.note_listeners:  # journaled even when the device has no alarm to suppress
            listener("maintenance_on" if on else "maintenance_off", user=user, comment=reason, device=device,
                     category="operator", time_ns=now)
        events = []
        for alarm in self._alarms.values():
            if alarm.device != device or (not on and self._dead(alarm)):  # still dead: held
                continue
            event = (alarm.hold(AlarmState.SUPPRESSED, now, user, reason or f"{device} in maintenance") if on
                     else alarm.release(AlarmState.SUPPRESSED, now, "unsuppressed", "maintenance ended", user))
            if event is not None:
                self._emit(event)
                events.append(event)
        return events

    def inhibit_source(self, source: str, down: bool, reason: str = "") -> None:
        """Suppress the alarms of a source's series while it is disconnected; release them when it is back."""
        now = self.clock()
        if down:
            if source in self.inhibited:
                return
            self.inhibited[source] = reason or f"source {source} disconnected"
        elif self.inhibited.pop(source, None) is None:
            return
        for (_rule, key), alarm in list(self._alarms.items()):
            if (self._series.get(key, (None, ""))[1] != source or alarm.device in self.maintenance
                    or (source, alarm.device) in self.inhibited_devices):
                continue
            if down:
                self._emit(alarm.hold(AlarmState.SUPPRESSED, now, "", self.inhibited[source]))
            else:
                self._emit(alarm.release(AlarmState.SUPPRESSED, now, "unsuppressed", f"source {source} back"))
        if not down:  # silence during the outage is not the sensors' fault: start their clocks again
            for ident, state in self._states.items():
                if self._series.get(ident[1], (None, ""))[1] == source and state.last_ns:
                    state.last_ns = max(state.last_ns, now)

    def _dead(self, alarm: Alarm) -> bool:
        """Whether the source of an alarm's series reports its device dead."""
        return (self._series.get(alarm.key, (None, ""))[1], alarm.device) in self.inhibited_devices

    def inhibit_device(self, source: str, device: str, down: bool, reason: str = "") -> None:
        """Suppress the alarms of a source's device while that source reports it dead; release them when back.

        The source stays connected (so :meth:`inhibit_source` does not apply):
        a Sparkplug edge node or device that died, seen through a live broker.
        A device also in maintenance, or whose source is down, stays suppressed.
        """
        now = self.clock()
        dead = (source, device)
        if down:
            if dead in self.inhibited_devices:
                return
            self.inhibited_devices[dead] = reason or f"{device} reported dead by {source}"
        elif self.inhibited_devices.pop(dead, None) is None:
            return
        for (_rule, key), alarm in list(self._alarms.items()):
            if (alarm.device != device or self._series.get(key, (None, ""))[1] != source
                    or device in self.maintenance):
                continue
            if down:
                self._emit(alarm.hold(AlarmState.SUPPRESSED, now, "", self.inhibited_devices[dead]))
            elif self._series.get(key, (None, ""))[1] not in self.inhibited:
                self._emit(alarm.release(AlarmState.SUPPRESSED, now, "unsuppressed", f"{device} back"))
        if not down:  # its silence while dead is not a sensor fault: start the no-data clocks again
            for ident, state in self._states.items():
                if (ident[1].rpartition("/")[0] == device and state.last_ns
                        and self._series.get(ident[1], (None, ""))[1] == source):
                    state.last_ns = max(state.last_ns, now)

    # -- kept across restarts ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Return every alarm that is not plainly normal, by id (what a restart must not forget)."""
        return {a.alarm_id: a.snapshot() for a in self._alarms.values() if a.shown or a.active}

    def restore(self, snapshot: dict[str, dict[str, Any]], maintenance: dict[str, dict[str, Any]] | None = None) -> int:
        """Take back alarms and maintenance from before a restart; return how many alarms."""
        self.maintenance.update(maintenance or {})
        n = 0
        for alarm_id, snap in snapshot.items():
            rule_name, _, key = alarm_id.partition("|")
            rule = self._by_name.get(rule_name)
            if rule is None:
                continue
            alarm = self._alarms.get((rule_name, key)) or self._new_alarm(rule, key, snap.get("unit", ""))
            alarm.restore(snap)
            self._last_ns.setdefault(key, 0)
            n += 1
        self.version += 1
        return n

    # -- what pages ask ----------------------------------------------------------------------------------
    def alarms(self, *, include_shadow: bool = False) -> list[Alarm]:
        """Return the alarms an operator must see (any state but normal)."""
        return [a for a in self._alarms.values() if a.shown and (include_shadow or a.rule.mode != "shadow")]

    def active(self) -> list[dict[str, Any]]:
        """Return the alarms to show as rows, newest first."""
        return sorted((a.as_dict() for a in self.alarms()), key=lambda a: a["time_ns"], reverse=True)

    def unacknowledged(self) -> int:
        """Return how many alarms wait for an acknowledgement (the banner's count)."""
        return sum(1 for a in self.alarms()
                   if a.state in (AlarmState.UNACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED))

    def _colouring(self, alarms: Iterable[Alarm]) -> str | None:
        """Return the worst present alarm (not shelved, suppressed or shadow): warning / alarm."""
        worst = None
        for a in alarms:
            if a.active and a.state in _LIVE and a.rule.mode != "shadow":
                state = SEVERITY_CLASS.get(a.severity, "alarm")
                if _CLASS_RANK[state] > _CLASS_RANK[worst]:
                    worst = state
        return worst

    def series_state(self, key: str) -> str | None:
        """Return ``ok`` / ``warning`` / ``alarm`` for a series with rules, None for one without."""
        if not self.rules_for(key):
            return None
        return self._colouring(a for (_r, k), a in self._alarms.items() if k == key) or "ok"

    def series_unacknowledged(self, key: str) -> int:
        """Return how many of a series' alarms wait for an acknowledgement (tiles outline them)."""
        return sum(1 for (_r, k), a in self._alarms.items() if k == key and a.rule.v.mode != "shadow"
                   and a.state in (AlarmState.UNACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED))

    def device_state(self, device: str) -> str | None:
        """Return the worst state of a device's alarms, None when it has none."""
        return self._colouring(a for a in self._alarms.values() if a.device == device)

    def worst_for_site(self, site: str | None) -> dict[str, Any] | None:
        """Return the most severe (then newest) alarm of a site (None: devices with no site), or None."""
        alarms = [a for a in self.alarms() if a.site == site and a.state in _LIVE]
        if not alarms:
            return None
        worst = max(alarms, key=lambda a: (a.state == AlarmState.UNACKNOWLEDGED,
                                           SEVERITIES.index(a.severity), a.raised_ns or 0))
        return worst.as_dict()

    def limits(self, key: str) -> list[tuple[float, str, str]]:
        """Return the limit lines of a series' threshold rules: (value, label, warning / alarm)."""
        out = []
        for rule in self.rules_for(key):
            if isinstance(rule, ThresholdRule) and rule.mode != "disabled":
                for limit, level in rule.limit_lines():
                    severity = rule.extreme_severity if level in ("HH", "LL") else rule.severity
                    out.append((limit, f"{rule.name} {level}", SEVERITY_CLASS[severity]))
        return out

    def matched_series(self, rule: AlarmRule) -> list[str]:
        """Return the series a rule watches among those seen (an editor shows a rule that matches none)."""
        return sorted(k for k, (site, _src) in self._series.items() if rule.targets(k, {"site": site or ""}))

    def health(self) -> dict[str, Any]:
        """Return rules, alarms by state and raised total for the health endpoint."""
        by_state: dict[str, int] = {}
        for a in self.alarms(include_shadow=True):
            by_state[str(a.state)] = by_state.get(str(a.state), 0) + 1
        return {"rules": len(self.rules), "active": sum(by_state.values()), "by_state": by_state,
                "unacknowledged": self.unacknowledged(), "raised_total": self.raised_total,
                "maintenance": sorted(self.maintenance), "inhibited_sources": sorted(self.inhibited),
                "inhibited_devices": sorted({device for _source, device in self.inhibited_devices})}


class AlarmClock:
    """Ticks the engine every ``interval_s`` (no data, delays, shelve expiry): its own task, start and stop."""

    def __init__(self, engine: AlarmEngine, interval_s: float = 1.0) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Tick until stopped."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            except TimeoutError:
                pass
            try:
                self.engine.tick()
            except Exception:
                log.exception("alarm clock tick failed")

    async def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopping.set()
