"""The overview (sites on a map and in a list: state, alarm counts, silent devices, ages, links) and the wall display.

Unit tests compute the site states from a real runtime's live cache and
alarm engine; the browser tests run a real ``vigie serve``, publish over a
real Mosquitto and look in a real Chromium.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import pytest
from paho.mqtt import publish as paho_publish

from app.config import load_config
from app.dashboard.layouts import LayoutStore
from app.model import Reading
from app.pages.overview import NO_SITE, compute_site_states, dashboard_link, overview_html, site_states
from app.pages.services import PageServices
from app.runtime import Runtime
from tests.browser import CHROMIUM, CHROMIUM_ARGS, VigieServer
from tests.servers import wait_until

S = 10**9


def runtime_of(tmp_path, config: str = "") -> Runtime:
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    (d / "v.yaml").write_text(config)
    return Runtime(load_config(d, env={}), base_dir=tmp_path)


def series(device: str, metric: str, last_ns: int, every_s: float | None, n: int = 5, site: str = "vallon",
           source: str = "", tags: dict | None = None) -> list[Reading]:
    """Return ``n`` readings ending at ``last_ns``, ``every_s`` apart (one reading when None)."""
    count = n if every_s else 1
    return [Reading(device, metric, last_ns - int(i * (every_s or 0) * S), 1.0, source=source,
                    tags={"site": site, **(tags or {})}) for i in reversed(range(count))]


def row_of(rows, site):
    return next(r for r in rows if r["site"] == site)


def test_a_device_is_silent_after_a_few_of_its_usual_intervals_never_before_the_minimum(tmp_path):
    runtime = runtime_of(tmp_path, "overview: {silent_factor: 3, silent_min_s: 30, silent_after_s: 300}\n")
    now = time.time_ns()
    runtime.live.accept([
        *series("fast-ok", "level", now - 20 * S, 1.0),      # 1 s sensor, 20 s late: under the 30 s minimum
        *series("fast-dead", "level", now - 40 * S, 1.0),    # 40 s late: silent
        *series("slow-ok", "level", now - 100 * S, 60.0),    # every minute, 100 s ago: 3 x 60 s not reached
        *series("slow-dead", "level", now - 200 * S, 60.0),  # 200 s > 180 s
        *series("once", "level", now - 200 * S, None),       # one reading: the default, 300 s
        *series("once-old", "level", now - 400 * S, None),
    ])
    row = row_of(compute_site_states(PageServices.of(runtime), now), "vallon")
    assert row["silent"] == ["fast-dead", "once-old", "slow-dead"]
    assert row["state"] == "stale" and row["devices"] == 6
    assert row["age_s"] == pytest.approx(20.0)  # the freshest reading's age


def test_the_usual_interval_is_the_median_gap_of_the_last_readings_across_the_rings_wrap():
    from app.live import SeriesRing

    ring = SeriesRing("d", "m", capacity=8)
    assert ring.usual_interval_s() is None
    t0 = time.time_ns()
    for i, gap in enumerate([1, 1, 2, 2, 2, 9, 2, 2, 2, 2, 50]):  # 11 readings in 8 places: wrapped
        t0 += gap * S
        ring.append(Reading("d", "m", t0, float(i)))
    assert ring.usual_interval_s() == 2.0  # one long gap does not make a sensor slow
    assert ring.usual_interval_s() is ring.usual[1] and ring.usual[0] == ring.seq  # kept until the next reading


def test_a_device_talking_on_one_series_is_not_silent_for_another_quieter_one(tmp_path):
    runtime = runtime_of(tmp_path)
    now = time.time_ns()
    runtime.live.accept([*series("dam-1", "level", now - 2 * S, 1.0),
                         *series("dam-1", "battery", now - 2000 * S, 3600.0)])  # hourly, 33 min ago
    runtime.live.accept([*series("dam-2", "level", now - 2000 * S, 1.0),        # its 1 s series stopped
                         *series("dam-2", "battery", now - 1000 * S, 3600.0)])
    assert row_of(compute_site_states(PageServices.of(runtime), now), "vallon")["silent"] == ["dam-2"]


def test_no_data_rules_and_the_sources_expected_interval_say_how_long_silence_may_last(tmp_path):
    runtime = runtime_of(tmp_path, "alarms:\n  rules:\n"
                                   "    - {name: quiet, type: no_data, series: 'ruled-*/level', timeout_s: 5}\n")
    runtime.alarms.source_intervals = {"plc": 600.0}
    now = time.time_ns()
    runtime.live.accept([
        *series("ruled-1", "level", now - 8 * S, 1.0),              # the rule: 5 s, below the 30 s minimum
        *series("ruled-2", "level", now - 3 * S, 1.0),
        *series("plc-1", "level", now - 400 * S, None, source="plc"),   # expected every 600 s: not yet
        *series("plc-2", "level", now - 700 * S, None, source="plc"),
    ])
    assert row_of(compute_site_states(PageServices.of(runtime), now), "vallon")["silent"] == ["plc-2", "ruled-1"]


def test_counts_ages_worst_state_coordinates_and_sites_without_data(tmp_path):
    runtime = runtime_of(tmp_path, (
        "alarms:\n  rules:\n"
        "    - {name: flood, series: '*/water_level', h: 14, severity: critical}\n"
        "    - {name: vigilance, series: '*/water_level', h: 12, severity: medium}\n"
        "sites:\n  vallon: {lat: 45.2, lon: 5.8, title: Le Vallon}\n  planned: {lat: 45.0, lon: 6.0}\n"))
    now = time.time_ns()
    readings = [Reading("dam-1", "water_level", now - 5 * S, 15.0, tags={"site": "vallon"}),
                Reading("dam-2", "water_level", now - 9 * S, 12.5, tags={"site": "vallon"}),
                Reading("gps-1", "speed", now - 60 * S, 3.0, tags={"site": "field", "lat": "45.5", "lon": "6.1"}),
                Reading("srv-1", "cpu", now - 30 * S, 3.0, tags={"site": "room"}),
                Reading("tracker", "speed", now - 2 * S, 3.0)]
    runtime.alarms.accept(readings)
    runtime.live.accept(readings)
    services = PageServices.of(runtime)
    rows = compute_site_states(services, now)
    assert sorted(r["site"] for r in rows) == sorted([NO_SITE, "field", "planned", "room", "vallon"])
    vallon = row_of(rows, "vallon")
    assert (vallon["state"], vallon["active"], vallon["unacknowledged"], vallon["silent"]) == ("alarm", 3, 3, [])
    assert (vallon["title"], vallon["lat"], vallon["lon"]) == ("Le Vallon", 45.2, 5.8)
    assert vallon["age_s"] == pytest.approx(5.0) and vallon["worst_alarm"]["rule"] == "flood"
    assert (row_of(rows, "field")["lat"], row_of(rows, "field")["lon"]) == (45.5, 6.1)  # from the readings' tags
    assert row_of(rows, "room")["lat"] is None and row_of(rows, "room")["state"] == "ok"
    planned = row_of(rows, "planned")  # configured, never heard from: listed, and nothing says it is fine
    assert (planned["devices"], planned["age_s"], planned["state"]) == (0, None, "stale")
    runtime.alarms.acknowledge(["flood|dam-1/water_level", "vigilance|dam-1/water_level"], "ana")
    vallon = row_of(compute_site_states(services, now), "vallon")
    assert (vallon["active"], vallon["unacknowledged"]) == (3, 1)
    text = overview_html(services, "fr")
    assert text.index("data-site='vallon'") < text.index("data-site='room'")  # worst first
    assert "Le Vallon" in text and "href='/alarms?site=vallon'" in text


def test_site_states_are_shared_between_sessions_until_something_changes(tmp_path):
    runtime = runtime_of(tmp_path)
    services = PageServices.of(runtime)
    runtime.live.accept([Reading("d", "m", time.time_ns(), 1.0, tags={"site": "s"})])
    first = site_states(services)
    assert site_states(services) is first  # a second session in the same second: the same rows
    runtime.live.accept([Reading("d", "m", time.time_ns(), 2.0, tags={"site": "s"})])
    assert site_states(services) is not first


def test_the_sites_dashboard_is_the_configs_then_a_layout_naming_it_then_site_name_then_generated(tmp_path):
    runtime = runtime_of(tmp_path, "sites:\n  a: {dashboard: chosen}\n")
    services = PageServices.of(runtime)
    layouts = LayoutStore(tmp_path / "layouts")
    (layouts.directory / "dams.yaml").write_text("title: Dams\nsite: b\nwidgets: []\n")
    (layouts.directory / "site-c.yaml").write_text("title: C\nwidgets: []\n")
    assert dashboard_link(services, layouts, "a") == "/dashboard?name=chosen"
    assert dashboard_link(services, layouts, "b") == "/dashboard?name=dams"
    assert dashboard_link(services, layouts, "c") == "/dashboard?name=site-c"
    assert dashboard_link(services, layouts, "d é") == "/dashboard?site=d%20%C3%A9"
    assert dashboard_link(services, layouts, NO_SITE) == "/dashboards"
    (layouts.directory / "other.yaml").write_text("title: Other\nsite: d é\nwidgets: []\n")  # read again
    assert dashboard_link(services, layouts, "d é") == "/dashboard?name=other"


def test_the_sites_section_is_checked(tmp_path):
    from app.config import ConfigError

    (tmp_path / "v.yaml").write_text("sites:\n  a: {lat: 95, lon: 5}\n  b: {lat: 45}\n"
                                     "  c: {lat: 1, lon: 2, titel: x}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "sites.a.lat: 95.0 is out of range -90..90" in text
    assert "sites.b.lon: give both lat and lon, or neither" in text
    assert "sites.c.titel: unknown key (did you mean 'title'?)" in text


# -- in a browser --------------------------------------------------------------------------------------------
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

OV_CONFIG = (
    "alarms:\n  rules:\n    - {name: ov flood, series: 'ov-*/level', above: 50, severity: critical}\n"
    "sites:\n  ovsite: {lat: 45.19, lon: 5.72, title: Overview site}\n"
)
OV_BOARD = "title: OV board\nsite: ovsite\nwidgets:\n- {type: markdown, id: n, x: 0, y: 0, w: 4, h: 2, text: ov note}\n"
SECOND = ("title: Second board\nwidgets:\n- {type: markdown, id: n, x: 0, y: 0, w: 4, h: 2, text: second note}\n"
          "- {type: timeseries, id: c, x: 4, y: 0, w: 8, h: 4, title: Levels, series: [ov-1/level]}\n")

MAP_DATA_JS = """() => {
    for (const doc of Bokeh.documents) {
        for (const m of doc.all_models) {
            const d = m.data;
            if (d && d.unack !== undefined && d.site !== undefined) {
                const i = Array.from(d.site).indexOf("ovsite");
                return i < 0 ? null : [d.color[i], Number(d.active[i]), Number(d.unack[i]), d.silent[i]];
            }
        }
    }
    return null;
}"""


def send(mosquitto, site: str, device: str, value: float, age_s: float = 0.0) -> None:
    payload = json.dumps({"ts": int((time.time() - age_s) * 1000), "level": value})
    paho_publish.single(f"bt/{site}/{device}/telemetry", payload, qos=1, hostname=mosquitto.host, port=mosquitto.port)


@pytest.fixture(scope="module")
def server(tmp_path_factory, mosquitto):
    s = VigieServer(tmp_path_factory.mktemp("vigie-overview"), mosquitto.port, anonymous_read=True,
                    layouts={"ov-board": OV_BOARD, "second": SECOND}, extra_config=OV_CONFIG)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    seen: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    context.on("request", lambda r: seen.append(r.url))
    server.login(context, "viewer")
    pg = context.new_page()
    yield pg
    context.close()
    offsite = [u for u in seen if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert not offsite, f"requests left loopback: {offsite[:10]}"


@pytest.mark.browser
def test_a_silent_device_and_an_unacknowledged_alarm_on_the_map_and_in_the_list_and_the_links(page, server,
                                                                                               mosquitto):
    send(mosquitto, "ovsite", "ov-1", 10.0)
    send(mosquitto, "ovsite", "ov-3", 10.0, age_s=3600)  # its only reading is an hour old: silent
    send(mosquitto, "ovsite", "ov-2", 75.0)  # over the rule's limit: an alarm nobody acknowledged
    send(mosquitto, "plain", "ov-9", 10.0)  # a site with no layout and no coordinates
    page.goto(f"{server.base}/")
    row = page.locator(".vigie-site[data-site='ovsite']")
    expect(row).to_have_attribute("data-state", "alarm", timeout=30_000)
    expect(row).to_have_attribute("data-active", "1")
    expect(row).to_have_attribute("data-unack", "1")
    expect(row).to_have_attribute("data-silent", "1")
    expect(row.locator(".vigie-silent")).to_contain_text("ov-3")
    expect(row).to_contain_text("Overview site")
    expect(page.locator(".vigie-site[data-site='plain']")).to_have_attribute("data-state", "ok")
    expect(page.locator(".vigie-unplaced")).to_contain_text("plain")  # listed, not on the map
    site_map = page.locator(".vigie-site-map")
    expect(site_map).to_be_visible(timeout=20_000)
    assert site_map.bounding_box()["x"] < row.bounding_box()["x"], "the map beside the list, on its left"
    on_map = wait_until(lambda: page.evaluate(MAP_DATA_JS), timeout=20, what="the site on the map")
    assert on_map == ["#c62828", 1, 1, "ov-3"], on_map

    send(mosquitto, "ovsite", "ov-4", 80.0)  # live: a second alarm, without reloading
    expect(row).to_have_attribute("data-active", "2", timeout=10_000)
    expect(row).to_have_attribute("data-unack", "2")
    wait_until(lambda: (page.evaluate(MAP_DATA_JS) or [0, 0])[1] == 2, timeout=10, what="the map's count")

    row.locator(".vigie-site-dashboard").click()
    expect(page.locator(".grid-stack-item", has_text="ov note")).to_have_count(1, timeout=30_000)
    assert page.url.endswith("/dashboard?name=ov-board")  # the layout saying site: ovsite

    page.goto(f"{server.base}/")
    page.locator(".vigie-site[data-site='ovsite'] .vigie-site-alarms").click()
    console = page.locator(".tabulator").first  # the console (the journal below lists the raised events too)
    expect(console.locator(".tabulator-row", has_text="ov flood")).to_have_count(2, timeout=30_000)
    expect(console.locator(".tabulator-row", has_text="ovsite")).to_have_count(2)
    assert page.url.endswith("/alarms?site=ovsite")

    page.goto(f"{server.base}/")
    page.locator(".vigie-site[data-site='plain'] .vigie-site-dashboard").click()  # generated from its series
    expect(page.locator(".vigie-generated-site")).to_have_text("plain", timeout=30_000)
    assert page.url.endswith("/dashboard?site=plain")


@pytest.mark.browser
def test_the_wall_rotates_between_layouts_without_navigation(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB")  # anonymous
    page = context.new_page()
    try:
        page.goto(f"{server.base}/wall?layouts=ov-board,second&every=2")
        title = page.locator(".vigie-wall-title")
        ov_note, second_note = (page.locator(".grid-stack-item", has_text=text) for text in ("ov note", "second note"))

        def shown() -> tuple[str, list[str], str]:
            """The header's title, the notes visible, the position (a screen lasts 2 s: read them together)."""
            return (title.inner_text(), [name for name, note in (("ov note", ov_note), ("second note", second_note))
                                      if note.is_visible()],
                    page.locator(".vigie-wall-position").inner_text())

        wait_until(lambda: shown() == ("OV board", ["ov note"], "1 / 2"), 30, 0.1, "the first layout")
        size = ov_note.locator("p").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 18, f"large type: {size}px"  # 12 px on the other pages
        wait_until(lambda: shown() == ("Second board", ["second note"], "2 / 2"), 20, 0.1, "the second layout")
        chart = page.locator(".vigie-widget-timeseries canvas").first  # hidden when the page opened: laid out now
        wait_until(lambda: chart.is_visible() and chart.bounding_box()["width"] > 400, 20, 0.1, "the chart drawn")
        try:
            wait_until(lambda: shown()[0] == "OV board", 20, 0.1, "the first layout again")  # and round again
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{server.log.read_text()[-4000:]}") from None
        assert page.locator(".vigie-nav").count() == 0 and page.locator(".vigie-edit").count() == 0
        page.goto(f"{server.base}/wall?layouts=overview&every=2")  # the site overview, in large type
        expect(page.locator(".vigie-site[data-site='ovsite']")).to_be_visible(timeout=30_000)
    finally:
        context.close()
