"""Who is on call at a time, who a step names, and when quiet rules let a severity through (pure functions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app.notify.specs import DAYS, ContactSpec, ContactsSection, QuietSpec, parse_hhmm


def _in_weekly(days: list[str], start: str, end: str, local: datetime) -> bool:
    """Return whether a local time falls in a weekly range (over midnight when end <= start)."""
    t, s, e = local.time(), parse_hhmm(start), parse_hhmm(end)
    today = DAYS[local.weekday()]
    if s < e:
        return today in days and s <= t < e
    yesterday = DAYS[(local.weekday() - 1) % 7]
    return (today in days and t >= s) or (yesterday in days and t < e)


def on_call(contacts: ContactsSection, at: datetime, tz: ZoneInfo) -> str | None:
    """Return the contact or team on call at ``at`` (aware): an override first, else the first weekly shift."""
    local = at.astimezone(tz)
    for o in contacts.on_call.overrides:
        start, end = (datetime.fromisoformat(o.start), datetime.fromisoformat(o.end))
        start = start if start.tzinfo else start.replace(tzinfo=tz)
        end = end if end.tzinfo else end.replace(tzinfo=tz)
        if start <= local < end:
            return o.who
    for shift in contacts.on_call.weekly:
        if _in_weekly(shift.days, shift.start, shift.end, local):
            return shift.who
    return None


def resolve(contacts: ContactsSection, whom: list[str], at: datetime, tz: ZoneInfo) -> list[ContactSpec]:
    """Return the contacts a step names at ``at`` (teams expanded, on_call looked up), each once, in order."""
    people = {c.name: c for c in contacts.people}
    teams = {t.name: t.members for t in contacts.teams}
    out: dict[str, ContactSpec] = {}
    for name in whom:
        if name == "on_call":
            name = on_call(contacts, at, tz) or ""
        for member in teams.get(name, [name]):
            if member in people:
                out.setdefault(member, people[member])
    return list(out.values())


def quiet_until(quiet: list[QuietSpec], severity: str, at: datetime, tz: ZoneInfo) -> datetime | None:
    """Return when a severity may next be notified if quiet rules hold it back at ``at``, else None."""
    rules = [q for q in quiet if severity in q.severities]
    if not rules:
        return None

    def allowed(t: datetime) -> bool:
        local = t.astimezone(tz)
        return any(_in_weekly(q.days, q.start, q.end, local) for q in rules)

    if allowed(at):
        return None
    t = at.astimezone(tz).replace(second=0, microsecond=0)
    for _ in range(8 * 24 * 60):  # a week and a day, minute by minute: quiet windows are given in minutes
        t += timedelta(minutes=1)
        if allowed(t):
            return t
    return None  # no window at all: never held back for ever
