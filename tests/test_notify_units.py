"""Notifications without servers: the rota, quiet rules, links, config checks, a cascade on an injected clock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest

from app.alarms.engine import AlarmEngine
from app.alarms.journal import Journal
from app.alarms.rules import ThresholdRule
from app.config import ConfigError, load_config
from app.model import Reading
from app.notify.cascade import Notifier
from app.notify.channels import Channel, redact
from app.notify.links import LinkSigner
from app.notify.rota import on_call, quiet_until, resolve
from app.notify.specs import ContactsSection, QuietSpec
from app.pages.alarms import cascades_html

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")

CONTACTS = {
    "people": [{"name": n, "mail": f"{n}@x.org", "phone": f"+3360000000{i}"} for i, n in
               enumerate(["ann", "ben", "cat", "dan"])],
    "teams": [{"name": "night", "members": ["cat", "dan"]}],
    "on_call": {
        "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "who": "ann"},
                   {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "18:00", "end": "08:00", "who": "night"},
                   {"days": ["sat", "sun"], "who": "ben"}],
        "overrides": [{"start": "2026-12-24T18:00", "end": "2026-12-26T08:00", "who": "dan"}],
    },
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


@pytest.mark.parametrize(("when", "who"), [
    ("2026-12-01T09:00", "ann"),   # Tuesday, office hours
    ("2026-12-01T17:59", "ann"),
    ("2026-12-01T18:00", "night"),  # evening shift...
    ("2026-12-02T07:59", "night"),  # ...over midnight into Wednesday
    ("2026-12-05T07:59", "night"),  # Saturday morning: Friday's night shift still runs
    ("2026-12-05T08:00", "ben"),   # Saturday
    ("2026-12-07T07:00", None),    # Monday 07:00: the night shift runs mon-fri from 18:00, Sunday has none (a gap)
    ("2026-12-24T20:00", "dan"),   # Christmas Eve: the override wins over the night team
    ("2026-12-25T12:00", "dan"),
    ("2026-12-26T08:00", "ben"),   # override over: Saturday
])
def test_the_rota_picks_who_is_on_call(when, who):
    contacts = ContactsSection.from_spec(CONTACTS)
    assert on_call(contacts, at(when), PARIS) == who


def test_a_step_resolves_teams_and_on_call_to_people_once():
    contacts = ContactsSection.from_spec(CONTACTS)
    people = resolve(contacts, ["on_call", "night", "ann"], at("2026-12-01T23:00"), PARIS)
    assert [p.name for p in people] == ["cat", "dan", "ann"]
    # The rota is read in the server's time zone: 08:30 in Paris is 07:30 UTC.
    assert on_call(contacts, datetime.fromisoformat("2026-12-01T07:30+00:00"), PARIS) == "ann"


def test_quiet_rules_hold_low_severity_until_office_hours():
    quiet = [QuietSpec(severities=["low"], days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="18:00")]
    assert quiet_until(quiet, "low", at("2026-12-01T10:00"), PARIS) is None
    assert quiet_until(quiet, "high", at("2026-12-05T03:00"), PARIS) is None  # not a quiet severity
    assert quiet_until(quiet, "low", at("2026-12-01T19:30"), PARIS) == at("2026-12-02T08:00")
    assert quiet_until(quiet, "low", at("2026-12-05T03:00"), PARIS) == at("2026-12-07T08:00")  # Saturday -> Monday


def test_links_are_signed_bound_and_expiring():
    signer = LinkSigner(b"s" * 32)
    token = signer.make(["r|d/m"], "ann", 1000.0)
    claim, why = signer.check(token, 999.0)
    assert why == "" and claim.alarm_ids == ("r|d/m",) and claim.contact == "ann"
    assert signer.check(token, 1000.0)[1] == "expired"
    assert LinkSigner(b"other").check(token, 0)[1] == "forged"
    body, sig = token.split(".")
    other = signer.make(["r|other/m"], "ann", 1000.0).split(".")[0]
    assert signer.check(f"{other}.{sig}", 0)[1] == "forged"  # a signature moved onto other alarms
    assert signer.check("x", 0)[1] == "forged"


def test_recipients_are_redacted():
    assert redact("alice@example.org") == "al…@example.org"
    assert redact("+33612345678") == "+336…78"
    assert redact("slack://tokenA/tokenB") == "slack://…"


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.yaml").write_text(text)
    return tmp_path


def test_check_config_names_unknown_policies_contacts_and_missing_variables(tmp_path):
    write_config(tmp_path, """\
server: {secret_env: VIGIE_SECRET}
alarms:
  rules:
    - {name: flood, series: "*/level", h: 1, policy: dams}
    - {name: dry, series: "*/level", l: 0, policy: damz}
contacts:
  people:
    - {name: ann, mail: a@x.org, apprise_env: ANN_CHAT}
  teams:
    - {name: night, members: [ann, bob]}
escalation:
  mail_url_env: SMTP_URL
  policies:
    - name: dams
      steps:
        - {whom: [on_call, nigth], channels: [mail, pager]}
""")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={"SMTP_URL": "mailto://x"})
    text = str(err.value)
    assert "a.yaml:1: server.secret_env: environment variable VIGIE_SECRET is not set" in text
    assert "a.yaml:8: contacts.people[0].apprise_env: environment variable ANN_CHAT is not set" in text
    assert "alarms.rules[1].policy: no escalation policy named 'damz' (did you mean 'dams'?)" in text
    assert "contacts.teams[0].members: no contact named 'bob'" in text
    assert "escalation.policies[0].steps[0].whom: no contact or team named 'nigth' (did you mean 'night'?)" in text
    # The command says the same and exits non-zero.
    run = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert run.returncode == 2 and "no escalation policy named 'damz'" in run.stderr


class Fake(Channel):
    """A channel at the boundary for unit tests: keeps what it was given."""

    channel_type = "fake"
    sent: ClassVar[list[tuple[str, str]]] = []

    def address(self, contact):
        return contact.mail

    def prepare(self, contact, title, body, extra):
        return Fake.sent.append, ((contact.name, body),)


T_START = datetime(2026, 12, 1, 10, tzinfo=PARIS).timestamp()


def on_clock(tmp_path: Path, rule: ThresholdRule):
    """Return (engine, notifier, journal, advance) on an injected clock starting at T_START.

    ``advance(t)`` moves the clock to ``t``, lets the notifier route and dispatch, and waits for its deliveries.
    """
    loaded = load_config(tmp_path, env={})
    Fake.sent.clear()
    now = [T_START]
    engine = AlarmEngine([rule], clock=lambda: int(now[0] * 1e9))
    journal = Journal(tmp_path / "j.sqlite")
    journal.open()
    journal.attach(engine)
    notifier = Notifier(loaded, engine, journal, tmp_path / "j.sqlite", clock=lambda: now[0], secret=b"k")
    notifier.open()
    notifier.attach()

    async def advance(to: float) -> None:
        now[0] = to
        notifier.process(to)
        while notifier._deliveries:
            await asyncio.gather(*notifier._deliveries)

    return engine, notifier, journal, advance


async def test_a_cascade_on_an_injected_clock(tmp_path):
    write_config(tmp_path, """\
server: {timezone: Europe/Paris}
contacts:
  people: [{name: ann, mail: a@x.org, language: en}, {name: ben, mail: b@x.org}]
escalation:
  group_window_s: 5
  isolation: thread
  policies:
    - name: p
      then: remind
      remind_s: 100
      steps:
        - {whom: [ann], channels: [fake], wait_s: 60}
        - {whom: [ben], channels: [fake], wait_s: 60}
""")
    engine, notifier, journal, advance = on_clock(tmp_path, ThresholdRule(name="r", series="*/level", h=1.0,
                                                                          policy="p"))
    t0 = T_START
    engine.accept([Reading(d, "level", int(t0 * 1e9), 5.0, tags={"site": "s"}) for d in ("a", "b")])
    await advance(t0)
    await advance(t0 + 4.9)
    assert Fake.sent == []  # still grouping
    await advance(t0 + 5)
    assert [n for n, _ in Fake.sent] == ["ann"] and "2 alarm(s)" in Fake.sent[0][1]
    await advance(t0 + 64.9)
    assert len(Fake.sent) == 1
    await advance(t0 + 65)
    assert [n for n, _ in Fake.sent] == ["ann", "ben"]
    view = notifier.cascade_view("r|a/level")[0]
    assert [t["contact"] for t in view["told"]] == ["ann", "ben"] and view["next"]["whom"] == ["ben"]
    page = cascades_html(SimpleNamespace(notifier=notifier), "en", "Europe/Paris")  # the console's block
    assert "step 1: ann (fake) 2026-12-01 10:00:05" in page and "step 2: ben (fake) 2026-12-01 10:01:05" in page
    assert "<td>step 2: ben (fake) 2026-12-01 10:02:05</td>" in page  # next: the reminder
    await advance(t0 + 125)  # the last step reminded after its wait, then every remind_s
    assert [n for n, _ in Fake.sent] == ["ann", "ben", "ben"]
    engine.acknowledge(["r|a/level"], "someone")
    await advance(t0 + 130)
    assert notifier.cascades  # b is still unacknowledged
    engine.acknowledge(["r|b/level"], "someone")
    await advance(t0 + 131)
    assert not notifier.cascades
    await advance(t0 + 10_000)
    assert len(Fake.sent) == 3
    journal.close()


def test_a_cascade_round_trips_through_its_stored_form():
    from app.notify.cascade import Cascade
    from app.notify.messages import AlarmFacts

    facts = AlarmFacts("r|d/m", "d", "m", "s", "high", 2.0, "m", 1.0, 10**18, "text")
    c = Cascade("r|d/m@1", "p", {"r|d/m": facts}, 1, float("inf"), 3, 1.0, [{"step": 1, "contact": "a"}])
    import json

    back = Cascade.from_doc(json.loads(json.dumps(c.to_doc() | {"due": 1e18})))
    assert back.due == float("inf") and back.alarms == c.alarms and back.told == c.told


async def test_an_alarm_that_worsens_starts_its_cascade_again_at_step_one(tmp_path):
    """H then HH: the first step hears of the worse severity at once, not when the old cascade's timer says."""
    write_config(tmp_path, """\
server: {timezone: Europe/Paris}
contacts:
  people: [{name: ann, mail: a@x.org, language: en}, {name: ben, mail: b@x.org}]
escalation:
  group_window_s: 0
  isolation: thread
  policies:
    - name: p
      steps:
        - {whom: [ann], channels: [fake], wait_s: 600}
        - {whom: [ben], channels: [fake], wait_s: 600}
""")
    engine, notifier, journal, advance = on_clock(tmp_path, ThresholdRule(
        name="r", series="*/level", h=1.0, hh=2.0, severity="medium", policy="p"))
    t0 = T_START
    engine.accept([Reading("a", "level", int(t0 * 1e9), 1.5)])
    await advance(t0)
    assert [n for n, _ in Fake.sent] == ["ann"] and "medium" in Fake.sent[0][1]
    engine.accept([Reading("a", "level", int((t0 + 60) * 1e9), 2.5)])  # H -> HH: critical
    await advance(t0 + 60)
    assert [n for n, _ in Fake.sent] == ["ann", "ann"] and "critical" in Fake.sent[1][1]
    [cascade] = notifier.cascades.values()
    assert cascade.step == 1 and cascade.due == t0 + 660  # step 2 is a full wait after the new start
    # Acknowledged: the restarted cascade stops like any other.
    engine.acknowledge(["r|a/level"], "someone")
    await advance(t0 + 70)
    assert not notifier.cascades
    journal.close()
