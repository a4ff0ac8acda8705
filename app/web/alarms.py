"""REST handlers of the alarms: the list, acknowledge, shelve, maintenance, and the journal (JSON or CSV).

Until logins exist, acting on alarms follows the same switch as dashboard
editing (``server.editing``): a read-only server answers 403. The user is
"anonymous"; :func:`current_user` is the one seat where the login will
put a name.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import tornado.web

from app.alarms.backtest import backtest_on_history
from app.alarms.rule_file import RuleEditor, RuleError
from app.alarms.rules import RULE_KINDS
from app.model import name_problem
from app.web.json_api import JsonHandler

if TYPE_CHECKING:
    pass

MAX_BODY = 64_000
MAX_IDS = 1000


def current_user(handler: tornado.web.RequestHandler | None = None) -> str:
    """Return who is acting (the access-control issue replaces this with the logged-in user)."""
    return "anonymous"


class _AlarmHandler(JsonHandler):
    def body(self) -> dict[str, Any] | None:
        """Return the JSON object of a state-changing request, or answer 400/403 and return None."""
        if not self.runtime.loaded.config.server.editing:
            self.answer(403, {"error": "this server is read-only: acting on alarms is disabled"})
            return None
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

    def alarm_ids(self, doc: dict[str, Any]) -> list[str] | None:
        ids = doc.get("alarm_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or not all(isinstance(i, str) for i in ids):
            self.answer(400, {"error": f"'alarm_ids' must be a list of 1 to {MAX_IDS} alarm ids (rule|series)"})
            return None
        engine = self.runtime.alarms
        unknown = [i for i in ids if engine.alarm(i) is None]
        if unknown:
            self.answer(404, {"error": "unknown alarm ids", "unknown": unknown[:20]})
            return None
        return ids


class AlarmsHandler(_AlarmHandler):
    """``GET /api/v1/alarms``: the alarms to show (any state but normal) and the last transitions."""

    def get(self) -> None:
        engine = self.runtime.alarms
        self.answer(200, {"rules": len(engine.rules), "active": engine.active(),
                          "unacknowledged": engine.unacknowledged(), "transitions": list(engine.transitions)[::-1]})


class AcknowledgeHandler(_AlarmHandler):
    """``POST /api/v1/alarms/acknowledge``: ``{"alarm_ids": [...], "comment": "..."}``."""

    def post(self) -> None:
        engine = self.runtime.alarms
        if (doc := self.body()) is None or (ids := self.alarm_ids(doc)) is None:
            return
        comment = str(doc.get("comment") or "")[:2000]
        events = engine.acknowledge(ids, current_user(self), comment)
        self.answer(200, {"acknowledged": [e.alarm_id for e in events]})


class ShelveHandler(_AlarmHandler):
    """``POST /api/v1/alarms/shelve``: ``{"alarm_ids": [...], "duration_s": 3600, "reason": "..."}``."""

    def post(self) -> None:
        engine = self.runtime.alarms
        if (doc := self.body()) is None or (ids := self.alarm_ids(doc)) is None:
            return
        duration = doc.get("duration_s")
        reason = str(doc.get("reason") or "").strip()[:2000]
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not 60 <= duration <= 7 * 86400:
            self.answer(400, {"error": "'duration_s' must be a number of seconds from 60 to 604800 (a week)"})
            return
        if not reason:
            self.answer(400, {"error": "'reason' is required: say why the alarm is shelved"})
            return
        events = engine.shelve(ids, float(duration), current_user(self), reason)
        self.answer(200, {"shelved": [e.alarm_id for e in events]})


class MaintenanceHandler(_AlarmHandler):
    """``POST /api/v1/devices/<device>/maintenance``: ``{"on": true, "reason": "..."}``."""

    def post(self, device: str) -> None:
        problem = name_problem(device, "device")
        if problem is not None:
            self.answer(400, {"error": problem})
            return
        engine = self.runtime.alarms
        if (doc := self.body()) is None:
            return
        on = doc.get("on")
        if not isinstance(on, bool):
            self.answer(400, {"error": "'on' must be true or false"})
            return
        events = engine.set_maintenance(device, on, current_user(self), str(doc.get("reason") or "")[:2000])
        self.answer(200, {"device": device, "maintenance": on, "alarms": [e.alarm_id for e in events]})


class RulesHandler(_AlarmHandler):
    """``GET /api/v1/alarms/rules``: every rule as its spec, with the series it matches (none: said so)."""

    def get(self) -> None:
        engine = self.runtime.alarms
        rules = []
        for rule in engine.rules:
            matched = engine.matched_series(rule)
            rules.append({"spec": rule.to_spec(), "matched": len(matched), "series": matched[:50]})
        self.answer(200, {"rules": rules, "file": self.runtime.rule_editor.path.name,
                          "kinds": sorted(RULE_KINDS)})


class RuleHandler(_AlarmHandler):
    """``PUT /api/v1/alarms/rules/<name>`` (the rule as a ``type:`` object) and ``DELETE``.

    A PUT whose body names another rule renames it. Problems come back as
    400 with each field's path and message.
    """

    def put(self, name: str) -> None:
        doc = self.body()
        if doc is None:
            return
        try:
            rule = self.runtime.rule_editor.save(doc, user=current_user(self), replaces=name)
        except RuleError as exc:
            self.answer(400, {"error": "invalid rule", "problems": [{"where": w, "message": m}
                                                                   for w, m in exc.problems[:50]]})
            return
        self.answer(200, {"saved": rule.name, "spec": rule.to_spec(),
                          "matched": len(self.runtime.alarms.matched_series(rule))})

    def delete(self, name: str) -> None:
        if self.body() is None:
            return
        try:
            self.runtime.rule_editor.delete(name, user=current_user(self))
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

    async def post(self) -> None:
        try:
            doc = json.loads(self.request.body or b"{}")
            start, end = int(doc["start"]), int(doc["end"])
        except (ValueError, KeyError, TypeError, RecursionError):
            self.answer(400, {"error": "expected {\"rule\": {...}, \"start\": ns, \"end\": ns}"})
            return
        if not isinstance(doc.get("rule"), dict) or end <= start or end - start > 400 * 86400 * 10**9:
            self.answer(400, {"error": "give a rule object and a range of at most 400 days"})
            return
        try:
            rule = RuleEditor.build(doc["rule"])
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

    async def get(self) -> None:
        journal = self.runtime.journal
        try:
            start = self._int("start")
            end = self._int("end")
            limit = min(10_000, self._int("limit") or 500)
            offset = self._int("offset") or 0
        except ValueError:
            self.answer(400, {"error": "start, end (ns), limit and offset must be integers"})
            return
        filters = {k: self.get_query_argument(k, None) for k in ("site", "device", "rule", "severity", "kind",
                                                                 "alarm_id", "category")}
        rows = await asyncio.to_thread(journal.query, start_ns=start, end_ns=end, limit=limit, offset=offset,
                                       **filters)
        if self.get_query_argument("format", "json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="vigie-alarm-journal.csv"')
            self.finish(journal.to_csv(rows))
            return
        self.answer(200, {"events": rows, "limit": limit, "offset": offset,
                          "next_offset": offset + len(rows) if len(rows) == limit else None})

    def _int(self, name: str) -> int | None:
        raw = self.get_query_argument(name, None)
        return None if raw in (None, "") else int(raw)
