"""Active alarms: the alarm engine's current alarms at or above a severity, newest first.

Without alarm rules (the config's ``alarms`` section: ``ctx.alarms`` is None)
the widget says so instead of showing an empty table that would read as
"all is well".
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from app.alarms.engine import SEVERITIES
from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext, WidgetView
from app.i18n import fmt_time, t

COLUMNS = ("time", "severity", "series", "message", "state")
TITLES = {"time": "Time", "severity": "Severity", "series": "Series", "message": "Message", "state": "State"}


def severity_rank(severity: Any) -> int:
    """Return a severity's rank; an unknown one ranks highest, so it is never hidden."""
    try:
        return SEVERITIES.index(str(severity).lower())
    except ValueError:
        return len(SEVERITIES)


class AlarmsSpec(WidgetSpec):
    """A table of the active alarms."""

    spec_type = "alarms"
    label = "Active alarms"

    severity_min = param.Selector(default="low", objects=list(SEVERITIES), doc="Hide alarms below this severity.")
    max_rows = param.Integer(default=20, bounds=(1, 500), doc="At most this many alarms, newest first.")

    def view(self, ctx: WidgetContext) -> AlarmsView:
        """Return the live view."""
        return AlarmsView(self, ctx)


class AlarmsView(WidgetView):
    """Replaces the table's rows only when the list of alarms changed."""

    spec: AlarmsSpec

    def build(self) -> pn.viewable.Viewable:
        self._rows: list[tuple[str, ...]] | None = None
        self._version: int | None = None  # the engine's raise/clear count at the last refresh
        self.message = pn.pane.HTML("", sizing_mode="stretch_width", visible=False, css_classes=["vigie-note"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(COLUMNS)), disabled=True, show_index=False, visible=False,
            titles={c: t(TITLES[c], self.lang) for c in COLUMNS}, sizing_mode="stretch_both",
            layout="fit_data_stretch", css_classes=["vigie-alarms"])
        self.refresh()
        return pn.Column(self.message, self.table, sizing_mode="stretch_both", margin=0)

    def rows(self, alarms: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        """Return the alarms to show as formatted rows, newest first."""
        floor = severity_rank(self.spec.severity_min)
        kept = [a for a in alarms if severity_rank(a.get("severity")) >= floor]
        kept.sort(key=lambda a: a.get("time_ns", 0), reverse=True)
        return [(fmt_time(int(a.get("time_ns", 0)), self.lang, self.ctx.tz), t(str(a.get("severity", "")), self.lang),
                 str(a.get("series", "")), str(a.get("message", "")), t(str(a.get("state", "")), self.lang))
                for a in kept[: self.spec.max_rows]]

    def refresh(self) -> None:
        version = getattr(self.ctx.alarms, "version", None)
        if version is not None and version == self._version:
            return  # no alarm raised or cleared since the last refresh
        self._version = version
        active = getattr(self.ctx.alarms, "active", None)
        if active is None:
            if not self.message.visible:
                self.message.object = t("No alarm rules configured", self.lang)
                self.message.visible = True
            return
        rows = self.rows(list(active()))
        if rows == self._rows:
            return
        self._rows = rows
        self.table.value = pd.DataFrame(rows, columns=list(COLUMNS))
        empty = not rows
        self.table.visible = not empty  # "No active alarm", not an empty table under it
        self.message.object = t("No active alarm", self.lang) if empty else ""
        self.message.visible = empty
