"""The overview: every site with its status colour, worst alarm, alarm counts, silent devices and last reading age.

Each tile answers "is anything wrong here": its colour is the worst of its
present alarms and its data (stale, bad quality); it counts the alarms
present and those nobody acknowledged yet (outlined until somebody does),
names the devices gone silent (even when the site's newest reading is
fresh: one dead sensor must not hide behind its neighbours), and links to
the site's alarms on the console.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections import defaultdict
from typing import TYPE_CHECKING

import panel as pn

from app.alarms.rules import SEVERITY_CLASS
from app.i18n import fmt_age, t
from app.pages.shell import page, session_lang
from app.refresh import every

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

STALE_AFTER_S = 120
NO_SITE = "—"  # devices whose readings carry no site tag
# Inline: the page's stylesheet does not reach into the HTML pane's shadow root.
TILE_STYLE = ("display:inline-block;vertical-align:top;margin:6px;padding:10px 14px;border-radius:6px;"
              "color:#fff;min-width:180px;line-height:1.4;")
COLORS = {"ok": "#2e7d32", "bad": "#c62828", "stale": "#757575", "alarm": "#c62828", "warning": "#ef6c00"}
RANK = {"ok": 0, "stale": 1, "warning": 2, "bad": 3, "alarm": 4}  # a site shows the worst of its states


def site_states(services: PageServices) -> list[dict]:
    """Return one row per site: state, devices, last reading age, worst alarm."""
    now = time.time_ns()
    sites: dict[str, list] = defaultdict(list)
    for v in services.live.latest():
        sites[v.tags.get("site", NO_SITE)].append(v)
    rows = []
    alarms = getattr(services, "alarms", None)
    shown = alarms.alarms() if alarms is not None else []
    for site, values in sorted(sites.items()):
        newest = max(v.time_ns for v in values)
        age = max(0.0, (now - newest) / 1e9)
        state = "ok"
        if age > STALE_AFTER_S:
            state = "stale"
        elif any(v.quality == "bad" for v in values):
            state = "bad"
        # Alarms of devices with no site tag carry no site: they belong to the "(no site)" tile.
        worst = alarms.worst_for_site(None if site == NO_SITE else site) if alarms is not None else None
        if worst:
            state = max(state, SEVERITY_CLASS.get(worst["severity"], "alarm"), key=RANK.__getitem__)
        key = None if site == NO_SITE else site
        mine = [a for a in shown if a.site == key]
        newest_by_device: dict[str, int] = {}
        for v in values:
            newest_by_device[v.device] = max(newest_by_device.get(v.device, 0), v.time_ns)
        silent = {d for d, t_ns in newest_by_device.items() if (now - t_ns) / 1e9 > STALE_AFTER_S}
        silent |= {a.device for a in mine if a.active and a.level == "silent"}  # no-data rules, their own interval
        rows.append({"site": site, "state": state, "age_s": age, "devices": len(newest_by_device),
                     "worst_alarm": worst, "active": sum(1 for a in mine if a.active),
                     "unacknowledged": sum(1 for a in mine if a.state in ("unacknowledged", "returned_unacknowledged")),
                     "silent": sorted(silent)})
    return rows


def overview_html(services: PageServices, lang: str) -> str:
    """Return the site tiles."""
    tiles = []
    for row in site_states(services):
        worst = html.escape(row["worst_alarm"]["message"]) if row["worst_alarm"] else t("no alarm", lang)
        name = row["site"] if row["site"] != NO_SITE else t("(no site)", lang)
        unack = row["unacknowledged"]
        outline = "outline:4px solid #ffd54f;outline-offset:-4px;" if unack else ""
        silent = (f"<br><span class='vigie-silent'>{t('Silent', lang)}: "
                  f"{html.escape(', '.join(row['silent'][:6]))}{' …' if len(row['silent']) > 6 else ''}</span>"
                  if row["silent"] else "")
        link = "/alarms" + (f"?site={urllib.parse.quote(row['site'])}" if row["site"] != NO_SITE else "")
        tiles.append(
            f"<div class='vigie-site' data-site='{html.escape(row['site'])}' data-state='{row['state']}' "
            f"data-active='{row['active']}' data-unack='{unack}' data-silent='{len(row['silent'])}' "
            f"style='{TILE_STYLE}{outline}background:{COLORS[row['state']]}'><b>{html.escape(name)}</b><br>"
            f"{t(row['state'], lang)} · {row['devices']} ⚙ · "
            f"<a class='vigie-site-alarms' href='{html.escape(link)}' style='color:#fff'>"
            f"{row['active']} {t('alarms', lang)}, {unack} {t('unacknowledged', lang)}</a>{silent}<br>"
            f"<small>{t('Last reading', lang)}: {fmt_age(row['age_s'], lang)} · {worst}</small></div>")
    return "".join(tiles) or f"<p>{t('No data yet', lang)}</p>"


def overview_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's overview page."""
    lang = session_lang()
    tiles = pn.pane.HTML(overview_html(services, lang), sizing_mode="stretch_width", css_classes=["vigie-overview"])

    def refresh() -> None:
        text = overview_html(services, lang)
        if text != tiles.object:
            tiles.object = text

    every(refresh, 2000)
    return page(services, "/", t("Overview", lang), pn.pane.Markdown(f"## {t('Overview', lang)}"), tiles,
                lang=lang, identity=auth.page_identity())
