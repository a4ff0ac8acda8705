"""Table of latest values: one row per series matching the patterns, formatted per language.

The Tabulator is filled once; afterwards each refresh sends only the cells
that changed (``patch``), and replaces the whole table only when the set of
series changed (a new device appeared). Values are shown as formatted text,
so ``1 234,5`` reads right for a French operator.
"""

from __future__ import annotations

import pandas as pd
import panel as pn
import param

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext, WidgetView
from app.globs import literal, matches
from app.i18n import N_, fmt_age, fmt_number, fmt_time, t
from app.model import now_ns

COLUMNS = {  # column -> header label (translated)
    "series": N_("Series"),
    "device": N_("Device"),
    "metric": N_("Metric"),
    "value": N_("Value"),
    "unit": N_("Unit"),
    "age": N_("Age"),
    "quality": N_("Quality"),
    "time": N_("Last reading"),
}
DEFAULT_COLUMNS = ["series", "value", "unit", "age", "quality"]


class TableSpec(WidgetSpec):
    """Latest value, unit, age and quality of every series matching the patterns."""

    spec_type = "table"
    label = N_("Table")

    series = param.List(default=["*"], item_type=str, doc="Series key patterns (glob on device/metric).")
    columns = param.ListSelector(default=list(DEFAULT_COLUMNS), objects=list(COLUMNS), doc="Columns shown, in order.")
    decimals = param.Integer(default=2, bounds=(0, 6), doc="Decimals shown.")
    max_rows = param.Integer(default=200, bounds=(1, 5000), doc="At most this many series (first by name).")

    def series_keys(self) -> list[str]:
        return literal(self.series)

    def device_patterns(self) -> list[str]:
        """Return the devices shown (their new readings wake the dashboard)."""
        return sorted({p.split("/", 1)[0] if "/" in p else "*" for p in self.series})

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.series:
            problems.append((("series",), "give at least one pattern ('*' for every series)"))
        if not self.columns:
            problems.append((("columns",), "choose at least one column"))
        return problems

    def view(self, ctx: WidgetContext) -> TableView:
        """Return the live view."""
        return TableView(self, ctx)


class TableView(WidgetView):
    """Patches the cells that changed; rebuilds the frame only when rows come or go."""

    spec: TableSpec

    def build(self) -> pn.viewable.Viewable:
        self._version = -1
        self._nkeys = -1
        self._keys: list[str] = []
        self._shown: list[str] = []  # series of the rows in the table, in order
        cols = list(self.spec.columns)
        self.table = pn.widgets.Tabulator(
            pd.DataFrame({c: pd.Series(dtype=object) for c in cols}), disabled=True, show_index=False,
            titles={c: t(COLUMNS[c], self.lang) for c in cols}, text_align={"value": "right", "age": "right"},
            sizing_mode="stretch_both", layout="fit_data_stretch", css_classes=["vigie-table"])
        self.refresh()
        return self.table

    def _match(self) -> None:
        """Find the matching series (only when series were added to the cache)."""
        keys = self.ctx.live.keys()
        if len(keys) == self._nkeys:
            return
        self._nkeys = len(keys)
        patterns = self.spec.series
        self._keys = [k for k in keys if matches(k, patterns)][: self.spec.max_rows]
        if self.notes.visible:
            self.check_series()

    def rows(self) -> list[tuple[str, tuple[str, ...]]]:
        """Return (series, formatted cells in column order) per matching series."""
        live, lang, cols = self.ctx.live, self.lang, self.spec.columns
        now = now_ns()
        out = []
        for key in self._keys:
            ring = live.get(key)
            latest = ring.latest() if ring else None
            if latest is None:
                continue
            cells = {
                "series": key,
                "device": latest.device,
                "metric": latest.metric,
                "value": fmt_number(latest.value, lang, self.spec.decimals),
                "unit": latest.unit,
                "age": fmt_age(max(0.0, (now - latest.time_ns) / 1e9), lang),
                "quality": t(str(latest.quality), lang),
                "time": fmt_time(latest.time_ns, lang, self.ctx.tz),
            }
            out.append((key, tuple(cells[c] for c in cols)))
        return out

    def refresh(self) -> None:
        if self.ctx.live.version != self._version:
            self._version = self.ctx.live.version
            self._match()
        rows = self.rows()
        cols = list(self.spec.columns)
        keys = [key for key, _ in rows]
        if keys != self._shown:
            self._shown = keys
            self.table.value = pd.DataFrame([cells for _, cells in rows], columns=cols)
            return
        current = self.table.value
        patch: dict[str, list[tuple[int, str]]] = {}
        for j, col in enumerate(cols):
            old = current[col].tolist()
            changed = [(i, cells[j]) for i, (_, cells) in enumerate(rows) if cells[j] != old[i]]
            if changed:
                patch[col] = changed
        if patch:
            self.table.patch(patch)
