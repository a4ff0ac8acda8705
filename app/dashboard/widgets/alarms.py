"""Active alarms: the alarm engine's current alarms at or above a severity, newest first.

Without alarm rules (the config's ``alarms`` section: ``ctx.alarms`` is None)
the widget says so instead of showing an empty table that would read as
"all is well".
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn
import param

from app.alarms.rules import SEVERITIES, SEVERITY_CLASS
from app.dashboard.alarm_style import STATE_COLOR
from app.dashboard.spec import WidgetSpec
from app.dashboard.view import LiveHTML, WidgetContext, WidgetView
from app.i18n import N_, fmt_time, t

COLUMNS = ("time", "severity", "series", "message", "state")
STATES = {"unacknowledged": N_("Unacknowledged"), "acknowledged": N_("Acknowledged"),
          "returned_unacknowledged": N_("Returned, unacknowledged"), "shelved": N_("Shelved"),
          "suppressed": N_("Suppressed"), "out_of_service": N_("Out of service"), "normal": N_("Normal")}
TITLES = {"time": N_("Time"), "severity": N_("Severity"), "series": N_("Series"), "message": N_("Message"),
          "state": N_("State")}


def severity_rank(severity: Any) -> int:
    """Return a severity's rank; an unknown one ranks highest, so it is never hidden."""
    try:
        return SEVERITIES.index(str(severity).lower())
    except ValueError:
        return len(SEVERITIES)


class AlarmsSpec(WidgetSpec):
    """A table of the active alarms."""

    spec_type = "alarms"
    label = N_("Active alarms")

    severity_min = param.Selector(default="low", objects=list(SEVERITIES), doc="Hide alarms below this severity.")
    max_rows = param.Integer(default=20, bounds=(1, 500), doc="At most this many alarms, newest first.")

    def view(self, ctx: WidgetContext) -> AlarmsView:
        """Return the live view."""
        return AlarmsView(self, ctx)


class AlarmsView(WidgetView):
    """An HTML table in a Bokeh ``Div`` (LiveHTML), rewritten only when an alarm was raised or cleared.

    A Tabulator per session made every raise or clear a 50-session storm: each
    session re-serialized its table at the same moment, and the event loop
    stopped for 2-3 s (bench/sessions.py with py-spy). One ``Div`` text change
    per session costs what a value tile's does.
    """

    spec: AlarmsSpec

    def build(self) -> pn.viewable.Viewable:
        self._rows: list[tuple[str, ...]] | None = None
        self._version: int | None = None  # the engine's raise/clear count at the last refresh
        self.html = LiveHTML(css_class="vigie-alarms")
        self.refresh()
        return self.html.panel

    def rows(self, alarms: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        """Return the alarms to show as formatted rows (and each one's severity), newest first."""
        floor = severity_rank(self.spec.severity_min)
        kept = [a for a in alarms if severity_rank(a.get("severity")) >= floor]
        kept.sort(key=lambda a: a.get("time_ns", 0), reverse=True)
        return [(fmt_time(int(a.get("time_ns", 0)), self.lang, self.ctx.tz), t(str(a.get("severity", "")), self.lang),
                 str(a.get("series", "")), str(a.get("message", "")),
                 t(STATES.get(str(a.get("state", "")), str(a.get("state", ""))), self.lang),
                 str(a.get("severity", "")))  # the last, untranslated, picks the row's colour
                for a in kept[: self.spec.max_rows]]

    def render(self, rows: list[tuple[str, ...]]) -> str:
        """Return the table's HTML (every cell escaped: messages come from rules and devices)."""
        if not rows:
            return f"<div class='vigie-note'>{t('No active alarm', self.lang)}</div>"
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(t(TITLES[c], self.lang))}</th>"
                       for c in COLUMNS)
        body = []
        for *shown, severity in rows:
            color = STATE_COLOR[SEVERITY_CLASS.get(severity, "alarm")]
            cells = "".join(f"<td style='padding:2px 8px'>{html.escape(v)}</td>" for v in shown)
            body.append(f"<tr style='border-left:4px solid {color}'>{cells}</tr>")
        return (f"<table class='vigie-alarm-rows' style='border-collapse:collapse;width:100%;font-size:.9em'>"
                f"<tr style='border-bottom:1px solid #dde3e8'>{head}</tr>{''.join(body)}</table>")

    def refresh(self) -> None:
        version = getattr(self.ctx.alarms, "version", None)
        if version is not None and version == self._version:
            return  # no alarm raised or cleared since the last refresh
        self._version = version
        active = getattr(self.ctx.alarms, "active", None)
        if active is None:
            self.html.object = f"<div class='vigie-note'>{t('No alarm rules configured', self.lang)}</div>"
            return
        rows = self.rows(list(active()))
        if rows != self._rows:
            self._rows = rows
            self.html.object = self.render(rows)
