"""Status grid: one coloured cell per device, so an operator sees at a glance which are silent or failing.

A device is whatever names series in the live cache (``device/metric``).
Its state, worst first: the alarm engine's state for it (when there is an
engine), ``stale`` when none of its series has a reading newer than
``stale_after_s``, ``bad`` / ``uncertain`` from the quality of its series'
latest readings, else ``ok``. The state is written in the cell as well as
coloured, for colour-blind operators and for print.
"""

from __future__ import annotations

import html

import panel as pn
import param

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import LiveHTML, WidgetContext, WidgetView
from app.globs import matches
from app.i18n import N_, fmt_age, t
from app.model import now_ns

STATE_COLORS = {
    "ok": "#2e7d32",
    "uncertain": "#ef6c00",
    "bad": "#c62828",
    "stale": "#757575",
    "warning": "#f9a825",
    "alarm": "#b71c1c",
}
STATE_LABELS = {"ok": N_("ok"), "uncertain": N_("uncertain"), "bad": N_("bad quality"), "stale": N_("stale"),
                "warning": N_("warning"), "alarm": N_("alarm")}


class StatusGridSpec(WidgetSpec):
    """A grid of devices coloured by state: ok, bad quality, stale, in alarm."""

    spec_type = "status_grid"
    label = N_("Status grid")

    devices = param.List(default=["*"], item_type=str, doc="Device name patterns (glob: *, ?, [abc]).")
    stale_after_s = param.Number(default=120.0, bounds=(1, None), doc="Grey when no reading is newer than this.")
    columns = param.Integer(default=4, bounds=(1, 12), doc="Cells per row.")

    def device_patterns(self) -> list[str]:
        """Return the devices shown (their new readings wake the dashboard)."""
        return list(self.devices)

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.devices:
            problems.append((("devices",), "give at least one pattern ('*' for every device)"))
        return problems

    def view(self, ctx: WidgetContext) -> StatusGridView:
        """Return the live view."""
        return StatusGridView(self, ctx)


class StatusGridView(WidgetView):
    """Regroups series by device only when the cache changed; re-renders only when a cell changed."""

    spec: StatusGridSpec

    def build(self) -> pn.viewable.Viewable:
        self.html = LiveHTML(css_class="vigie-status-grid")
        self._version = -1
        self._nkeys = -1
        self._devices: dict[str, list[str]] = {}  # device -> its series keys
        self._summary: dict[str, tuple[int, str]] = {}  # device -> (newest time_ns, worst quality)
        self.cells: list[tuple[str, str, float]] = []  # (device, state, age_s), for tests and embeds
        self.refresh()
        return self.html.panel

    def _regroup(self) -> None:
        """Map each matching device to its series (only when series were added)."""
        live = self.ctx.live
        keys = live.keys()
        if len(keys) == self._nkeys:
            return
        self._nkeys = len(keys)
        devices: dict[str, list[str]] = {}
        for key in keys:
            ring = live.get(key)
            if ring is not None and matches(ring.device, self.spec.devices):
                devices.setdefault(ring.device, []).append(key)
        self._devices = devices

    def _summarise(self) -> None:
        """Take each device's newest reading time and worst latest quality."""
        live = self.ctx.live
        summary = {}
        for device, keys in self._devices.items():
            newest, quality = 0, "good"
            for key in keys:
                ring = live.get(key)
                latest = ring.latest() if ring else None
                if latest is None:
                    continue
                newest = max(newest, latest.time_ns)
                if latest.quality == "bad" or (latest.quality == "uncertain" and quality == "good"):
                    quality = latest.quality
            summary[device] = (newest, quality)
        self._summary = summary

    def state(self, device: str, age_s: float, quality: str) -> str:
        """Return the cell state of a device: the alarm engine's first, then staleness, then quality."""
        device_state = getattr(self.ctx.alarms, "device_state", None)
        if device_state is not None:
            alarm = device_state(device)
            if alarm:
                return alarm if alarm in STATE_COLORS else "alarm"
        if age_s > self.spec.stale_after_s:
            return "stale"
        if quality == "bad":
            return "bad"
        if quality == "uncertain":
            return "uncertain"
        return "ok"

    def render(self) -> str:
        """Return the grid's HTML."""
        if not self.cells:
            return f"<div class='vigie-empty'>{t('No data yet', self.lang)}</div>"
        parts = [f"<div class='vigie-grid' style='display:grid;gap:4px;"
                 f"grid-template-columns:repeat({self.spec.columns},minmax(0,1fr))'>"]
        for device, state, age in self.cells:
            color = STATE_COLORS.get(state, STATE_COLORS["alarm"])
            label = t(STATE_LABELS.get(state, state), self.lang)
            parts.append(
                f"<div class='vigie-cell' data-device='{html.escape(device)}' data-state='{html.escape(state)}' "
                f"title='{html.escape(device)}: {html.escape(label)}' "
                f"style='background:{color};color:#fff;border-radius:4px;padding:4px 6px;overflow:hidden'>"
                f"<b style='white-space:nowrap'>{html.escape(device)}</b><br>"
                f"<small>{fmt_age(age, self.lang)} · {html.escape(label)}</small></div>")
        parts.append("</div>")
        return "".join(parts)

    def refresh(self) -> None:
        live = self.ctx.live
        if live.version != self._version:
            self._version = live.version
            self._regroup()
            self._summarise()
        now = now_ns()
        cells = []
        for device in sorted(self._summary):
            newest, quality = self._summary[device]
            age = max(0.0, (now - newest) / 1e9)
            cells.append((device, self.state(device, age, quality), age))
        self.cells = cells
        self.html.object = self.render()
