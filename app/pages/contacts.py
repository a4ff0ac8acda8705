"""The Contacts page: who can be told, who is on call now and next, the escalation policies, and a test send.

What it shows is the ``contacts`` and ``escalation`` sections of the config,
read by the notifier itself (so the page never disagrees with what will be
sent), plus the escalations in progress. "Send a test to step 1" needs the
admin's ``notify:edit``, checked on the server at the click; the attempt is
in the journal like any other.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import panel as pn

from app.i18n import N_, fmt_time, t
from app.notify.rota import on_call, resolve
from app.pages.shell import page, session_lang
from app.web.access import Forbidden, allowed, require

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

THEN = {"remind": N_("remind"), "repeat": N_("repeat"), "stop": N_("stop")}  # after a policy's last step
SCHEDULE_HOURS = 7 * 24  # the rota shown ahead
SCHEDULE_STEP = timedelta(minutes=30)


def _cell(text: Any) -> str:
    return f"<td>{html.escape(str(text))}</td>"


def _table(head: list[str], rows: list[list[Any]], css: str) -> str:
    if not rows:
        return "<p>–</p>"
    return (f"<table class='table table-sm {css}'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr>" + "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows) + "</table>")


def people_html(services: PageServices, lang: str) -> str:
    """Return the contacts (their apprise URLs by scheme only: a URL may carry a token) and the teams."""
    contacts = services.notifier.contacts
    people = [[c.name, c.language, c.mail or "", c.phone or "",
               ", ".join(sorted({u.split(":", 1)[0] for u in c.apprise})) + (" +env" if c.apprise_env else "")]
              for c in contacts.people]
    teams = [[team.name, ", ".join(team.members)] for team in contacts.teams]
    return (_table([t("Name", lang), t("Language", lang), t("Mail", lang), t("Phone", lang), "apprise"], people,
                   "vigie-contacts")
            + f"<h4>{html.escape(t('Teams', lang))}</h4>"
            + _table([t("Name", lang), t("Members", lang)], teams, "vigie-teams"))


def on_call_html(services: PageServices, lang: str, now: datetime | None = None) -> str:
    """Return who is on call now, and each change of duty over the next week."""
    notifier = services.notifier
    tz = services.timezone
    now = now or datetime.now(UTC)
    current = on_call(notifier.contacts, now, notifier.tz)
    rows: list[list[Any]] = []
    previous = current
    at = now
    while at < now + timedelta(hours=SCHEDULE_HOURS):
        at += SCHEDULE_STEP
        who = on_call(notifier.contacts, at, notifier.tz)
        if who != previous:
            rows.append([fmt_time(int(at.timestamp() * 1e9), lang, tz), who or t("nobody", lang)])
            previous = who
    head = (f"<p class='vigie-on-call-now'>{html.escape(t('On call now', lang))}: "
            f"<b>{html.escape(current or t('nobody', lang))}</b></p>")
    return head + _table([t("From", lang), t("On call", lang)], rows[:50], "vigie-rota")


def policies_html(services: PageServices, lang: str) -> str:
    """Return each policy with its steps, resolved as the rota names them now."""
    notifier = services.notifier
    now = datetime.now(UTC)
    parts = []
    for policy in notifier.policies.values():
        rows = [[i + 1, ", ".join(step.whom), ", ".join(c.name for c in resolve(notifier.contacts, step.whom, now,
                                                                                 notifier.tz)),
                 ", ".join(step.channels), f"{step.wait_s:g} s"] for i, step in enumerate(policy.steps)]
        parts.append(f"<h4>{html.escape(policy.name)} <small>({html.escape(t('then', lang))} "
                     f"{html.escape(t(THEN.get(policy.then, policy.then), lang))})</small></h4>"
                     + _table([t("Step", lang), t("Whom", lang), t("Now", lang), t("Channels", lang),
                               t("Wait", lang)], rows, "vigie-policy"))
    return "".join(parts) or f"<p>{html.escape(t('No escalation policy', lang))}</p>"


class ContactsView:
    """One session's Contacts page."""

    def __init__(self, services: PageServices, auth: WebAuth, lang: str) -> None:
        self.services = services
        self.auth = auth
        self.lang = lang
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vigie-contacts-status"])
        self.policy = pn.widgets.Select(options=list(services.notifier.policies), width=220)
        self.test = pn.widgets.Button(label=t("Send a test to step 1", lang),
                                      disabled=not allowed(auth.page_identity(), "notify:edit") or not
                                      services.notifier.policies)
        self.test.on_click(lambda _e: self.send_test())

    def send_test(self) -> None:
        try:
            require(self.auth.page_identity(), "notify:edit")
        except Forbidden as exc:
            self.status.object = f"<span style='color:#c62828'>{html.escape(exc.explain(self.lang))}</span>"
            return
        name = self.policy.value
        if name not in self.services.notifier.policies:
            return
        sent = self.services.notifier.send_test(name)
        who = ", ".join(f"{s['contact']} ({'/'.join(s['channels'])})" for s in sent) or t("nobody", self.lang)
        self.status.object = (f"<span style='color:#2e7d32'>{html.escape(t('Test sent', self.lang))}: "
                              f"{html.escape(who)}</span>")

    def view(self) -> list[Any]:
        lang = self.lang
        return [pn.pane.Markdown(f"## {t('Contacts', lang)}"),
                pn.pane.HTML(people_html(self.services, lang), sizing_mode="stretch_width"),
                pn.pane.Markdown(f"### {t('On call', lang)}"),
                pn.pane.HTML(on_call_html(self.services, lang), sizing_mode="stretch_width"),
                pn.pane.Markdown(f"### {t('Escalation policies', lang)}"),
                pn.pane.HTML(policies_html(self.services, lang), sizing_mode="stretch_width"),
                pn.Row(self.policy, self.test), self.status]


def contacts_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's Contacts page."""
    lang = session_lang()
    view = ContactsView(services, auth, lang)
    return page(services, "/contacts", t("Contacts", lang), *view.view(), lang=lang, identity=auth.page_identity())
