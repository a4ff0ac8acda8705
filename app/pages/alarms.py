"""The alarm console: alarms by priority and age, acknowledge / shelve / maintenance, the journal, the load.

Operators work here: the alarms that need somebody (unacknowledged first,
then by severity and age), acknowledged one or several at once with a
comment, shelved for a while with a reason, a device put in maintenance.
The journal below filters by site, device, rule, severity and time and
exports what it shows as CSV; the load figures say whether the alarm system
is usable (ISA-18.2 / EEMUA 191). Colours and labels of states live here,
in the pages, not in the engine.

Acting needs the operator role, checked in each callback on the server
against the session's login at that moment (a hidden button is not a
check); the journal records who acted.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn

from app.alarms.load import alarm_load
from app.i18n import N_, event_label, fmt_number, fmt_span, fmt_time, t, tabulator_locale
from app.model import AlarmState, now_ns
from app.pages.shell import page, session_arg, session_lang
from app.refresh import every
from app.web.access import Forbidden, allowed, require

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

STATE_LABEL = {
    AlarmState.UNACKNOWLEDGED: N_("Unacknowledged"), AlarmState.ACKNOWLEDGED: N_("Acknowledged"),
    AlarmState.RETURNED_UNACKNOWLEDGED: N_("Returned, unacknowledged"), AlarmState.SHELVED: N_("Shelved"),
    AlarmState.SUPPRESSED: N_("Suppressed"), AlarmState.OUT_OF_SERVICE: N_("Out of service"),
    AlarmState.NORMAL: N_("Normal"),
}
STATE_ORDER = [AlarmState.UNACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED, AlarmState.ACKNOWLEDGED,
               AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE]
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
SHELVE_CHOICES = {"15 min": 900, "1 h": 3600, "8 h": 8 * 3600, "24 h": 86400}
JOURNAL_RANGES = {"1 h": 3600, "24 h": 86400, "7 d": 7 * 86400, "30 d": 30 * 86400}


def console_rows(services: PageServices, shadow: bool = False) -> list[dict[str, Any]]:
    """Return the alarms to show, unacknowledged first, then by severity, then oldest first.

    ``shadow``: the alarms of rules in shadow mode instead (what they would have raised, live; never notified).
    """
    engine = services.alarms
    rows = [a.as_dict() for a in engine.alarms(include_shadow=True) if (a.rule.mode == "shadow") == shadow]
    return sorted(rows, key=lambda a: (STATE_ORDER.index(AlarmState(a["state"])),
                                       SEVERITY_ORDER.get(a["severity"], 9), a["time_ns"]))


def console_frame(services: PageServices, lang: str, shadow: bool = False, site: str = "") -> pd.DataFrame:
    """Return the console's table: one row per alarm (of one site when given), its id kept for the actions."""
    tz = services.timezone
    rows = [{
        "id": a["alarm_id"],
        t("State", lang): t(STATE_LABEL.get(AlarmState(a["state"]), a["state"]), lang),
        t("Severity", lang): t(a["severity"], lang),
        t("Since", lang): fmt_time(a["time_ns"], lang, tz),
        t("Site", lang): a.get("site") or "",
        t("Series", lang): a["series"],
        t("Message", lang): a["message"],
        t("Value", lang): "" if a["value"] is None else f"{fmt_number(a['value'], lang)} {a['unit']}".strip(),
        t("Present", lang): "●" if a["active"] else "",
        t("Comment", lang): " · ".join(x for x in (a.get("acked_by"), a.get("comment"), a.get("reason")) if x),
    } for a in console_rows(services, shadow) if not site or a.get("site") == site]
    columns = ["id", *(t(c, lang) for c in (N_("State"), N_("Severity"), N_("Since"), N_("Site"), N_("Series"),
                                            N_("Message"), N_("Value"), N_("Present"), N_("Comment")))]
    return pd.DataFrame(rows, columns=columns)


def journal_frame(rows: list[dict[str, Any]], lang: str, tz: str) -> pd.DataFrame:
    """Return journal rows as the page's table."""
    return pd.DataFrame([{
        t("Time", lang): fmt_time(r["time_ns"], lang, tz), t("Event", lang): event_label(r["kind"] or "", lang),
        t("State", lang): t(STATE_LABEL.get(r["state"], r["state"] or ""), lang) if r["state"] else "",
        t("Rule", lang): r["rule"], t("Series", lang): r["key"], t("Severity", lang): t(r["severity"] or "", lang),
        t("Message", lang): r["message"], t("By", lang): r["user"], t("Comment", lang): r["comment"],
    } for r in rows], columns=[t(c, lang) for c in (N_("Time"), N_("Event"), N_("State"), N_("Rule"), N_("Series"),
                                                     N_("Severity"), N_("Message"), N_("By"), N_("Comment"))])


def load_html(figures: dict[str, Any], lang: str) -> str:
    """Return the load figures as a small HTML block (user text escaped)."""
    top = ", ".join(f"{html.escape(r)} ({n})" for r, n in figures["top_rules"]) or "–"
    chatter = ", ".join(f"{html.escape(c['alarm_id'])} ({c['most_in_a_minute']}/min)"
                        for c in figures["chattering"][:10]) or "–"
    stale = ", ".join(f"{html.escape(s['alarm_id'])} ({fmt_span(str(s['days']) + ' d', lang)})"
                      for s in figures["stale"][:10]) or "–"
    return (f"<div class='vigie-alarm-load'><b>{t('Alarms per hour', lang)}</b>: "
            f"{fmt_number(figures['per_hour'], lang, 2)} · "
            f"<b>{t('Busiest 10 minutes', lang)}</b>: {figures['busiest_10_min']} · "
            f"<b>{t('Raised', lang)}</b>: {figures['raised']}<br>"
            f"<b>{t('Most frequent rules', lang)}</b>: {top}<br>"
            f"<b>{t('Chattering', lang)}</b>: {chatter}<br><b>{t('Stale', lang)}</b>: {stale}</div>")


def cascades_html(services: PageServices, lang: str, tz: str) -> str:
    """Return the escalations in progress: each one's alarms, who was told (when, how), who is next and when."""
    views = services.notifier.cascade_view()
    if not views:
        return f"<p class='vigie-cascades-none'>{t('No escalation in progress', lang)}</p>"
    e = html.escape
    rows = []
    for v in views:
        told = "<br>".join(f"{t('step', lang)} {x['step']}: {e(x['contact'] or t('nobody on call', lang))} "
                           f"({e(', '.join(x['channels']))}) {fmt_time(int(x['at'] * 1e9), lang, tz)}"
                           for x in v["told"][-10:])
        nxt = v["next"]
        if nxt:
            when = fmt_time(int(nxt["at"] * 1e9), lang, tz)
            quiet = f" ({t('quiet hours', lang)})" if nxt.get("quiet") else ""
            nxt_text = (f"{t('step', lang)} {nxt['step']}: {e(', '.join(nxt['whom']) or t('nobody on call', lang))}"
                        f" ({e(', '.join(nxt['channels']))}) {when}{quiet}")
        else:
            nxt_text = t("none (last step done)", lang)
        rows.append(f"<tr><td>{e(', '.join(v['alarms']))}</td><td>{e(v['policy'])}</td><td>{told}</td>"
                    f"<td>{nxt_text}</td></tr>")
    head = "".join(f"<th>{t(h, lang)}</th>" for h in (N_("Alarms"), N_("Policy"), N_("Told"), N_("Next")))
    return f"<table class='vigie-cascades'><tr>{head}</tr>{''.join(rows)}</table>"


class AlarmConsole:
    """One session's console: the table, the actions, the journal and the load."""

    def __init__(self, services: PageServices, lang: str, auth: WebAuth) -> None:
        self.services = services
        self.lang = lang
        self.auth = auth
        self.tz = services.timezone
        identity = auth.page_identity()
        self.editing = allowed(identity, "alarms:ack")
        self.audit_category = None if allowed(identity, "audit:read") else "!audit"  # logins: admins only
        self.table = pn.widgets.Tabulator(console_frame(services, lang, site=session_arg("site") or ""),
                                          selectable="checkbox", disabled=True,
                                          configuration=tabulator_locale(lang),
                                          show_index=False, hidden_columns=["id"], sizing_mode="stretch_width",
                                          height=360, name="alarm-console")
        self.comment = pn.widgets.TextInput(placeholder=t("Comment", lang), width=320)
        self.ack = pn.widgets.Button(label=t("Acknowledge", lang), color="primary")
        self.shelve_for = pn.widgets.Select(options={fmt_span(k, lang): k for k in SHELVE_CHOICES}, value="1 h",
                                            width=90)
        self.shelve = pn.widgets.Button(label=t("Shelve", lang))
        self.device = pn.widgets.TextInput(placeholder=t("Device", lang), width=200)
        self.maintenance = pn.widgets.Button(label=t("Maintenance on/off", lang))
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", name="console-status")
        self.shadow = pn.widgets.Checkbox(label=t("Shadow rules (what they would raise, never notified)", lang))
        self.shadow.param.watch(lambda _e: self.refresh(force=True), "value")
        for button, action in ((self.ack, self.on_ack), (self.shelve, self.on_shelve),
                               (self.maintenance, self.on_maintenance)):
            button.disabled = not self.editing
            button.on_click(lambda _e, act=action: act())
        self._version = -1
        # The journal: filters, table, CSV link.
        sites = sorted({a.get("site") or "" for a in services.alarms.active()} - {""})
        wanted = session_arg("site") or ""  # the overview's link to a site's alarms
        self.f_site = pn.widgets.Select(label=t("Site", lang), options=sorted({"", wanted, *sites}), value=wanted,
                                        width=140)
        self.f_device = pn.widgets.TextInput(label=t("Device", lang), width=140, value=session_arg("device") or "")
        self.f_rule = pn.widgets.Select(label=t("Rule", lang), options=["", *(r.name for r in (
            services.alarms.rules))], width=180)
        self.f_severity = pn.widgets.Select(label=t("Severity", lang), options={
            "": "", **{t(s, lang): s for s in ("low", "medium", "high", "critical")}}, width=110)
        self.f_range = pn.widgets.Select(label=t("Range", lang), options={fmt_span(k, lang): k for k in JOURNAL_RANGES},
                                         value="24 h", width=90)
        self.journal = pn.widgets.Tabulator(pd.DataFrame(), disabled=True,
                                            configuration=tabulator_locale(lang), show_index=False,
                                            sizing_mode="stretch_width", height=300, name="alarm-journal",
                                            pagination="local", page_size=50)
        self.csv = pn.pane.HTML("", name="journal-csv")
        self.load = pn.pane.HTML("", sizing_mode="stretch_width", name="alarm-load")
        self.cascades = pn.pane.HTML(cascades_html(services, lang, self.tz), sizing_mode="stretch_width",
                                     name="alarm-cascades")
        self._cascades_text = self.cascades.object
        for w in (self.f_device, self.f_rule, self.f_severity, self.f_range):
            w.param.watch(lambda _e: self.refresh_journal(), "value")
        self.f_site.param.watch(lambda _e: self.refresh(force=True), "value")  # the table and the journal
        self.refresh_journal()

    # -- actions (each checks on the server) ------------------------------------------------------------
    def selected_ids(self) -> list[str]:
        frame = self.table.value
        return [frame.iloc[i]["id"] for i in self.table.selection if i < len(frame)]

    def _allowed(self, action: str = "alarms:ack") -> str | None:
        """Return who acts when the session's user may do ``action`` now; else say why and return None."""
        try:
            return require(self.auth.page_identity(), action).label
        except Forbidden as exc:
            self.say(exc.explain(self.lang), error=True)
            return None

    def on_ack(self) -> None:
        ids = self.selected_ids()
        if (who := self._allowed()) is None or not self._some(ids):
            return
        events = self.services.alarms.acknowledge(ids, who, self.comment.value.strip()[:2000])
        self.comment.value = ""
        self.say(f"{t('Acknowledged', self.lang)}: {len(events)}")
        self.refresh(force=True)

    def on_shelve(self) -> None:
        ids = self.selected_ids()
        if (who := self._allowed()) is None or not self._some(ids):
            return
        reason = self.comment.value.strip()[:2000]
        if not reason:
            self.say(t("Say why in the comment before shelving", self.lang), error=True)
            return
        events = self.services.alarms.shelve(ids, SHELVE_CHOICES[self.shelve_for.value], who, reason)
        self.comment.value = ""
        self.say(f"{t('Shelved', self.lang)}: {len(events)}")
        self.refresh(force=True)

    def on_maintenance(self) -> None:
        device = self.device.value.strip()
        if (who := self._allowed("devices:maintenance")) is None or not device:
            return
        on = device not in self.services.alarms.maintenance
        self.services.alarms.set_maintenance(device, on, who, self.comment.value.strip()[:2000])
        label = N_("Maintenance on") if on else N_("Maintenance off")
        self.say(f"{html.escape(device)}: {t(label, self.lang)}")
        self.refresh(force=True)

    def _some(self, ids: list[str]) -> bool:
        if not ids:
            self.say(t("Select one or more alarms first", self.lang), error=True)
        return bool(ids)

    def say(self, text: str, error: bool = False) -> None:
        colour = "#c62828" if error else "#2e7d32"
        self.status.object = f"<span class='vigie-console-status' style='color:{colour}'>{html.escape(text)}</span>"

    # -- refresh -----------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        engine = self.services.alarms
        version = engine.version if engine is not None else 0
        text = cascades_html(self.services, self.lang, self.tz)  # steps move on with time, not only with events
        if text != self._cascades_text:
            self._cascades_text = self.cascades.object = text
        if version == self._version and not force:
            return
        self._version = version
        with pn.io.hold():
            self.table.value = console_frame(self.services, self.lang, self.shadow.value, self.f_site.value)
            self.refresh_journal()

    def journal_filters(self) -> dict[str, Any]:
        end = now_ns()
        return {"start_ns": end - JOURNAL_RANGES[self.f_range.value] * 10**9, "end_ns": None,
                "site": self.f_site.value or None, "device": self.f_device.value.strip() or None,
                "rule": self.f_rule.value or None, "severity": self.f_severity.value or None,
                "category": self.audit_category}

    def refresh_journal(self) -> None:
        journal = self.services.journal
        filters = self.journal_filters()
        rows = journal.query(limit=2000, **filters)
        self.journal.value = journal_frame(rows, self.lang, self.tz)
        query = {"format": "csv", "start": filters["start_ns"], "limit": 10000,
                 **{k: v for k, v in filters.items() if v and k in ("site", "device", "rule", "severity")}}
        self.csv.object = (f"<a class='vigie-journal-csv' href='/api/v1/alarms/journal?"
                           f"{html.escape(urllib.parse.urlencode(query))}' download>{t('Export CSV', self.lang)}</a>")
        end = now_ns()
        day = journal.query(start_ns=end - 86400 * 10**9, kind="raised", limit=100_000)
        shown = self.services.alarms.active()
        self.load.object = load_html(alarm_load(day, shown, end - 86400 * 10**9, end), self.lang)

    def view(self) -> list[Any]:
        lang = self.lang
        actions = pn.Row(self.comment, self.ack, self.shelve_for, self.shelve, self.device, self.maintenance)
        rules_link = pn.pane.HTML(f"<a class='vigie-rules-link' href='/alarm-rules'>{t('Alarm rules', lang)} →</a>")
        return [pn.pane.Markdown(f"## {t('Alarms', lang)}"), pn.Row(rules_link, self.shadow), self.table, actions,
                self.status,
                pn.pane.Markdown(f"## {t('Escalations', lang)}"), self.cascades,
                pn.pane.Markdown(f"## {t('Alarm load (24 h)', lang)}"), self.load,
                pn.pane.Markdown(f"## {t('Journal', lang)}"),
                pn.Row(self.f_site, self.f_device, self.f_rule, self.f_severity, self.f_range), self.csv,
                self.journal]


def alarms_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's alarm console."""
    lang = session_lang()
    console = AlarmConsole(services, lang, auth)
    every(console.refresh, 1000)
    return page(services, "/alarms", t("Alarms", lang), *console.view(), lang=lang, identity=auth.page_identity())
