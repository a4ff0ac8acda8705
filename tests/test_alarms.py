"""Threshold alarms: the engine's rules, the config section, and what dashboards show of them."""

from __future__ import annotations

import json
import time

import pytest
from bokeh.models import Span

from app.alarms.engine import AlarmEngine
from app.alarms.rules import ThresholdRule
from app.config import ConfigError, load_config
from app.dashboard.alarm_style import coloured_limits
from app.model import Reading
from app.pages.services import PageServices
from app.runtime import Runtime
from tests.helpers import publish, until

NOW = time.time_ns()


def level(value: float, device: str = "dam-1", dt_s: float = 0, quality: str = "good") -> Reading:
    return Reading(device, "water_level", NOW + int(dt_s * 1e9), value, quality, "m", tags={"site": "vallon"})


def test_a_rule_raises_once_holds_and_clears_past_its_hysteresis():
    engine = AlarmEngine([ThresholdRule(name="dam alert", series="dam-*/water_level", severity="critical", h=15.0,
                                        deadband=0.5)])
    engine.accept([level(14.0), level(15.2, dt_s=1), level(15.6, dt_s=2), level(14.8, dt_s=3)])
    [alarm] = engine.active()
    assert (alarm["series"], alarm["severity"], alarm["time_ns"], alarm["value"]) == (
        "dam-1/water_level", "critical", NOW + 10**9, 14.8)  # raised at 15.2; 14.8 is not 0.5 below the limit
    assert alarm["message"] == "dam alert: 15.2 m (> 15 m)"  # the value that crossed it
    engine.accept([level(14.4, dt_s=4)])  # back, but nobody acknowledged: it stays listed
    [alarm] = engine.active()
    assert alarm["state"] == "returned_unacknowledged" and not alarm["active"] and engine.raised_total == 1
    assert [(t["event"], t["state"]) for t in engine.transitions] == [
        ("raised", "unacknowledged"), ("cleared", "returned_unacknowledged")]
    engine.acknowledge([alarm["alarm_id"]], "anonymous", "seen")
    assert engine.active() == []


def test_bad_quality_readings_neither_raise_nor_clear():
    engine = AlarmEngine([ThresholdRule(name="low", series="dam-1/water_level", l=5.0)])
    engine.accept([level(1.0, quality="bad")])
    assert engine.active() == []
    engine.accept([level(4.0), level(9.0, dt_s=1, quality="bad")])
    assert len(engine.active()) == 1


def test_a_band_rule_names_the_limit_it_crossed_and_late_readings_change_nothing():
    engine = AlarmEngine([ThresholdRule(name="band", series="dam-1/water_level", h=10.0, l=2.0, deadband=0.5)])
    engine.accept([level(5.0), level(1.0, dt_s=1)])
    assert engine.active()[0]["message"] == "band: 1 m (< 2 m)"
    engine.accept([level(2.2, dt_s=2)])  # still under 2 + 0.5: active, and still "below"
    assert engine.active()[0]["message"] == "band: 1 m (< 2 m)" and engine.active()[0]["value"] == 2.2
    engine.accept([level(11.0, dt_s=-60)])  # a back-filled old reading: not the state now
    assert engine.active()[0]["value"] == 2.2 and engine.raised_total == 1
    engine.accept([level(5.0, dt_s=3), level(12.0, dt_s=4)])  # cleared, then the other side: raised again
    assert engine.active()[0]["message"] == "band: 12 m (> 10 m)" and engine.raised_total == 2


def test_alarms_of_devices_with_no_site_reach_the_overview(tmp_path):
    from app.config import load_config as load
    from app.pages.overview import NO_SITE, site_states

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "v.yaml").write_text(
        "alarms:\n  rules:\n    - {name: hot, series: '*/temp', above: 30, severity: medium}\n")
    runtime = Runtime(load(tmp_path / "c", env={}), base_dir=tmp_path)
    reading = Reading("srv-9", "temp", NOW, 35.0)  # no site tag
    runtime.alarms.accept([reading])
    runtime.live.accept([Reading("srv-9", "temp", time.time_ns(), 35.0, quality="bad")])
    [row] = site_states(PageServices.of(runtime))
    assert row["site"] == NO_SITE and row["worst_alarm"]["rule"] == "hot"
    assert row["state"] == "bad"  # a warning does not hide the worse state of the site


def test_what_dashboards_ask_of_the_engine():
    engine = AlarmEngine([
        ThresholdRule(name="vigilance", series="dam-*/water_level", severity="medium", h=12.0),
        ThresholdRule(name="alert", series="dam-1/water_level", severity="critical", h=14.0,
                      message="Dam 1: open the crisis cell"),
        ThresholdRule(name="battery", series="gauge-*/battery", severity="low", l=3.5),
    ])
    engine.accept([level(13.0, "dam-1"), level(12.5, "dam-2", dt_s=1), level(9.0, "dam-3")])
    assert engine.series_state("dam-1/water_level") == "warning"
    assert engine.series_state("dam-3/water_level") == "ok"
    assert engine.series_state("dam-3/inflow") is None  # no rule: the tile's own thresholds decide
    assert engine.device_state("dam-2") == "warning" and engine.device_state("dam-3") is None
    engine.accept([level(14.5, "dam-1", dt_s=2)])
    assert engine.series_state("dam-1/water_level") == "alarm" and engine.device_state("dam-1") == "alarm"
    worst = engine.worst_for_site("vallon")
    assert worst["severity"] == "critical" and worst["message"] == "Dam 1: open the crisis cell"
    assert engine.worst_for_site("elsewhere") is None
    assert engine.limits("dam-1/water_level") == [(12.0, "vigilance H", "warning"), (14.0, "alert H", "alarm")]
    assert engine.limits("gauge-7/battery") == [(3.5, "battery L", "warning")]
    assert coloured_limits(engine)("gauge-7/battery") == [(3.5, "battery L", "#ef6c00")]  # the colour: a page's
    assert [a["series"] for a in engine.active()] == ["dam-1/water_level", "dam-2/water_level",
                                                      "dam-1/water_level"]  # newest first
    health = engine.health()
    assert (health["rules"], health["active"], health["unacknowledged"], health["raised_total"]) == (3, 3, 3, 3)


def test_the_alarms_section_is_checked(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "alarms:\n  rules:\n"
        "    - {name: x, series: dam-1/level}\n"
        "    - {name: x, series: dam-1, h: 3, l: 5}\n"
        "    - {name: y, series: d/m, h: 1, severity: urgent, deadbnd: 1}\n"
        "    - {series: d/m, h: 1}\n"
        "    - {name: z, series: d/m, h: 10, l: 9, deadband: 0.6}\n"
        "    - {name: c, type: composite, expression: 'x and (y or nope'}\n"
        "    - {name: c2, type: composite, expression: 'x and not zz'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "a.yaml:3: alarms.rules[0]: give at least one limit: hh, h, l or ll" in text
    assert "a.yaml:4: alarms.rules[1].series: expected device/metric (globs allowed), got 'dam-1'" in text
    assert "a.yaml:4: alarms.rules[1].h: must be above l (5)" in text
    assert "alarms.rules: rule name 'x' is used twice" in text
    assert "a.yaml:6: alarms.rules[3].name: missing (required)" in text
    assert "a.yaml:7: alarms.rules[4].deadband: 0.6 leaves no value" in text
    assert "alarms.rules[2].severity" in text and "urgent" in text
    assert "alarms.rules[2].deadbnd: unknown key (did you mean 'deadband'?)" in text
    assert "alarms.rules[5].expression: expected ')' at the end" in text
    assert "alarms.rules[6].expression: no rule named 'zz'" in text
    (tmp_path / "a.yaml").write_text("alarms:\n  rules:\n    - {name: r, type: rate_of_chnge}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert "alarms.rules[0].type: unknown type 'rate_of_chnge'" in str(err.value)
    assert "did you mean 'rate_of_change'" in str(err.value)


def config(tmp_path, port: int):
    d = tmp_path / "config"
    d.mkdir(exist_ok=True)
    (d / "v.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool}\n"
        f"mqtt:\n  - name: m\n    port: {port}\n    client_id: alarms-test\n    subscriptions:\n"
        "      - topic: al/{site}/{device}\n        fields: {level: {metric: water_level, unit: m}}\n"
        "alarms:\n  rules:\n"
        "    - {name: vigilance, series: dam-*/water_level, above: 12, severity: medium}\n"
        "    - {name: alert, series: dam-*/water_level, above: 14, severity: critical, hysteresis: 0.5}\n")
    return load_config(d, env={})


async def test_a_published_reading_raises_an_alarm_that_every_view_shows(tmp_path, mosquitto):
    from app.dashboard.widgets.alarms import AlarmsSpec
    from app.dashboard.widgets.status_grid import StatusGridSpec
    from app.dashboard.widgets.timeseries import TimeSeriesSpec
    from app.dashboard.widgets.value import ValueSpec
    from app.pages.dashboards import widget_context
    from app.pages.overview import overview_html, site_states

    loaded = config(tmp_path, mosquitto.port)
    runtime = Runtime(loaded, base_dir=tmp_path)
    await runtime.start()
    try:
        await until(lambda: runtime.sources[0].state == "connected", what="connected")
        now_ms = int(time.time() * 1000)
        await publish(mosquitto.host, mosquitto.port, [
            ("al/vallon/dam-1", json.dumps({"ts": now_ms, "level": 10.0})),
            ("al/vallon/dam-2", json.dumps({"ts": now_ms, "level": 9.0})),
            ("al/vallon/dam-1", json.dumps({"ts": now_ms + 1, "level": 14.6})),
        ])
        await until(lambda: runtime.hub.published == 3, what="3 readings")
        assert sorted((a["series"], a["severity"], a["value"]) for a in runtime.alarms.active()) == [
            ("dam-1/water_level", "critical", 14.6), ("dam-1/water_level", "medium", 14.6)]
        health = runtime.health()["alarms"]
        assert (health["rules"], health["active"], health["raised_total"]) == (2, 2, 2)

        ctx = widget_context(PageServices.of(runtime), "fr")
        tile = ValueSpec(id="t", series="dam-1/water_level").view(ctx)
        assert "data-state='alarm'" in tile.render() and "data-unack='1'" in tile.render()
        calm = ValueSpec(id="c", series="dam-2/water_level").view(ctx)
        assert "data-state='ok'" in calm.render()
        own = ValueSpec(id="o", series="dam-2/water_level", alarm_above=5).view(ctx)
        assert "data-state='alarm'" in own.render()  # the worse of the tile's thresholds and the rules
        grid = StatusGridSpec(id="g", devices=["dam-*"]).view(ctx)
        grid.refresh()
        assert ("dam-1", "alarm") in [(d, s) for d, s, _age in grid.cells]
        table = AlarmsSpec(id="a").view(ctx)
        assert len(table._rows) == 2 and {r[2] for r in table._rows} == {"dam-1/water_level"}
        assert table.html.object.count("dam-1/water_level") == 2
        chart = TimeSeriesSpec(id="ch", series=["dam-1/water_level"]).view(ctx)
        spans = [r.location for r in chart.figure.center if isinstance(r, Span)]
        assert sorted(spans) == [12.0, 14.0]  # the rules' limits, drawn
        [site] = [row for row in site_states(PageServices.of(runtime)) if row["site"] == "vallon"]
        assert site["state"] == "alarm" and site["worst_alarm"]["severity"] == "critical"
        assert "data-state='alarm'" in overview_html(PageServices.of(runtime), "fr")

        await publish(mosquitto.host, mosquitto.port, [("al/vallon/dam-1", json.dumps({"ts": now_ms + 2,
                                                                                      "level": 13.0}))])
        def present():
            return [(a["severity"], a["state"]) for a in runtime.alarms.active() if a["active"]]

        await until(lambda: present() == [("medium", "unacknowledged")], what="the alert cleared, the vigilance left")
        assert runtime.alarms.series_state("dam-1/water_level") == "warning"
        # Nobody acknowledged the alert: it stays listed, returned, until somebody does.
        assert [(a["rule"], a["state"]) for a in runtime.alarms.active() if not a["active"]] == [
            ("alert", "returned_unacknowledged")]
    finally:
        await runtime.stop()

    # Restarted with dam-1 still above the vigilance limit: in alarm from the first page.
    again = Runtime(loaded, base_dir=tmp_path)
    await again.start()
    try:
        assert [a["severity"] for a in again.alarms.active() if a["active"]] == ["medium"]
    finally:
        await again.stop()


def test_the_overview_counts_alarms_names_silent_devices_and_links_to_the_sites_alarms(tmp_path):
    from app.config import load_config as load
    from app.pages.overview import overview_html, site_states

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "v.yaml").write_text(
        "alarms:\n  rules:\n    - {name: flood, series: '*/water_level', h: 14, severity: critical}\n")
    runtime = Runtime(load(tmp_path / "c", env={}), base_dir=tmp_path)
    now = time.time_ns()
    fresh = [Reading("dam-1", "water_level", now, 15.0, unit="m", tags={"site": "vallon"}),
             Reading("dam-2", "water_level", now, 9.0, unit="m", tags={"site": "vallon"})]
    old = Reading("gauge-3", "rain", now - 3600 * 10**9, 0.0, tags={"site": "vallon"})  # silent for an hour
    runtime.alarms.accept(fresh)
    runtime.live.accept([old, *fresh])
    [row] = site_states(PageServices.of(runtime))
    assert (row["state"], row["active"], row["unacknowledged"], row["silent"]) == ("alarm", 1, 1, ["gauge-3"])
    text = overview_html(PageServices.of(runtime), "en")
    assert "data-unack='1'" in text and "gauge-3" in text and "href='/alarms?site=vallon'" in text
    runtime.alarms.acknowledge(["flood|dam-1/water_level"], "ana")
    assert "data-unack='0'" in overview_html(PageServices.of(runtime), "en")  # acknowledged: no longer outlined
