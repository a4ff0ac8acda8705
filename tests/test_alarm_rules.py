"""Rule kinds and the ISA-18.2 lifecycle, as properties: each rule fires when, and only when, it should.

Pure evaluation needs no server: the engine is fed readings and clock
ticks directly (its clock injected), as the backtest feeds it, so these
tests also prove the replay and the live engine cannot disagree.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from app.alarms.backtest import ReplayClock, replay, summarize
from app.alarms.engine import AlarmEngine
from app.alarms.grammar import Expression
from app.alarms.lifecycle import human_duration
from app.alarms.rules import (
    CompositeRule,
    NoDataRule,
    RateOfChangeRule,
    ThresholdRule,
    TimeToThresholdRule,
    rule_from_spec,
)
from app.model import AlarmState, Reading

S = 1_000_000_000
T0 = 1_790_000_000 * S


def series(values: list[float], step_s: float = 1.0, key: str = "dam-1/level", t0: int = T0) -> list[Reading]:
    device, metric = key.split("/")
    return [Reading(device, metric, t0 + int(i * step_s * S), v, unit="m") for i, v in enumerate(values)]


def kinds(events) -> list[str]:
    return [e.kind for e in events]


VALUES = st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=120)


# -- threshold ------------------------------------------------------------------------------------------
@settings(max_examples=200)
@given(VALUES, st.floats(0, 2))
def test_threshold_raises_above_and_clears_only_past_the_deadband(values, deadband):
    rule = ThresholdRule(name="t", series="*/*", h=10.0, deadband=deadband)
    events = replay(rule, series(values))
    by_time = {T0 + i * S: v for i, v in enumerate(values)}
    for e in events:
        if e.kind == "raised":
            assert by_time[e.time_ns] > 10.0
        elif e.kind == "cleared":
            assert by_time[e.time_ns] <= 10.0 - deadband
    # Raises and clears alternate: a value hovering at the limit cannot chatter.
    changes = [k for k in kinds(events) if k in ("raised", "cleared")]
    assert all(a != b for a, b in itertools.pairwise(changes))
    expected_raises = 0
    level = False
    for v in values:
        if not level and v > 10.0:
            level, expected_raises = True, expected_raises + 1
        elif level and v <= 10.0 - deadband:
            level = False
    assert changes.count("raised") == expected_raises


@settings(max_examples=100)
@given(st.lists(st.floats(9.5, 10.5, allow_nan=False), min_size=2, max_size=200))
def test_a_deadband_wider_than_the_noise_gives_one_alarm_at_most(values):
    rule = ThresholdRule(name="t", series="*/*", h=10.0, deadband=1.0)
    assert kinds(replay(rule, series([11.0, *values]))).count("raised") == 1


@settings(max_examples=150)
@given(VALUES, st.integers(0, 10), st.integers(0, 10))
def test_on_and_off_delays_need_the_condition_to_persist(values, on_s, off_s):
    rule = ThresholdRule(name="t", series="*/*", h=10.0, on_delay_s=on_s, off_delay_s=off_s)
    events = replay(rule, series(values), tick_s=0.5, end_ns=T0 + (len(values) + 20) * S)
    for e in events:
        if e.kind == "raised":  # every reading in the on-delay before it was over the limit
            window = [v for i, v in enumerate(values) if e.time_ns - on_s * S <= T0 + i * S <= e.time_ns]
            start = (e.time_ns - T0) / S - on_s
            assert all(v > 10.0 for i, v in enumerate(values) if start - 1 < i <= (e.time_ns - T0) / S), window
        elif e.kind == "cleared":
            start = (e.time_ns - T0) / S - off_s
            assert all(v <= 10.0 for i, v in enumerate(values) if start - 1 < i <= (e.time_ns - T0) / S)


def test_high_high_escalates_the_alarm_and_needs_a_new_acknowledgement():
    clock = ReplayClock(T0)
    engine = AlarmEngine([ThresholdRule(name="dam", series="*/*", h=10, hh=15, severity="medium")], clock=clock)
    events = []
    engine.subscribe(events.append)
    engine.accept(series([11.0]))
    [alarm] = engine.active()
    engine.acknowledge([alarm["alarm_id"]], "ana", "watching")
    engine.accept(series([16.0], t0=T0 + S))
    assert [(e.kind, e.state, e.severity) for e in events] == [
        ("raised", "unacknowledged", "medium"), ("acknowledged", "acknowledged", "medium"),
        ("escalated", "unacknowledged", "critical")]
    assert engine.active()[0]["level"] == "HH"


# -- rate of change -------------------------------------------------------------------------------------
@settings(max_examples=150)
@given(st.floats(-0.05, 0.05), st.integers(20, 80))
def test_rate_of_change_fires_when_and_only_when_the_rise_exceeds_the_limit(slope_per_s, n):
    # A steady ramp over a 10-minute window, one point every 30 s: the change across the window is about
    # slope * 600 s (the medians of three points at each end lose one step at each side).
    rule = RateOfChangeRule(name="rise", series="*/*", rise=10.0, window_s=600)
    values = [slope_per_s * 30 * i for i in range(n)]
    fired = "raised" in kinds(replay(rule, series(values, step_s=30)))
    points = min(n, 21)  # a full window holds 21 points; the medians sit one step in from each end
    measured = slope_per_s * 30 * (points - 1 - 2)
    if abs(measured - 10.0) > 0.2:
        assert fired == (measured > 10.0), (slope_per_s, measured)


@settings(max_examples=150)
@given(st.lists(st.floats(4.9, 5.1, allow_nan=False), min_size=10, max_size=60), st.data())
def test_one_noisy_reading_neither_raises_nor_hides_a_rate_of_change(values, data):
    rule = RateOfChangeRule(name="rise", series="*/*", rise=1.0, window_s=300)
    spiked = list(values)
    spiked[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.sampled_from([50.0, -50.0]))
    assert "raised" not in kinds(replay(rule, series(spiked, step_s=10)))
    rising = [i * 0.1 for i in range(40)]  # 4 per 300 s: fires, even with one reading zeroed
    rising[data.draw(st.integers(0, 39))] = 0.0
    assert "raised" in kinds(replay(rule, series(rising, step_s=10)))


# -- no data --------------------------------------------------------------------------------------------
@settings(max_examples=100)
@given(st.integers(5, 120), st.integers(1, 400))
def test_no_data_fires_after_the_interval_and_clears_on_the_next_reading(timeout_s, gap_s):
    rule = NoDataRule(name="silent", series="*/*", timeout_s=timeout_s)
    readings = [*series([1.0, 1.0]), *series([1.0], t0=T0 + S + gap_s * S)]
    events = replay(rule, readings, tick_s=1.0)
    if gap_s > timeout_s + 1:
        raised, cleared = [e for e in events if e.kind == "raised"], [e for e in events if e.kind == "cleared"]
        assert len(raised) == 1 and len(cleared) == 1
        assert T0 + S + timeout_s * S < raised[0].time_ns <= T0 + S + (timeout_s + 1) * S
        assert cleared[0].time_ns == T0 + S + gap_s * S
    elif gap_s <= timeout_s:
        assert events == []


def test_a_silent_sensor_is_an_alarm_and_its_source_outage_suppresses_it_instead():
    clock = ReplayClock(T0)
    engine = AlarmEngine([NoDataRule(name="silent", series="*/*", timeout_s=60)], clock=clock)
    engine.accept([Reading("gauge-1", "rain", T0, 1.0, source="broker"),
                   Reading("gauge-2", "rain", T0, 1.0, source="broker")])
    engine.inhibit_source("broker", True, "broker plant-1 disconnected")
    clock.t_ns = T0 + 120 * S
    engine.tick()
    rows = engine.active()
    assert {(r["device"], r["state"], r["reason"]) for r in rows} == {
        ("gauge-1", "suppressed", "broker plant-1 disconnected"),
        ("gauge-2", "suppressed", "broker plant-1 disconnected")}
    assert engine.unacknowledged() == 0  # nobody is called for twenty sensors behind one dead gateway
    engine.inhibit_source("broker", False)
    engine.accept([Reading("gauge-1", "rain", T0 + 121 * S, 1.0, source="broker")])
    clock.t_ns = T0 + 122 * S
    engine.tick()
    assert [r["device"] for r in engine.active() if r["active"]] == []



def test_a_device_its_source_reports_dead_is_suppressed_alone_and_other_holds_outlive_its_rebirth():
    clock = ReplayClock(T0)
    engine = AlarmEngine([NoDataRule(name="silent", series="*/*", timeout_s=60)], clock=clock)
    engine.accept([Reading(d, "rain", T0, 1.0, source="spb") for d in ("gauge-1", "gauge-2", "gauge-3")])
    engine.inhibit_device("spb", "gauge-1", True, "Sparkplug DDEATH of gauge-1")
    engine.set_maintenance("gauge-2", True, "ann", "new battery")
    engine.inhibit_device("spb", "gauge-2", True)
    clock.t_ns = T0 + 120 * S
    engine.tick()
    assert {(r["device"], r["state"], r["reason"]) for r in engine.active()} == {
        ("gauge-1", "suppressed", "Sparkplug DDEATH of gauge-1"), ("gauge-2", "suppressed", "gauge-2 in maintenance"),
        ("gauge-3", "unacknowledged", "")}  # the source is up: the live gauge's silence is an alarm
    # Back: gauge-1's silence clock starts again (its death was no sensor fault); gauge-2 stays in maintenance.
    engine.inhibit_device("spb", "gauge-1", False)
    engine.set_maintenance("gauge-2", False, "ann")  # maintenance over, the gauge still dead: held
    assert [r["state"] for r in engine.active() if r["device"] == "gauge-2"] == ["suppressed"]
    engine.set_maintenance("gauge-2", True, "ann", "new battery")
    engine.inhibit_device("spb", "gauge-2", False)  # reborn, still in maintenance: held
    assert [r["state"] for r in engine.active() if r["device"] == "gauge-2"] == ["suppressed"]
    engine.accept([Reading("gauge-1", "rain", T0 + 121 * S, 1.0, source="spb")])
    clock.t_ns = T0 + 150 * S
    engine.tick()
    assert "gauge-1" not in [r["device"] for r in engine.active() if r["active"]]
    # A device dead and its source down: the source's return does not release the dead device.
    engine.inhibit_device("spb", "gauge-1", True)
    engine.inhibit_source("spb", True)
    engine.inhibit_source("spb", False)
    clock.t_ns = T0 + 300 * S
    engine.tick()
    assert [r["state"] for r in engine.active() if r["device"] == "gauge-1"] == ["suppressed"]
    assert engine.health()["inhibited_devices"] == ["gauge-1"]


def test_a_device_reported_dead_by_one_source_leaves_another_sources_device_of_that_name_alarmed():
    """A Sparkplug DDEATH of `pump-1` must not silence an MQTT gauge also called `pump-1`."""
    clock = ReplayClock(T0)
    engine = AlarmEngine([NoDataRule(name="silent", series="*/*", timeout_s=60)], clock=clock)
    engine.accept([Reading("pump-1", "flow", T0, 1.0, source="spb"),
                   Reading("pump-1", "level", T0, 1.0, source="mqtt")])
    engine.inhibit_device("spb", "pump-1", True, "Sparkplug DDEATH of pump-1")
    clock.t_ns = T0 + 120 * S
    engine.tick()
    assert {(r["series"], r["state"]) for r in engine.active()} == {
        ("pump-1/flow", "suppressed"), ("pump-1/level", "unacknowledged")}
    engine.inhibit_device("spb", "pump-1", False)  # reborn: its alarm is judged again, no longer held
    assert "suppressed" not in {r["state"] for r in engine.active()}

# -- time to threshold ----------------------------------------------------------------------------------
def test_time_to_threshold_says_when_the_limit_will_be_reached():
    rule = TimeToThresholdRule(name="crest", series="*/*", limit=15.0, horizon_s=7200, window_s=1800,
                               message="{device}: spillway crest in {in}")
    # 1 cm a minute from 13 m: 15 m in 200 min; within the 2 h horizon after 80 minutes.
    values = [13.0 + 0.01 * i for i in range(100)]
    events = replay(rule, series(values, step_s=60))
    [raised] = [e for e in events if e.kind == "raised"]
    minutes_left = (15.0 - values[(raised.time_ns - T0) // (60 * S)]) / 0.01
    assert (minutes_left <= 120 and raised.message.startswith("dam-1: spillway crest in 2 h 00")) or (
        raised.message == f"dam-1: spillway crest in {human_duration(minutes_left * 60)}"), raised.message


@settings(max_examples=100)
@given(st.floats(-0.02, 0.02), st.floats(600, 7200))
def test_time_to_threshold_fires_only_for_a_trend_towards_the_limit_within_the_horizon(slope_per_min, horizon_s):
    rule = TimeToThresholdRule(name="crest", series="*/*", limit=15.0, horizon_s=horizon_s, window_s=1800)
    values = [13.0 + slope_per_min * i for i in range(31)]
    fired_at = [e for e in replay(rule, series(values, step_s=60)) if e.kind == "raised"]
    eta_s = (15.0 - values[-1]) / slope_per_min * 60 if slope_per_min > 0 else float("inf")
    if slope_per_min <= 0:
        assert not fired_at
    elif eta_s < horizon_s * 0.95 and values[-1] < 15.0:
        assert fired_at
    elif eta_s > horizon_s * 1.05 + 30 * 60:  # not even at the window's first full fit
        assert not fired_at


# -- composite ------------------------------------------------------------------------------------------
@settings(max_examples=100)
@given(st.lists(st.booleans(), min_size=3, max_size=3), st.sampled_from([
    "a and b", "a or (b and not c)", "not a", '"a" and not ("b" or c)', "(a or b) and (b or c)"]))
def test_a_composite_follows_its_operands(states, expression):
    rules = [ThresholdRule(name=n, series=f"{n}/x", h=0.5) for n in "abc"]
    comp = CompositeRule(name="combo", expression=expression)
    clock = ReplayClock(T0)
    engine = AlarmEngine([*rules, comp], clock=clock)
    engine.accept([Reading(n, "x", T0, 1.0 if on else 0.0) for n, on in zip("abc", states, strict=True)])
    engine.tick()
    expected = Expression.parse(expression).evaluate({n for n, on in zip("abc", states, strict=True) if on})
    combo = engine.alarm("combo|composite/combo")
    assert (combo is not None and combo.active) == expected


# -- lifecycle ------------------------------------------------------------------------------------------
def test_the_isa_lifecycle_raise_return_acknowledge_shelve_maintenance():
    clock = ReplayClock(T0)
    engine = AlarmEngine([ThresholdRule(name="high", series="*/*", h=10)], clock=clock)
    events = []
    engine.subscribe(events.append)
    engine.accept(series([12.0]))
    aid = "high|dam-1/level"
    assert engine.alarm(aid).state == AlarmState.UNACKNOWLEDGED
    engine.accept(series([5.0], t0=T0 + S))
    assert engine.alarm(aid).state == AlarmState.RETURNED_UNACKNOWLEDGED  # back, but nobody saw it
    clock.t_ns = T0 + 2 * S
    engine.acknowledge([aid], "ana", "checked on site")
    assert engine.alarm(aid).state == AlarmState.NORMAL and engine.active() == []
    engine.accept(series([13.0], t0=T0 + 3 * S))
    engine.acknowledge([aid], "ana")
    assert engine.alarm(aid).state == AlarmState.ACKNOWLEDGED
    engine.shelve([aid], 60, "bob", "sensor being cleaned")
    assert engine.alarm(aid).state == AlarmState.SHELVED and engine.series_state("dam-1/level") == "ok"
    clock.t_ns = T0 + 70 * S
    engine.tick()  # the shelve expired with the value still high: back, unacknowledged
    assert engine.alarm(aid).state == AlarmState.UNACKNOWLEDGED
    engine.set_maintenance("dam-1", True, "carl", "valve replaced")
    assert engine.alarm(aid).state == AlarmState.SUPPRESSED and engine.unacknowledged() == 0
    engine.set_maintenance("dam-1", False, "carl")
    assert engine.alarm(aid).state == AlarmState.UNACKNOWLEDGED
    assert [(e.kind, e.state, e.user) for e in events] == [
        ("raised", "unacknowledged", ""), ("cleared", "returned_unacknowledged", ""),
        ("acknowledged", "normal", "ana"), ("raised", "unacknowledged", ""),
        ("acknowledged", "acknowledged", "ana"), ("shelved", "shelved", "bob"),
        ("unshelved", "unacknowledged", ""), ("suppressed", "suppressed", "carl"),
        ("unsuppressed", "unacknowledged", "carl")]
    assert events[2].comment == "checked on site"


def test_a_latched_alarm_needs_an_acknowledgement_after_it_cleared():
    engine = AlarmEngine([ThresholdRule(name="high", series="*/*", h=10, latched=True)], clock=ReplayClock(T0))
    engine.accept(series([12.0]))
    engine.acknowledge(["high|dam-1/level"], "ana")
    engine.accept(series([5.0], t0=T0 + S))
    assert engine.alarm("high|dam-1/level").state == AlarmState.RETURNED_UNACKNOWLEDGED


def test_disabling_a_rule_takes_its_alarms_out_of_service_and_shadow_rules_colour_nothing():
    rule = ThresholdRule(name="high", series="*/*", h=10)
    engine = AlarmEngine([rule], clock=ReplayClock(T0))
    engine.accept(series([12.0]))
    engine.set_rules([ThresholdRule(name="high", series="*/*", h=10, mode="disabled")])
    assert engine.alarm("high|dam-1/level").state == AlarmState.OUT_OF_SERVICE
    shadow = AlarmEngine([ThresholdRule(name="try", series="*/*", h=10, mode="shadow")], clock=ReplayClock(T0))
    events = []
    shadow.subscribe(events.append)
    shadow.accept(series([12.0]))
    assert [e.shadow for e in events] == [True] and shadow.active() == []
    assert shadow.series_state("dam-1/level") == "ok"


def test_snapshot_and_restore_keep_what_operators_did():
    engine = AlarmEngine([ThresholdRule(name="high", series="*/*", h=10)], clock=ReplayClock(T0))
    engine.accept(series([12.0]))
    engine.acknowledge(["high|dam-1/level"], "ana", "on it")
    again = AlarmEngine([ThresholdRule(name="high", series="*/*", h=10)], clock=ReplayClock(T0 + S))
    assert again.restore(engine.snapshot()) == 1
    events = []
    again.subscribe(events.append)
    again.accept(series([12.5], t0=T0 + 2 * S))  # still high after the restart: not raised again
    assert events == [] and again.active()[0]["acked_by"] == "ana"


# -- replay == live -------------------------------------------------------------------------------------
RULE_SPECS = st.sampled_from([
    {"type": "threshold", "name": "r", "h": 10, "l": 2, "deadband": 0.5, "on_delay_s": 2},
    {"type": "rate_of_change", "name": "r", "rise": 3, "fall": 3, "window_s": 60},
    {"type": "no_data", "name": "r", "timeout_s": 20},
    {"type": "time_to_threshold", "name": "r", "limit": 15, "horizon_s": 120, "window_s": 60},
])


@settings(max_examples=60, deadline=None)
@given(RULE_SPECS, st.lists(st.tuples(st.integers(1, 40), st.floats(0, 20, allow_nan=False)), min_size=1,
                            max_size=60), st.integers(1, 7))
def test_replaying_recorded_readings_gives_the_live_engines_events(spec, steps, batch):
    readings, t = [], T0
    for dt, v in steps:
        t += dt * S
        readings.append(Reading("dam-1", "level", t, v))
    expected = replay(rule_from_spec(spec), readings, tick_s=1.0, end_ns=t + 60 * S)

    # The live engine: readings arrive in batches, the clock ticks every second of (simulated) time.
    clock = ReplayClock(T0)
    live = AlarmEngine([rule_from_spec(spec)], clock=clock)
    got = []
    live.subscribe(got.append)
    pending: list[Reading] = []
    next_tick = None
    for r in readings:
        while next_tick is not None and next_tick < r.time_ns:
            if pending:
                live.accept(pending)
                pending = []
            clock.t_ns = next_tick
            live.tick(next_tick)
            next_tick += S
        clock.t_ns = r.time_ns
        pending.append(r)
        if len(pending) >= batch:
            live.accept(pending)
            pending = []
        if next_tick is None:
            next_tick = r.time_ns + S
    if pending:
        live.accept(pending)
    while next_tick <= t + 60 * S:
        clock.t_ns = next_tick
        live.tick(next_tick)
        next_tick += S
    assert [(e.kind, e.time_ns, e.state) for e in got] == [(e.kind, e.time_ns, e.state) for e in expected]


def test_summarize_counts_episodes_per_day():
    rule = ThresholdRule(name="t", series="*/*", h=10)
    values = ([12.0] * 5 + [1.0] * 5) * 3
    summary = summarize(replay(rule, series(values, step_s=3600)), T0, T0 + 30 * 3600 * S)
    assert summary["count"] == 3 and summary["longest_s"] == 5 * 3600
    assert round(summary["per_day"], 2) == round(3 / 1.25, 2)


def test_the_console_shows_shadow_alarms_only_when_asked():
    from types import SimpleNamespace

    from app.pages.alarms import console_rows

    engine = AlarmEngine([ThresholdRule(name="live", series="*/*", h=10),
                          ThresholdRule(name="trial", series="*/*", h=5, mode="shadow")], clock=ReplayClock(T0))
    engine.accept(series([7.0, 12.0]))
    runtime = SimpleNamespace(alarms=engine)
    assert [r["rule"] for r in console_rows(runtime)] == ["live"]
    assert [(r["rule"], r["shadow"]) for r in console_rows(runtime, shadow=True)] == [("trial", True)]
    assert engine.unacknowledged() == 1  # the banner counts what operators must act on: not shadow alarms


def test_a_no_data_rule_without_a_timeout_takes_its_sources_expected_interval():
    clock = ReplayClock(T0)
    engine = AlarmEngine([NoDataRule(name="silent", series="*/*")], clock=clock)
    engine.source_intervals = {"plc": 10.0}
    engine.accept([Reading("pump-1", "speed", T0, 1.0, source="plc"), Reading("gauge", "rain", T0, 1.0, source="mqtt")])
    clock.t_ns = T0 + 11 * S
    engine.tick()
    assert [r["device"] for r in engine.active()] == ["pump-1"]  # 10 s for the PLC; the default 300 s elsewhere
    clock.t_ns = T0 + 301 * S
    engine.tick()
    assert sorted(r["device"] for r in engine.active()) == ["gauge", "pump-1"]
