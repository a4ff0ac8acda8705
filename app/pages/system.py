"""The system page (admins): ingest health per source, rejected inputs with reasons, the store.

It is the detailed health: broker names, last errors and previews of rejected
payloads, so only a user whose role has ``health:detail`` sees it.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd
import panel as pn

from app.i18n import N_, fmt_decimal, fmt_number, fmt_time, t, tabulator_locale
from app.pages.shell import page, session_lang
from app.pages.status import latest_frame
from app.refresh import every
from app.web.access import Forbidden, allowed

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth


def sources_frame(services: PageServices, lang: str) -> pd.DataFrame:
    """Return one row per source."""
    rows = []
    for name, s in services.health()["sources"].items():
        rows.append({t("source", lang): name, t("type", lang): s["type"], t("state", lang): t(s["state"], lang),
                     t("readings/s", lang): fmt_number(s["readings_per_s"], lang, 1),
                     t("total", lang): s["readings_total"], t("Rejected inputs", lang): s["dead_letters"]["total"],
                     t("last error", lang): s["last_error"] or ""})
    return pd.DataFrame(rows)


def dead_letters_html(services: PageServices, lang: str) -> str:
    """Return the recent rejected inputs of every source, and the readings the store refused, as an HTML table."""
    rows = []
    tz = services.timezone
    for dead in services.dead_letters():
        for d in list(dead.recent)[-20:]:
            rows.append(f"<tr><td>{fmt_time(d.time_ns, lang, tz)}</td><td>{html.escape(d.source)}</td>"
                        f"<td>{html.escape(d.where)}</td><td>{html.escape(d.kind)}</td>"
                        f"<td>{html.escape(d.reason)}</td><td><code>{html.escape(d.preview)}</code></td></tr>")
    if not rows:
        return "<p>–</p>"
    head = "".join(f"<th>{t(h, lang)}</th>" for h in (N_("time"), N_("source"), N_("where"), N_("kind"),
                                                        N_("reason"), N_("payload")))
    return f"<table class='table table-sm vigie-dead-letters'><tr>{head}</tr>" + "".join(rows[-50:]) + "</table>"


def _flatten(doc: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _value(value: object, lang: str) -> str:
    """Return a health value as text in ``lang``: numbers formatted, yes/no for booleans."""
    if isinstance(value, bool):
        return t(N_("yes") if value else N_("no"), lang)
    if isinstance(value, int):
        return fmt_number(value, lang, 0)
    if isinstance(value, float):
        return fmt_number(value, lang, 2 if abs(value) < 100 else 0)
    if value is None:
        return "–"
    return str(value)


# The /health keys of the store and the live side, as the System page names them (an unknown key shows as it is).
HEALTH_LABELS = {
    "store": N_("Store"), "live": N_("Live series"), "engine": N_("Engine"), "path": N_("Path"),
    "series": N_("Series"), "url": N_("URL"), "database": N_("Database"), "measurement": N_("Measurement"),
    "retention_policy": N_("Retention policy"), "api": N_("API"), "bucket": N_("Bucket"), "reachable": N_("Reachable"),
    "version": N_("Version"), "last_ping_ok": N_("Last ping answered"), "last_ping_age_s": N_("Last ping (s ago)"),
    "available": N_("Available"), "queue_depth": N_("Queue depth"), "awaiting_durability": N_("Awaiting durability"),
    "written_total": N_("Written in all"), "rejected_total": N_("Refused in all"), "rejected": N_("Refused"),
    "total": N_("total"), "by_kind": N_("By kind"), "recent": N_("Recent"), "spool_files": N_("Spool files"),
    "spool_readings": N_("Spooled readings"), "last_error": N_("last error"),
    "last_flush_ms": N_("Last write (ms)"), "capacity_per_series": N_("Capacity per series"), "pulse": N_("Pulse"),
    "running": N_("Running"), "listeners": N_("Listening dashboards"), "pulses_total": N_("Pulses in all"),
    "wakes_total": N_("Wake-ups in all"), "errors_total": N_("Errors in all"),
}


def store_html(services: PageServices, lang: str = "en") -> str:
    """Return the store writer's state, and what the live side holds (series, open dashboards).

    Each row is named in ``lang``; its ``/health`` key (what an admin finds in the API) is its tooltip.
    """
    health = services.health()
    rows = _flatten({"store": health["store"], "live": health["live"]})

    def label(key: str) -> str:
        return " · ".join(t(HEALTH_LABELS.get(part, part), lang) for part in key.split("."))

    return ("<table class='vigie-store' style='font-size:.9em'>" + "".join(
        f"<tr title='{html.escape(k, quote=True)}'><td style='padding-right:1.5em'><b>{html.escape(label(k))}</b></td>"
        f"<td>{html.escape(_value(v, lang))}</td></tr>" for k, v in rows) + "</table>")


LIVE_COLUMNS = {"series": N_("Series"), "device": N_("Device"), "metric": N_("Metric"), "value": N_("Value"),
                "unit": N_("Unit"), "age_s": N_("Age (s)"), "quality": N_("Quality"), "tags": N_("Tags")}


def live_frame(services: PageServices, lang: str) -> pd.DataFrame:
    """Return the live cache's latest values, with headers and qualities in ``lang``."""
    frame = latest_frame(services)
    frame["quality"] = [t(q, lang) for q in frame["quality"]]
    # As text, formatted for the language: Tabulator would group and point every number the English way.
    frame["value"] = [fmt_decimal(v, lang) for v in frame["value"]]
    frame["age_s"] = [fmt_number(a, lang, 1) for a in frame["age_s"]]
    return frame.rename(columns={k: t(v, lang) for k, v in LIVE_COLUMNS.items()})


def layouts_html(services: PageServices, lang: str) -> str:
    """Return how many layouts the server found, and where (the report itself when there are none)."""
    count, report = services.layouts_report()
    where = report.partition(" in ")[2] if count else report
    return (f"<p class='vigie-layouts-report'>{html.escape(t('Layouts', lang))}: {count}"
            f"{' · ' if where else ''}<code>{html.escape(where)}</code></p>")


def system_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's system page."""
    lang = session_lang()
    identity = auth.page_identity()
    if not allowed(identity, "health:detail"):
        return page(services, "/system", t("System", lang),
                    pn.pane.Alert(html.escape(Forbidden(identity, "health:detail").explain(lang)),
                                  alert_type="warning"),
                    lang=lang, identity=identity)
    sources = pn.widgets.Tabulator(sources_frame(services, lang), disabled=True,
                                   configuration=tabulator_locale(lang), show_index=False,
                                   sizing_mode="stretch_width")
    dead = pn.pane.HTML(dead_letters_html(services, lang), sizing_mode="stretch_width")
    store = pn.pane.HTML(store_html(services, lang), sizing_mode="stretch_width")
    series = pn.widgets.Tabulator(live_frame(services, lang), disabled=True,
                                  configuration=tabulator_locale(lang), show_index=False,
                                  sizing_mode="stretch_width", height=400, name="latest")

    def refresh() -> None:
        with pn.io.hold():
            sources.value = sources_frame(services, lang)
            dead.object = dead_letters_html(services, lang)
            store.object = store_html(services, lang)
            series.value = live_frame(services, lang)

    every(refresh, 2000)
    return page(services, "/system", t("System", lang),
                pn.pane.Markdown(f"## {t('Ingest sources', lang)}"), sources,
                pn.pane.Markdown(f"## {t('Rejected inputs', lang)}"), dead,
                pn.pane.Markdown(f"## {t('Store', lang)}"), store,
                pn.pane.HTML(layouts_html(services, lang), sizing_mode="stretch_width"),
                pn.pane.Markdown(f"## {t('Live series', lang)}"), series, lang=lang, identity=identity)
