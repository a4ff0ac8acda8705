"""The ``contacts`` and ``escalation`` config sections: who can be told, when, and how the telling escalates.

One definition each, as :class:`~app.spec.Spec` classes (the same classes a
settings form would be built from). Secrets never live in these files: an
apprise URL carrying a token, a gateway's token, the server's signing secret
are named by ``*_env`` keys, and a variable that is not set is a config error.
"""

from __future__ import annotations

import re
from datetime import datetime, time

import param

from app.spec import Spec, did_you_mean

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEVERITY_NAMES = ("low", "medium", "high", "critical")
BUILTIN_CHANNELS = ("mail", "sms", "voice")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


def parse_hhmm(text: str) -> time:
    """Return a ``HH:MM`` text as a time (``24:00`` is the end of the day)."""
    if text == "24:00":
        return time.max
    h, m = text.split(":")
    return time(int(h), int(m))


def _days_problems(days: list[str], path: tuple) -> list[tuple[tuple, str]]:
    return [(path, f"unknown day {d!r}; one of {', '.join(DAYS)}{did_you_mean(str(d), list(DAYS))}")
            for d in days if d not in DAYS]


def _range_problems(spec: Spec) -> list[tuple[tuple, str]]:
    return [((k,), f"{getattr(spec, k)!r} is not a time HH:MM") for k in ("start", "end")
            if not _TIME.match(str(getattr(spec, k)))]


class ContactSpec(Spec):
    """One person who can be told: how to reach them and in which language."""

    name = param.String(default="", doc="Unique name, used by teams, the rota and policies.")
    language = param.Selector(default="fr", objects=["fr", "en"], doc="Language of their messages.")
    mail = param.String(default=None, allow_None=True, doc="Mail address (channel mail).")
    phone = param.String(default=None, allow_None=True, doc="Phone number, international form (sms, voice).")
    apprise = param.List(default=[], item_type=str,
                         doc="Apprise URLs holding no secret (chat, webhooks): used for channels of their scheme.")
    apprise_env = param.String(default=None, allow_None=True,
                               doc="Variable holding more apprise URLs (space separated) that carry a token.")

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.param)

    def validate(self) -> list[tuple[tuple, str]]:
        return [] if self.name else [(("name",), "missing (required)")]


class TeamSpec(Spec):
    """A named list of contacts, told together."""

    name = param.String(default="")
    members = param.List(default=[], item_type=str, doc="Contact names.")

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.param)

    def validate(self) -> list[tuple[tuple, str]]:
        return [] if self.name else [(("name",), "missing (required)")]


class ShiftSpec(Spec):
    """A weekly on-call shift: these days, from start to end (over midnight when end <= start), this contact/team."""

    days = param.List(default=list(DAYS), item_type=str, doc="mon tue wed thu fri sat sun")
    start = param.String(default="00:00", doc="HH:MM, server time zone.")
    end = param.String(default="24:00", doc="HH:MM; before start: the shift ends the next day.")
    who = param.String(default="", doc="A contact or team name.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = _days_problems(self.days, ("days",)) + _range_problems(self)
        return problems + ([] if self.who else [(("who",), "missing (required)")])


class OverrideSpec(Spec):
    """An exception to the weekly pattern (a holiday, a swap): from start to end, this contact/team."""

    start = param.String(default="", doc="ISO date-time, server time zone: 2026-12-24T18:00")
    end = param.String(default="", doc="ISO date-time, server time zone.")
    who = param.String(default="")

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        for k in ("start", "end"):
            try:
                datetime.fromisoformat(getattr(self, k))
            except ValueError:
                problems.append(((k,), f"{getattr(self, k)!r} is not an ISO date-time (2026-12-24T18:00)"))
        return problems + ([] if self.who else [(("who",), "missing (required)")])


class RotaSpec(Spec):
    """Who is on call: overrides first, then the first weekly shift that covers the time."""

    weekly = param.List(default=[], item_type=ShiftSpec)
    overrides = param.List(default=[], item_type=OverrideSpec)


class ContactsSection(Spec):
    """The ``contacts`` section: people, teams, the on-call rota."""

    people = param.List(default=[], item_type=ContactSpec)
    teams = param.List(default=[], item_type=TeamSpec)
    on_call = param.ClassSelector(class_=RotaSpec, default=None, allow_None=True)

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.on_call = self.on_call or RotaSpec()

    def names(self) -> set[str]:
        """Return every contact and team name."""
        return {c.name for c in self.people} | {t.name for t in self.teams}

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        names = [c.name for c in self.people] + [t.name for t in self.teams]
        problems += [((), f"name {n!r} is used twice (contacts and teams share names)")
                     for n in sorted({n for n in names if names.count(n) > 1})]
        people = sorted(c.name for c in self.people)
        for i, team in enumerate(self.teams):
            problems += [(("teams", i, "members"), f"no contact named {m!r}{did_you_mean(m, people)}")
                         for m in team.members if m not in people]
        known = sorted(self.names())
        for kind, entries in (("weekly", self.on_call.weekly), ("overrides", self.on_call.overrides)):
            problems += [(("on_call", kind, i, "who"), f"no contact or team named {e.who!r}"
                          + did_you_mean(e.who, known)) for i, e in enumerate(entries) if e.who and e.who not in known]
        return problems


class QuietSpec(Spec):
    """Alarms of these severities notify only within these hours; outside, the cascade waits for them."""

    severities = param.List(default=["low"], item_type=str)
    days = param.List(default=["mon", "tue", "wed", "thu", "fri"], item_type=str)
    start = param.String(default="08:00")
    end = param.String(default="18:00")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = _days_problems(self.days, ("days",)) + _range_problems(self)
        return problems + [(("severities",), f"unknown severity {s!r}") for s in self.severities
                           if s not in SEVERITY_NAMES]


class StepSpec(Spec):
    """One step of a cascade: whom, by which channels, how long to wait for an acknowledgement."""

    whom = param.List(default=[], item_type=str, doc="Contact or team names, or on_call.")
    channels = param.List(default=["mail"], item_type=str,
                          doc="mail, sms, voice, or an apprise URL scheme of the contacts' apprise URLs.")
    wait_s = param.Number(default=600.0, bounds=(0.1, 7 * 86400), doc="Wait for an acknowledgement before the next.")

    def validate(self) -> list[tuple[tuple, str]]:
        return [] if self.whom else [(("whom",), "missing (required)")]


class PolicySpec(Spec):
    """An escalation policy: ordered steps, what happens after the last, quiet rules."""

    name = param.String(default="")
    steps = param.List(default=[], item_type=StepSpec)
    then = param.Selector(default="remind", objects=["remind", "repeat", "stop"],
                          doc="After the last step: remind it every remind_s, repeat from step 1, or stop.")
    remind_s = param.Number(default=1800.0, bounds=(1, None))
    stop_when_normal = param.Boolean(default=True, doc="Stop the cascade when the alarm returns to normal.")
    quiet = param.List(default=[], item_type=QuietSpec)

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.param)

    def validate(self) -> list[tuple[tuple, str]]:
        problems = [] if self.name else [(("name",), "missing (required)")]
        return problems + ([] if self.steps else [(("steps",), "a policy needs at least one step")])


class EscalationSection(Spec):
    """The ``escalation`` section: policies and how messages leave."""

    policies = param.List(default=[], item_type=PolicySpec)
    mail_url = param.String(default=None, allow_None=True,
                            doc="Apprise mailto URL without recipient (to= is added): "
                                "mailto://smtp.example.org:587?from=vigie@example.org")
    mail_url_env = param.String(default=None, allow_None=True, doc="Variable holding mail_url (with a password).")
    sms_url = param.String(default=None, allow_None=True,
                           doc="Apprise URL of the SMS gateway; {phone} is replaced: json://gw:8080/sms/{phone}")
    sms_url_env = param.String(default=None, allow_None=True, doc="Variable holding sms_url (with a token).")
    voice_url = param.String(default=None, allow_None=True,
                             doc="Voice gateway URL; Vigie POSTs {to, text, lang, ack_url, callback_url} (JSON).")
    voice_token_env = param.String(default=None, allow_None=True, doc="Variable holding the voice gateway's token.")
    reply_token_env = param.String(default=None, allow_None=True,
                                   doc="Variable holding the token gateways send to POST /api/v1/notify/reply.")
    public_url = param.String(default=None, allow_None=True,
                              doc="Base URL of Vigie in links (default http://<address>:<port>).")
    fallback = param.Dict(default={"mail": "sms", "sms": "voice"},
                          doc="Channel tried when one fails for a contact after its retries.")
    group_window_s = param.Number(default=5.0, bounds=(0, 600),
                                  doc="Alarms of one site (or device) raised within it make one message.")
    link_ttl_s = param.Number(default=86400.0, bounds=(60, 30 * 86400), doc="How long an ack link works.")
    attempts = param.Integer(default=3, bounds=(1, 10), doc="Attempts per channel before its fallback.")
    retry_s = param.Number(default=1.0, bounds=(0.01, 600), doc="First back-off between attempts (doubles).")
    timeout_s = param.Number(default=20.0, bounds=(0.1, 300), doc="Longest one delivery attempt may take.")
    workers = param.Integer(default=2, bounds=(1, 64), doc="Workers delivering (apprise calls block).")
    isolation = param.Selector(default="process", objects=["process", "thread"],
                               doc="Deliver in worker processes (a busy server does not slow them, nor they it) "
                                   "or threads (lighter; they share the interpreter with ingest).")

    def validate(self) -> list[tuple[tuple, str]]:
        names = [p.name for p in self.policies]
        return [(("policies",), f"policy name {n!r} is used twice") for n in sorted({n for n in names
                                                                                     if names.count(n) > 1})]


def cross_problems(contacts: ContactsSection, escalation: EscalationSection,
                   rules: list) -> list[tuple[tuple, str]]:
    """Return the problems between sections: unknown policies, contacts, teams, channels."""
    from app.notify.channels import Channel  # channels import these specs

    problems: list[tuple[tuple, str]] = []
    known = sorted(contacts.names() | {"on_call"})
    policies = sorted(p.name for p in escalation.policies)
    for i, rule in enumerate(rules):
        if rule.policy and rule.policy not in policies:
            problems.append((("alarms", "rules", i, "policy"), f"no escalation policy named {rule.policy!r}"
                             + did_you_mean(rule.policy, policies)))
    people = {c.name: c for c in contacts.people}
    schemes = {u.split("://")[0] for c in contacts.people for u in c.apprise if "://" in u}
    for i, policy in enumerate(escalation.policies):
        for j, step in enumerate(policy.steps):
            here = ("escalation", "policies", i, "steps", j)
            problems += [((*here, "whom"), f"no contact or team named {w!r}{did_you_mean(w, known)}")
                         for w in step.whom if w not in known]
            for ch in step.channels:
                if ch in Channel.registry or ch in schemes or any(c.apprise_env for c in people.values()):
                    continue
                problems.append(((*here, "channels"), f"unknown channel {ch!r}: mail, sms, voice or the scheme of "
                                 "a contact's apprise URL"))
            for ch in step.channels:
                if ch == "mail" and not (escalation.mail_url or escalation.mail_url_env):
                    problems.append(((*here, "channels"), "channel mail needs escalation.mail_url (or mail_url_env)"))
                if ch == "sms" and not (escalation.sms_url or escalation.sms_url_env):
                    problems.append(((*here, "channels"), "channel sms needs escalation.sms_url (or sms_url_env)"))
                if ch == "voice" and not escalation.voice_url:
                    problems.append(((*here, "channels"), "channel voice needs escalation.voice_url"))
    return problems
