"""The overview: is anything wrong, and where. A map of the sites and, beside it, the list.

Each site shows its state (the colour: the worst of its present alarms,
its silent devices and bad data), how many alarms are present and how many
nobody acknowledged yet (outlined until somebody does), the devices gone
silent (even when the site's newest reading is fresh: one dead sensor must
not hide behind its neighbours) and the age of its freshest reading; one
click opens the site's dashboard (:func:`dashboard_link`), another its
alarms on the console (``/alarms?site=...``).

A device is silent when no reading came for longer than expected
(:class:`Silence`): a no-data rule watching its series says how long,
else its source's ``expected_interval_s``, else a few of its usual
intervals (``overview.silent_factor``, at least ``overview.silent_min_s``),
else ``overview.silent_after_s``.

Sites are placed on the map from the config's ``sites`` section
(``{name: {lat, lon, title, dashboard}}``), else from ``lat`` / ``lon`` tags
their readings carry; a site with neither is in the list only. The map is
the map widget's (plain offline background, or ``map.tile_url``'s tiles).

Every open overview refreshes every 2 s, but the site states are computed
once per second per server, whatever the number of sessions
(:func:`site_states`), and the map's data is sent only when it changed.
"""

from __future__ import annotations

import html
import math
import os
import time
import urllib.parse
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool

from app.alarms.rules import SEVERITY_CLASS, NoDataRule
from app.dashboard.layouts import LayoutStore, slugify
from app.dashboard.widgets.map import base_figure, mercator
from app.i18n import fmt_age, t
from app.pages.shell import page, session_lang
from app.refresh import every

if TYPE_CHECKING:
    from app.config import OverviewSection
    from app.live import SeriesRing
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

NO_SITE = "—"  # devices whose readings carry no site tag
REFRESH_MS = 2000
# Inline: the page's stylesheet does not reach into the HTML pane's shadow root.
ROW_STYLE = ("display:block;margin:0 0 6px 0;padding:8px 12px;border-radius:6px;color:#fff;line-height:1.45;")
COLORS = {"ok": "#2e7d32", "bad": "#c62828", "stale": "#757575", "alarm": "#c62828", "warning": "#ef6c00"}
RANK = {"ok": 0, "stale": 1, "warning": 2, "bad": 3, "alarm": 4}  # a site shows the worst of its states
STATE_LABEL = {"ok": "ok", "stale": "silent devices", "warning": "warning", "bad": "bad data", "alarm": "alarm"}
_UNACK = ("unacknowledged", "returned_unacknowledged")


# -- silence ------------------------------------------------------------------------------------------------
def _settings(services: PageServices) -> OverviewSection:
    from app.config import OverviewSection

    return getattr(services, "overview", None) or OverviewSection()


class Silence:
    """How long each series may stay silent, for one computation of the site states (see the module docstring).

    What a no-data rule or a source says of a series is kept between
    computations (until the rules or the sources' intervals change): most
    series are asked about every second.
    """

    def __init__(self, services: PageServices) -> None:
        cfg = _settings(services)
        self.after_s, self.factor, self.min_s = cfg.silent_after_s, cfg.silent_factor, cfg.silent_min_s
        alarms = self.alarms = services.alarms
        intervals = dict(alarms.source_intervals) if alarms is not None else {}
        rules = alarms.rules if alarms is not None else None
        held = _EXPLICIT.get(id(alarms))
        if held is None or held[0] is not alarms or held[1] is not rules or held[2] != intervals:
            if len(_EXPLICIT) > 8:
                _EXPLICIT.clear()
            held = _EXPLICIT[id(alarms)] = (alarms, rules, intervals, {})
        self.intervals, self.known = intervals, held[3]

    def explicit_s(self, ring: SeriesRing) -> float | None:
        """Return what a no-data rule watching the series, else its source, says (None: nothing)."""
        ident = (ring.device, ring.metric, ring.source)
        if ident in self.known:
            return self.known[ident]
        expected = self.intervals.get(ring.source)
        value = expected
        if self.alarms is not None and self.alarms.rules:
            for rule in self.alarms.rules_for(f"{ring.device}/{ring.metric}", ring.tags):
                if isinstance(rule, NoDataRule) and rule.mode != "disabled":
                    value = NoDataRule.timeout(rule.v, _State(expected))
                    break
        self.known[ident] = value
        return value

    def after(self, ring: SeriesRing) -> float:
        """Return how long the series may stay silent."""
        explicit = self.explicit_s(ring)
        if explicit:
            return explicit
        usual = ring.usual_interval_s()
        return self.after_s if usual is None else max(self.min_s, self.factor * usual)

    def device_silent(self, rings: list[SeriesRing], age_s: float) -> bool:
        """Whether a device (its newest reading ``age_s`` old) is silent: past the shortest silence of its series."""
        if age_s <= self.min_s:  # only a rule's or a source's shorter silence can be over (most devices: cheap)
            explicit = [s for s in map(self.explicit_s, rings) if s]
            return bool(explicit) and age_s > min(explicit)
        return age_s > min(map(self.after, rings))


_EXPLICIT: dict[int, tuple[Any, Any, dict[str, float], dict[tuple[str, str, str], float | None]]] = {}


class _State:
    """What :meth:`NoDataRule.timeout` reads of a series' state."""

    __slots__ = ("expected_s",)

    def __init__(self, expected_s: float | None) -> None:
        self.expected_s = expected_s


# -- site states --------------------------------------------------------------------------------------------
def _coordinate(text: Any, bound: float) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and -bound <= value <= bound else None


def compute_site_states(services: PageServices, now_ns: int | None = None) -> list[dict[str, Any]]:
    """Return one row per site, sorted by name (see :func:`site_states`, which caches this)."""
    now = time.time_ns() if now_ns is None else now_ns
    live = services.live
    devices: dict[str, dict[str, list[SeriesRing]]] = defaultdict(lambda: defaultdict(list))
    for key in live.keys():
        ring = live.get(key)
        if ring is None or not ring.seq:
            continue
        devices[ring.tags.get("site", NO_SITE)][ring.device].append(ring)
    alarms = services.alarms
    shown = alarms.alarms() if alarms is not None else []
    by_site: dict[str | None, list] = defaultdict(list)
    for a in shown:
        by_site[a.site].append(a)
    configured = getattr(services, "sites", None) or {}
    silence = Silence(services)
    rows = []
    for site in sorted(set(devices) | {s for s in by_site if s} | set(configured)):
        site_devices = devices.get(site, {})
        key = None if site == NO_SITE else site
        mine = by_site.get(key, [])
        newest_by_device = {d: max(_newest(r) for r in rings) for d, rings in site_devices.items()}
        newest = max(newest_by_device.values(), default=None)
        age = None if newest is None else max(0.0, (now - newest) / 1e9)
        silent = {d for d, rings in site_devices.items()
                  if silence.device_silent(rings, max(0.0, (now - newest_by_device[d]) / 1e9))}
        silent |= {a.device for a in mine if a.active and a.level == "silent"}  # no-data rules: their own verdict
        state = "stale" if silent or not site_devices else "ok"  # a configured site never heard from: not fine
        if any(_quality(r) == "bad" for rings in site_devices.values() for r in rings):
            state = max(state, "bad", key=RANK.__getitem__)
        worst = alarms.worst_for_site(key) if alarms is not None else None
        if worst:
            state = max(state, SEVERITY_CLASS.get(worst["severity"], "alarm"), key=RANK.__getitem__)
        spec = configured.get(site)
        lat = lon = None
        if spec is not None and spec.lat is not None:
            lat, lon = spec.lat, spec.lon
        else:
            for rings in site_devices.values():
                tags = rings[0].tags
                lat, lon = _coordinate(tags.get("lat"), 90), _coordinate(tags.get("lon"), 180)
                if lat is not None and lon is not None:
                    break
            if lat is None or lon is None:
                lat = lon = None
        rows.append({"site": site, "title": (spec.title if spec is not None and spec.title else site),
                     "state": state, "age_s": age, "devices": len(site_devices), "worst_alarm": worst,
                     "active": sum(1 for a in mine if a.active),
                     "unacknowledged": sum(1 for a in mine if a.state in _UNACK),
                     "silent": sorted(silent), "lat": lat, "lon": lon})
    return rows


def _newest(ring: SeriesRing) -> int:
    return int(ring.times[(ring.seq - 1) % len(ring.times)])


def _quality(ring: SeriesRing) -> str:
    return ring.quality


_CACHE: dict[int, tuple[Any, tuple, list[dict[str, Any]]]] = {}
CACHE_S = 1.0  # site states are computed at most this often per server, however many overviews are open


def site_states(services: PageServices) -> list[dict[str, Any]]:
    """Return one row per site: state, counts, silent devices, freshest reading's age, coordinates.

    Shared by every session of a server: computed again only when data or
    alarms changed, or once a second for the ages.
    """
    alarms = services.alarms
    stamp = (services.live.version, alarms.version if alarms is not None else 0, int(time.monotonic() / CACHE_S))
    hit = _CACHE.get(id(services))
    if hit is not None and hit[0] is services and hit[1] == stamp:
        return hit[2]
    rows = compute_site_states(services)
    if len(_CACHE) > 8:  # servers in one process: tests
        _CACHE.clear()
    _CACHE[id(services)] = (services, stamp, rows)  # the services held: its id is not reused meanwhile
    return rows


# -- links --------------------------------------------------------------------------------------------------
_LAYOUT_SITES: dict[str, tuple[tuple, dict[str, str]]] = {}


def layouts_by_site(layouts: LayoutStore) -> dict[str, str]:
    """Return, for each site a layout names with its ``site:`` key, that layout (the first by name).

    Read again only when a file of the directory changed (name or modification time).
    """
    directory = str(layouts.directory)
    try:
        signature = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(directory)
                                 if e.name.endswith(".yaml")))
    except OSError:
        return {}
    hit = _LAYOUT_SITES.get(directory)
    if hit is not None and hit[0] == signature:
        return hit[1]
    found: dict[str, str] = {}
    for name in layouts.names():
        try:
            site = layouts.load(name).spec.site
        except (OSError, ValueError):
            continue
        if site and site not in found:
            found[site] = name
    _LAYOUT_SITES[directory] = (signature, found)
    return found


def dashboard_link(services: PageServices, layouts: LayoutStore | None, site: str) -> str:
    """Return the site's dashboard: the config's ``sites.<site>.dashboard``, else a layout whose ``site:``
    names it, else ``layouts/site-<site>.yaml`` (what "Generate dashboard" saves), else one generated now."""
    if site == NO_SITE:
        return "/dashboards"
    spec = (getattr(services, "sites", None) or {}).get(site)
    name = spec.dashboard if spec is not None and spec.dashboard else None
    if name is None and layouts is not None:
        name = layouts_by_site(layouts).get(site)
        generated = slugify(f"site-{site}")
        if name is None and (layouts.directory / f"{generated}.yaml").is_file():
            name = generated
    if name:
        return f"/dashboard?name={urllib.parse.quote(name)}"
    return f"/dashboard?site={urllib.parse.quote(site)}"


def alarms_link(site: str) -> str:
    """Return the console's view of the site's alarms."""
    return "/alarms" + (f"?site={urllib.parse.quote(site)}" if site != NO_SITE else "")


# -- rendering ----------------------------------------------------------------------------------------------
def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first: what needs somebody is at the top of the list."""
    return sorted(rows, key=lambda r: (-RANK[r["state"]], -r["unacknowledged"], -r["active"], r["site"]))


def overview_html(services: PageServices, lang: str, layouts: LayoutStore | None = None,
                  rows: list[dict[str, Any]] | None = None, large: bool = False) -> str:
    """Return the list of sites, worst first."""
    e = html.escape
    out = []
    for row in _order(site_states(services) if rows is None else rows):
        site = row["site"]
        worst = e(row["worst_alarm"]["message"]) if row["worst_alarm"] else t("no alarm", lang)
        name = e(row["title"]) if site != NO_SITE else t("(no site)", lang)
        unack = row["unacknowledged"]
        outline = "outline:4px solid #ffd54f;outline-offset:-4px;" if unack else ""
        silent = (f"<br><span class='vigie-silent'>{t('Silent', lang)}: "
                  f"{e(', '.join(row['silent'][:6]))}{' …' if len(row['silent']) > 6 else ''}</span>"
                  if row["silent"] else "")
        age = fmt_age(row["age_s"], lang) if row["age_s"] is not None else "–"
        where = "" if row["lat"] is not None else f" <small title='{t('not on the map', lang)}'>⌖̸</small>"
        size = "font-size:1.6em;" if large else ""
        out.append(
            f"<div class='vigie-site' data-site='{e(site)}' data-state='{row['state']}' "
            f"data-active='{row['active']}' data-unack='{unack}' data-silent='{len(row['silent'])}' "
            f"style='{ROW_STYLE}{size}{outline}background:{COLORS[row['state']]}'>"
            f"<a class='vigie-site-dashboard' href='{e(dashboard_link(services, layouts, site))}' "
            f"style='color:#fff;font-weight:700;font-size:1.1em'>{name}</a>{where} · "
            f"{t(STATE_LABEL[row['state']], lang)} · {row['devices']} ⚙ · "
            f"<a class='vigie-site-alarms' href='{e(alarms_link(site))}' style='color:#fff'>"
            f"{row['active']} {t('alarms', lang)}, {unack} {t('unacknowledged', lang)}</a>{silent}<br>"
            f"<small>{t('Last reading', lang)}: <span class='vigie-site-age'>{age}</span> · {worst}</small></div>")
    return "".join(out) or f"<p>{t('No data yet', lang)}</p>"


class SiteMap:
    """One session's map of the sites: a dot per placed site, in its state's colour; a click opens its dashboard."""

    COLUMNS = ("x", "y", "site", "title", "color", "outline", "state", "active", "unack", "silent", "url")

    def __init__(self, services: PageServices, layouts: LayoutStore | None, lang: str, height: int = 520) -> None:
        self.services = services
        self.layouts = layouts
        self.lang = lang
        self.source = ColumnDataSource({c: [] for c in self.COLUMNS})
        fig = base_figure(services.tile_url, min_height=240)
        fig.height = height
        dots = fig.scatter("x", "y", source=self.source, size=22, fill_color="color", line_color="outline",
                           line_width=4)
        fig.text("x", "y", text="title", source=self.source, x_offset=14, y_offset=-8, text_font_size="11pt",
                 text_color="#263238", text_font_style="bold")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[
            (t("Site", lang), "@title"), (t("State", lang), "@state"), (t("alarms", lang), "@active"),
            (t("unacknowledged", lang), "@unack"), (t("Silent", lang), "@silent")]))
        fig.add_tools(TapTool(renderers=[dots], callback=OpenURL(url="@url", same_tab=True)))
        fig.toolbar.active_tap = fig.select_one(TapTool)
        self.figure = fig
        self.pane = pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width", height=height),
                              sizing_mode="stretch_width", css_classes=["vigie-site-map"], margin=0)

    def data(self, rows: list[dict[str, Any]]) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in self.COLUMNS}
        for row in rows:
            if row["lat"] is None:
                continue
            x, y = mercator(row["lat"], row["lon"])
            values = {"x": float(x), "y": float(y), "site": row["site"], "title": row["title"],
                      "color": COLORS[row["state"]], "outline": "#ffd54f" if row["unacknowledged"] else "#ffffff",
                      "state": t(STATE_LABEL[row["state"]], self.lang), "active": row["active"],
                      "unack": row["unacknowledged"], "silent": ", ".join(row["silent"]) or "–",
                      "url": dashboard_link(self.services, self.layouts, row["site"])}
            for c in self.COLUMNS:
                out[c].append(values[c])
        return out

    def refresh(self, rows: list[dict[str, Any]]) -> None:
        data = self.data(rows)
        if data != dict(self.source.data):  # ages are not on the map: it changes only with the states
            self.source.data = data
        self.pane.visible = bool(data["x"])


class Overview:
    """One session's overview: the map and the list, refreshed every 2 s from the shared site states."""

    def __init__(self, services: PageServices, layouts: LayoutStore | None, lang: str, large: bool = False) -> None:
        self.services = services
        self.layouts = layouts
        self.lang = lang
        self.large = large
        rows = site_states(services)
        self.map = SiteMap(services, layouts, lang, height=640 if large else 520)
        self.list = pn.pane.HTML(overview_html(services, lang, layouts, rows, large), sizing_mode="stretch_width",
                                 css_classes=["vigie-overview"], min_width=320)
        self.note = pn.pane.HTML("", sizing_mode="stretch_width")
        self.map.refresh(rows)
        self._note(rows)
        self.view = pn.Row(self.map.pane, pn.Column(self.list, self.note, sizing_mode="stretch_width"),
                           sizing_mode="stretch_width")

    def _note(self, rows: list[dict[str, Any]]) -> None:
        unplaced = [r for r in rows if r["lat"] is None and r["site"] != NO_SITE]
        text = (f"<small class='vigie-unplaced' style='color:#666'>{t('Not on the map (no coordinates)', self.lang)}"
                f": {html.escape(', '.join(r['title'] for r in unplaced))}</small>") if unplaced else ""
        if text != self.note.object:
            self.note.object = text

    def refresh(self) -> None:
        rows = site_states(self.services)
        text = overview_html(self.services, self.lang, self.layouts, rows, self.large)
        if text != self.list.object:
            self.list.object = text
        self.map.refresh(rows)
        self._note(rows)


def overview_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's overview page."""
    lang = session_lang()
    overview = Overview(services, layouts, lang)
    every(overview.refresh, REFRESH_MS)
    return page(services, "/", t("Overview", lang), pn.pane.Markdown(f"## {t('Overview', lang)}"), overview.view,
                lang=lang, identity=auth.page_identity())
