"""REST handlers of the alarms: the list, acknowledge, shelve, maintenance, rules, and the journal (JSON or CSV).

Each handler names the action of each method (:mod:`app.web.access`):
acknowledging and shelving need an operator, editing a rule an analyst as
long as the rule stays out of service (shadow or disabled), putting one
live an admin (:func:`rule_action`). The journal records who acted; its
``audit`` events (logins, changes) are for admins only.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

import param

from app.alarms.backtest import backtest_on_history
from app.alarms.journal import FILTERS
from app.alarms.rule_file import RuleEditor, RuleError
from app.alarms.rules import RULE_KINDS, AlarmRule
from app.model import name_problem
from app.spec import Spec
from app.web.access import allowed
from app.web.json_api import JsonHandler, PageQuery
from app.web.openapi import Op

if TYPE_CHECKING:
    from app.alarms.engine import AlarmEngine

MAX_BODY = 64_000
MAX_IDS = 1000


OFF_DUTY = ("shadow", "disabled")


class AckBody(Spec):
    """Acknowledge alarms."""

    required = ("alarm_ids",)
    alarm_ids = param.List(default=None, item_type=str, bounds=(1, MAX_IDS), doc="Alarm ids: rule|device/metric.")
    comment = param.String(default="", doc="Why, what was done (kept in the journal).")


class ShelveBody(Spec):
    """Shelve alarms for a while."""

    required = ("alarm_ids", "duration_s", "reason")
    alarm_ids = param.List(default=None, item_type=str, bounds=(1, MAX_IDS), doc="Alarm ids: rule|device/metric.")
    duration_s = param.Number(default=3600, bounds=(60, 7 * 86400), doc="How long, 1 minute to a week.")
    reason = param.String(default="", doc="Why (required, not blank).")


class MaintenanceBody(Spec):
    """Put a device in or out of maintenance."""

    required = ("on",)
    on = param.Boolean(default=False, doc="True: in maintenance (its alarms suppressed).")
    reason = param.String(default="")


class JournalQuery(PageQuery):
    """Filters of the journal."""

    limit = param.Integer(default=500, bounds=(1, 10_000), doc="Events per page.")
    start = param.Integer(default=None, allow_None=True, doc="From this time (ns since the epoch).")
    end = param.Integer(default=None, allow_None=True, doc="Before this time (ns since the epoch).")
    site = param.String(default=None, allow_None=True)
    device = param.String(default=None, allow_None=True)
    rule = param.String(default=None, allow_None=True)
    severity = param.String(default=None, allow_None=True)
    kind = param.String(default=None, allow_None=True, doc="raised, cleared, acknowledged, shelved, login ...")
    alarm_id = param.String(default=None, allow_None=True)
    category = param.String(default=None, allow_None=True, doc="alarm, config, notification, audit (admins).")
    format = param.Selector(default="json", objects=["json", "csv"])


class BacktestBody(Spec):
    """A rule and a time range to replay the stored history through."""

    required = ("rule", "start", "end")
    rule = param.Dict(default={}, doc="A rule, as in the rules file (type: threshold, ...).")
    start = param.Integer(default=0, doc="ns since the epoch")
    end = param.Integer(default=0, doc="ns since the epoch; at most 400 days after start")


def rule_action(engine: AlarmEngine, new_mode: str | None, replaces: str | None) -> str:
    """Return the action a rule change needs: ``rules:edit`` while it stays out of service, else ``rules:enable``.

    ``new_mode`` is the mode the rule will have (None: deleted); ``replaces``
    the name of the rule it changes (None: a new rule).
    """
    old = next((r for r in engine.rules if r.name == replaces), None) if replaces else None
    if (old is not None and old.mode not in OFF_DUTY) or (new_mode is not None and new_mode not in OFF_DUTY):
        return "rules:enable"
    return "rules:edit"


class _AlarmHandler(JsonHandler):
    def alarm_ids_known(self, ids: list[str] | None) -> bool:
        """Answer 400 for no ids, 404 when an id names no alarm, and return False; True when all are known."""
        if not ids:
            self.answer(400, {"error": f"'alarm_ids' must be a list of 1 to {MAX_IDS} alarm ids (rule|series)"})
            return False
        unknown = [i for i in ids if self.runtime.alarms.alarm(i) is None]
        if unknown:
            self.answer(404, {"error": "unknown alarm ids", "unknown": unknown[:20]})
            return False
        return True

    def body(self) -> dict[str, Any] | None:
        """Return the JSON object of a state-changing request, or answer 400 and return None."""
        if len(self.request.body) > MAX_BODY:
            self.answer(413, {"error": f"body over {MAX_BODY} bytes"})
            return None
        try:
            doc = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError) as exc:
            self.answer(400, {"error": f"body is not JSON: {str(exc)[:200]}"})
            return None
        if not isinstance(doc, dict):
            self.answer(400, {"error": "expected a JSON object"})
            return None
        return doc


class AlarmsHandler(_AlarmHandler):
    """``GET /api/v1/alarms``: the alarms to show (any state but normal) and the last transitions."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Alarms to show (any state but normal, a page of them), the "
                                              "unacknowledged count and the last transitions", query=PageQuery)}

    def get(self) -> None:
        engine = self.runtime.alarms
        active = self.page(engine.active())
        if active is None:
            return
        self.answer(200, {"rules": len(engine.rules), "active": active,
                          "unacknowledged": engine.unacknowledged(), "transitions": list(engine.transitions)[::-1]})


class AcknowledgeHandler(_AlarmHandler):
    """``POST /api/v1/alarms/acknowledge``: ``{"alarm_ids": [...], "comment": "..."}``."""

    actions: ClassVar[dict[str, str]] = {"POST": "alarms:ack"}
    api: ClassVar[dict[str, Op]] = {"POST": Op("Acknowledge alarms, with a comment", body=AckBody, example={
        "alarm_ids": ["dam high|dam-1/water_level"], "comment": "crew on site"})}

    def post(self) -> None:
        engine = self.runtime.alarms
        if (doc := self.body_spec(AckBody)) is None or not self.alarm_ids_known(doc.alarm_ids):
            return
        events = engine.acknowledge(doc.alarm_ids, self.who, doc.comment[:2000])
        self.answer(200, {"acknowledged": [e.alarm_id for e in events]})


class ShelveHandler(_AlarmHandler):
    """``POST /api/v1/alarms/shelve``: ``{"alarm_ids": [...], "duration_s": 3600, "reason": "..."}``."""

    actions: ClassVar[dict[str, str]] = {"POST": "alarms:ack"}
    api: ClassVar[dict[str, Op]] = {"POST": Op("Shelve alarms for a while, with a reason", body=ShelveBody)}

    def post(self) -> None:
        engine = self.runtime.alarms
        if (doc := self.body_spec(ShelveBody)) is None:
            return
        reason = doc.reason.strip()[:2000]
        if not reason:
            self.answer(400, {"error": "'reason' is required: say why the alarm is shelved"})
            return
        if not self.alarm_ids_known(doc.alarm_ids):
            return
        events = engine.shelve(doc.alarm_ids, float(doc.duration_s), self.who, reason)
        self.answer(200, {"shelved": [e.alarm_id for e in events]})


class MaintenanceHandler(_AlarmHandler):
    """``POST /api/v1/devices/<device>/maintenance``: ``{"on": true, "reason": "..."}``."""

    actions: ClassVar[dict[str, str]] = {"POST": "devices:maintenance"}
    api: ClassVar[dict[str, Op]] = {"POST": Op("Put a device in or out of maintenance", body=MaintenanceBody)}

    def post(self, device: str) -> None:
        problem = name_problem(device, "device")
        if problem is not None:
            self.answer(400, {"error": problem})
            return
        engine = self.runtime.alarms
        if (doc := self.body_spec(MaintenanceBody)) is None:
            return
        on = doc.on
        events = engine.set_maintenance(device, on, self.who, doc.reason[:2000])
        self.answer(200, {"device": device, "maintenance": on, "alarms": [e.alarm_id for e in events]})


class RulesHandler(_AlarmHandler):
    """``GET /api/v1/alarms/rules``: every rule as its spec, with the series it matches (none: said so)."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Rules (a page), each with the series it matches", query=PageQuery)}

    def get(self) -> None:
        engine = self.runtime.alarms
        rules = []
        page = self.page(list(engine.rules))
        if page is None:
            return
        for rule in page:
            matched = engine.matched_series(rule)
            rules.append({"spec": rule.to_spec(), "matched": len(matched), "series": matched[:50]})
        self.answer(200, {"rules": rules, "file": self.runtime.rule_editor.path.name,
                          "kinds": sorted(RULE_KINDS)})


class RuleHandler(_AlarmHandler):
    """``PUT /api/v1/alarms/rules/<name>`` (the rule as a ``type:`` object) and ``DELETE``.

    A PUT whose body names another rule renames it. Problems come back as
    400 with each field's path and message. An analyst may change rules that
    stay in shadow or disabled mode; a live rule needs an admin.
    """

    actions: ClassVar[dict[str, str]] = {"PUT": "rules:edit", "DELETE": "rules:edit"}
    api: ClassVar[dict[str, Op]] = {
        "PUT": Op("Add or change a rule (a body naming another rule renames it); an analyst's stays in shadow or "
                  "disabled mode", body=AlarmRule),
        "DELETE": Op("Delete a rule (400 when composite rules need it)")}

    def put(self, name: str) -> None:
        doc = self.body()
        if doc is None:
            return
        mode = doc.get("mode", "enabled")
        if not self.require(rule_action(self.runtime.alarms, mode if isinstance(mode, str) else "enabled", name)):
            return
        try:
            rule = self.runtime.rule_editor.save(doc, user=self.who, replaces=name)
        except RuleError as exc:
            self.answer(400, {"error": "invalid rule", "problems": [{"where": w, "message": m}
                                                                   for w, m in exc.problems[:50]]})
            return
        self.answer(200, {"saved": rule.name, "spec": rule.to_spec(),
                          "matched": len(self.runtime.alarms.matched_series(rule))})

    def delete(self, name: str) -> None:
        if self.body() is None or not self.require(rule_action(self.runtime.alarms, None, name)):
            return
        try:
            self.runtime.rule_editor.delete(name, user=self.who)
        except KeyError:
            self.answer(404, {"error": f"no rule named {name[:100]!r}"})
            return
        except RuleError as exc:
            self.answer(400, {"error": "other rules need it", "problems": [{"where": w, "message": m}
                                                                          for w, m in exc.problems[:50]]})
            return
        self.answer(200, {"deleted": name})


class BacktestHandler(_AlarmHandler):
    """``POST /api/v1/alarms/backtest``: ``{"rule": {...}, "start": ns, "end": ns}``: what it would have done.

    Read-only (nothing is saved or notified), so it needs no editing right.
    """

    actions: ClassVar[dict[str, str]] = {"POST": "view"}
    api: ClassVar[dict[str, Op]] = {"POST": Op("Replay the stored history through a rule: what it would have "
                                               "raised (nothing saved or sent)", body=BacktestBody)}

    async def post(self) -> None:
        if (doc := self.body_spec(BacktestBody)) is None:
            return
        start, end = doc.start, doc.end
        if end <= start or end - start > 400 * 86400 * 10**9:
            self.answer(400, {"error": "give a range of at most 400 days, end after start"})
            return
        try:
            rule = RuleEditor.build(doc.rule)
        except RuleError as exc:
            self.answer(400, {"error": "invalid rule", "problems": [{"where": w, "message": m}
                                                                   for w, m in exc.problems[:50]]})
            return
        result = await backtest_on_history(rule, self.runtime.store, start, end)
        summary = result["summary"]
        self.answer(200, {
            "series": result["series"], "left_out": result["left_out"], "readings": result["readings"],
            "count": summary["count"], "per_day": round(summary["per_day"], 3), "longest_s": summary["longest_s"],
            "episodes": [{"series": e.key, "start_ns": e.start_ns, "end_ns": e.end_ns, "duration_s": e.duration_s,
                          "severity": e.severity, "message": e.message} for e in summary["episodes"][:1000]],
        })


class JournalHandler(_AlarmHandler):
    """``GET /api/v1/alarms/journal``: events newest first; ``?format=csv`` to export.

    Filters: ``site``, ``device``, ``rule``, ``severity``, ``kind``,
    ``alarm_id``, ``category``, ``start`` / ``end`` (ns), ``limit`` (at most
    10,000) and ``offset`` to page.
    """

    api: ClassVar[dict[str, Op]] = {"GET": Op("Journal events, newest first (JSON, or CSV with format=csv)",
                                              query=JournalQuery, ok_type=("application/json", "text/csv"))}

    async def get(self) -> None:
        journal = self.runtime.journal
        if (q := self.query_spec(JournalQuery)) is None:
            return
        start, end, limit, offset = q.start, q.end, q.limit, q.offset
        filters = {k: getattr(q, k) for k in FILTERS}
        if filters["category"] == "audit" and not self.require("audit:read"):
            return
        if filters["category"] is None and not allowed(self.identity, "audit:read"):
            filters["category"] = "!audit"  # the alarm history, without who logged in from where
        rows = await asyncio.to_thread(journal.query, start_ns=start, end_ns=end, limit=limit, offset=offset,
                                       **filters)
        if q.format == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="vigie-alarm-journal.csv"')
            self.finish(journal.to_csv(rows))
            return
        self.answer(200, {"events": rows, "limit": limit, "offset": offset,
                          "next_offset": offset + len(rows) if len(rows) == limit else None})
