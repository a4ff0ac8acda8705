"""The alarm journal: every event kept on disk, queryable, exportable; and the alarm state across restarts.

A SQLite file (the standard library's: nothing to install, one writer
process, safe against a crash mid-write) holds:

- ``events``: every :class:`~app.model.AlarmEvent` (transitions,
  acknowledgements with their comment, shelves, maintenance, rule edits),
  with who and when; the notifier adds its delivery attempts here too;
- ``alarm_state`` and ``maintenance``: what a restart must not forget
  (acknowledged alarms stay acknowledged, a device stays in maintenance).

The engine hands events to :meth:`Journal.record` on the ingest path, so
recording only appends to a list; :meth:`Journal.run` writes the list in
one transaction every ``flush_s`` from a worker thread, and once at stop.
Old events are removed after ``retention_days``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.model import AlarmEvent, now_ns

if TYPE_CHECKING:
    from app.alarms.engine import AlarmEngine

log = logging.getLogger(__name__)

COLUMNS = ("time_ns", "kind", "state", "previous", "rule", "key", "device", "metric", "site", "severity",
           "message", "value", "unit", "limit", "level", "policy", "shadow", "user", "comment", "alarm_id", "category")
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_INSERT = f"INSERT INTO events ({_COLS}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,
  {_COLS});
CREATE INDEX IF NOT EXISTS events_time ON events (time_ns);
CREATE INDEX IF NOT EXISTS events_alarm ON events (alarm_id, time_ns);
CREATE TABLE IF NOT EXISTS alarm_state (alarm_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL, updated_ns INTEGER);
CREATE TABLE IF NOT EXISTS maintenance (device TEXT PRIMARY KEY, info TEXT NOT NULL);
"""
FILTERS = ("site", "device", "rule", "severity", "kind", "alarm_id", "category")


def _row(event: AlarmEvent, category: str) -> tuple:
    d = event.as_dict()
    d["category"] = category
    d["shadow"] = int(bool(d["shadow"]))
    return tuple(d.get(c) for c in COLUMNS)


class Journal:
    """Alarm events and state in a SQLite file."""

    def __init__(self, path: Path, *, retention_days: float = 400, flush_s: float = 0.2) -> None:
        self.path = Path(path)
        self.retention_ns = int(retention_days * 86400 * 1e9)
        self.flush_s = flush_s
        self._pending: list[tuple] = []
        self._dirty: set[str] = set()
        self._engine: AlarmEngine | None = None
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_purge = 0
        self.written = 0
        self.last_error: str | None = None

    # -- life ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (create) the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(_SCHEMA)
        self._con = con

    def close(self) -> None:
        """Write what is pending and close."""
        self.flush()
        if self._con is not None:
            self._con.close()
            self._con = None

    def attach(self, engine: AlarmEngine) -> int:
        """Restore the engine's alarms and maintenance from the file, then follow its events; return how many."""
        state, maintenance = self.load_state()
        n = engine.restore(state, maintenance)
        self._engine = engine
        engine.subscribe(self.record)
        engine.note_listeners.append(self.note)
        return n

    async def run(self) -> None:
        """Write pending events every ``flush_s`` until stopped, then once more."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:  # a full disk must not stop the alarms: say so, retry next time
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("alarm journal write failed")
        await asyncio.to_thread(self.close)

    async def stop(self) -> None:
        """Ask :meth:`run` to write what is left and return."""
        self._stopping.set()
        self._wake.set()

    # -- writing -----------------------------------------------------------------------------------------
    def record(self, event: AlarmEvent, category: str = "alarm") -> None:
        """Take one event (an engine subscriber: appends, never blocks)."""
        self._pending.append(_row(event, category))
        self._dirty.add(event.alarm_id)

    def note(self, kind: str, *, user: str, comment: str = "", rule: str = "", key: str = "",
             device: str = "", category: str = "config", time_ns: int | None = None) -> None:
        """Record something that is not an alarm transition (a rule edited, a layout saved)."""
        event = AlarmEvent(kind, "", "", rule, key, device, "", time_ns or now_ns(), "", comment, user=user,
                           comment=comment)
        self._pending.append(_row(event, category))

    def flush(self) -> None:
        """Write pending events and the changed alarms' state in one transaction."""
        if self._con is None:
            return
        with self._lock:
            rows, self._pending = self._pending, []
            dirty, self._dirty = self._dirty, set()
            states = self._states(dirty)
            maintenance = dict(self._engine.maintenance) if self._engine is not None else None
            con = self._con
            try:
                con.execute("BEGIN")
                if rows:
                    con.executemany(_INSERT, rows)
                for alarm_id, snap in states.items():
                    if snap is None:
                        con.execute("DELETE FROM alarm_state WHERE alarm_id = ?", (alarm_id,))
                    else:
                        con.execute("INSERT OR REPLACE INTO alarm_state VALUES (?, ?, ?)",
                                    (alarm_id, json.dumps(snap), now_ns()))
                if maintenance is not None and (rows or states):
                    con.execute("DELETE FROM maintenance")
                    con.executemany("INSERT INTO maintenance VALUES (?, ?)",
                                    [(d, json.dumps(info)) for d, info in maintenance.items()])
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                self._pending[:0] = rows
                self._dirty |= dirty
                raise
            self.written += len(rows)
            self._purge()

    def _states(self, alarm_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        if self._engine is None:
            return out
        for alarm_id in alarm_ids:
            alarm = self._engine.alarm(alarm_id)
            out[alarm_id] = alarm.snapshot() if alarm is not None and (alarm.shown or alarm.active) else None
        return out

    def _purge(self) -> None:
        now = now_ns()
        if now - self._last_purge < 3600 * 10**9:
            return
        self._last_purge = now
        assert self._con is not None
        self._con.execute("DELETE FROM events WHERE time_ns < ?", (now - self.retention_ns,))

    # -- reading -----------------------------------------------------------------------------------------
    def load_state(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Return the kept alarm state and the devices in maintenance."""
        assert self._con is not None
        with self._lock:
            state = {a: json.loads(s) for a, s in self._con.execute("SELECT alarm_id, snapshot FROM alarm_state")}
            maintenance = {d: json.loads(i) for d, i in self._con.execute("SELECT device, info FROM maintenance")}
        return state, maintenance

    def query(self, *, start_ns: int | None = None, end_ns: int | None = None, limit: int = 500, offset: int = 0,
              **filters: str | None) -> list[dict[str, Any]]:
        """Return events newest first, filtered by time and by any of :data:`FILTERS`.

        A filter's value is an exact match, or with a leading ``!`` an exclusion (``category="!audit"``:
        the alarm history without the audit log, for those who may not read it).
        """
        where, args = [], []
        if start_ns is not None:
            where.append("time_ns >= ?")
            args.append(start_ns)
        if end_ns is not None:
            where.append("time_ns < ?")
            args.append(end_ns)
        for key, value in filters.items():
            if key not in FILTERS:
                raise ValueError(f"unknown journal filter {key!r}; one of {', '.join(FILTERS)}")
            if value and value.startswith("!"):
                where.append(f'"{key}" IS NOT ?')
                args.append(value[1:])
            elif value:
                where.append(f'"{key}" = ?')
                args.append(value)
        sql = (f"SELECT {_COLS} FROM events" + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY time_ns DESC, id DESC LIMIT ? OFFSET ?")
        self.flush()
        assert self._con is not None
        with self._lock:
            rows = self._con.execute(sql, [*args, max(1, min(limit, 100_000)), max(0, offset)]).fetchall()
        return [dict(zip(COLUMNS, r, strict=True)) for r in rows]

    @staticmethod
    def to_csv(rows: list[dict[str, Any]]) -> str:
        """Return rows as CSV (a header, then one line per event; formulas neutralised for spreadsheets)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in COLUMNS])
        return out.getvalue()

    def health(self) -> dict[str, Any]:
        return {"path": str(self.path), "written_total": self.written, "pending": len(self._pending),
                "last_error": self.last_error}


def _cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (user text reaches the export)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
