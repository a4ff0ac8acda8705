"""The first page: every series with its latest value, unit, age and quality, live.

The table is refreshed by this session's own periodic callback from the
server-wide live cache (pull): ingest never runs session code. The callback
ends with the session, so nothing is left behind when a tab closes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd
import panel as pn

from app.refresh import every

if TYPE_CHECKING:
    from app.pages.services import PageServices

REFRESH_MS = 1000

_COLUMNS = ["series", "device", "metric", "value", "unit", "age_s", "quality", "tags"]


def latest_frame(services: PageServices) -> pd.DataFrame:
    """Return the live cache's latest values as a table."""
    now = time.time_ns()
    rows = [
        {
            "series": v.key,
            "device": v.device,
            "metric": v.metric,
            "value": round(v.value, 4),
            "unit": v.unit,
            "age_s": round(max(0, now - v.time_ns) / 1e9, 1),
            "quality": str(v.quality),
            "tags": ", ".join(f"{k}={t}" for k, t in sorted(v.tags.items())),
        }
        for v in services.live.latest()
    ]
    return pd.DataFrame(rows, columns=_COLUMNS)


def health_markdown(services: PageServices) -> str:
    """Return a short text summary of ingest and store health."""
    h = services.health()
    lines = [f"**Status:** {h['status']}  ·  **store:** {h['store']['engine']['engine']} "
             f"({'up' if h['store']['available'] else 'DOWN'}, queue {h['store']['queue_depth']}, "
             f"spool {h['store']['spool_readings']})"]
    for name, s in h["sources"].items():
        lines.append(f"- **{name}** ({s['type']}): {s['state']}, {s['readings_per_s']} readings/s, "
                     f"{s['dead_letters']['total']} rejected")
    return "\n".join(lines)


def status_page(services: PageServices) -> pn.template.BootstrapTemplate:
    """Build one session's status page."""
    table = pn.widgets.Tabulator(
        latest_frame(services), disabled=True, show_index=False, sizing_mode="stretch_width",
        height=600, pagination=None, name="latest",
    )
    health = pn.pane.Markdown(health_markdown(services), sizing_mode="stretch_width")

    def refresh() -> None:
        with pn.io.hold():
            table.value = latest_frame(services)
            health.object = health_markdown(services)

    every(refresh, REFRESH_MS)
    template = pn.template.BootstrapTemplate(title="Vigie", header_background="#0b3d5c")
    template.main.append(pn.Column("## Live series", health, table, sizing_mode="stretch_width"))
    return template
