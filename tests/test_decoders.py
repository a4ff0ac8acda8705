"""Decoders and topic templates: exact results, and no exception escapes on any input."""

from __future__ import annotations

import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.deadletters import DeadLetters
from app.ingest.decoders import Context, Decoder, Entries, FieldMap
from app.ingest.lineprotocol import escape_key, escape_measurement, escape_string_field, parse_line
from app.ingest.topics import TemplateError, TopicTemplate
from app.model import Reading

NOW = time.time_ns()


def ctx(**kw) -> Context:
    base = {"source": "s", "where": "t", "received_ns": NOW, "device": "d", "metric": None, "tags": {}}
    base.update(kw)
    return Context(**base)


def run(decoder: Decoder, payload: bytes, max_future_s: float | None = None, **kw,
        ) -> tuple[list[Reading], DeadLetters]:
    if max_future_s is not None:
        decoder.max_future_ns = int(max_future_s * 1e9)
    out: list[Reading] = []
    dead = DeadLetters("s", quiet=True)
    decoder.decode(payload, ctx(**kw), out, dead)
    return out, dead


def test_topic_template_filter_and_match():
    t = TopicTemplate.parse("site/{site}/device/{device}/telemetry")
    assert t.filter == "site/+/device/+/telemetry"
    assert t.match("site/n/device/d1/telemetry") == {"site": "n", "device": "d1"}
    assert t.match("site/n/device/d1/other") is None
    assert t.match("site/n/device/d1/telemetry/x") is None
    tail = TopicTemplate.parse("plant/{line}/#")
    assert tail.filter == "plant/+/#" and tail.match("plant/a/b/c") == {"line": "a"}
    for bad in ("a/{x}/{x}", "a/b{c}/d", "a/#/b"):
        try:
            TopicTemplate.parse(bad)
        except TemplateError:
            continue
        raise AssertionError(bad)


def test_json_timestamp_units_and_mapping():
    iso = Decoder.create("json", timestamp_field="time", timestamp_unit="iso",
                         fields={"lvl": FieldMap("water_level", "m"), "junk": None}, other_fields="drop")
    out, dead = run(iso, json.dumps({"time": "2026-11-25T10:00:00.123Z", "lvl": 3, "junk": 1, "x": 2}).encode())
    assert [(r.metric, r.value, r.unit, r.time_ns) for r in out] == [
        ("water_level", 3.0, "m", 1795600800123000000)]
    for unit, raw in (("s", NOW / 1e9), ("ms", NOW // 10**6), ("us", NOW // 1000), ("ns", NOW)):
        d = Decoder.create("json", timestamp_field="ts", timestamp_unit=unit)
        out, _dead = run(d, json.dumps({"ts": raw, "v": 1}).encode())
        assert abs(out[0].time_ns - NOW) < 10**6, unit
    # Fractions are exact: binary floating point would give ...000999936 ns for .001 s (read as .000 in ms).
    whole_s = NOW // 10**9
    for unit, raw, expected in (("s", f"{whole_s}.001", whole_s * 10**9 + 10**6),
                                ("ms", f"{whole_s * 1000 + 7}.5", (whole_s * 1000 + 7) * 10**6 + 500_000),
                                ("iso", '"2026-11-25T10:00:00.000001Z"', 1795600800000001000)):
        d = Decoder.create("json", timestamp_field="ts", timestamp_unit=unit, max_future_s=10**9)
        out, _dead = run(d, f'{{"ts": {raw}, "v": 1}}'.encode())
        assert out[0].time_ns == expected, unit
    nested = Decoder.create("json", timestamp_field=None, fields={"a.b": FieldMap("ab")})
    out, _ = run(nested, b'{"a": {"b": 5}}')
    assert out[0].metric == "ab" and out[0].time_ns == NOW


def test_json_array_device_field_and_bad_items():
    d = Decoder.create("json", timestamp_field=None, device_field="id")
    out, dead = run(d, b'[{"id": "x", "v": 1}, 5, {"id": "y", "v": true, "s": "text"}]', device=None)
    assert [(r.device, r.value) for r in out] == [("x", 1.0), ("y", 1.0)]
    assert dead.counts["wrong_type"] == 1


def test_line_protocol_escapes_roundtrip():
    text = 'he said "hi" \\\\'
    line = (f"{escape_measurement('my meas,x')},{escape_key('tag k')}={escape_key('v=1, z')} "
            f"{escape_key('f k')}=1.5,s={escape_string_field(text)},i=3i,b=t 1700000000000000000")
    parsed = parse_line(line)
    assert parsed.measurement == "my meas,x"
    assert parsed.tags == {"tag k": "v=1, z"}
    assert parsed.fields == {"f k": 1.5, "s": 'he said "hi" \\\\', "i": 3, "b": True}
    assert parsed.timestamp == 1700000000000000000


def test_number_decoder():
    d = Decoder.create("number", unit="V")
    out, dead = run(d, b" 3.5\n", metric="battery")
    assert (out[0].metric, out[0].value, out[0].unit) == ("battery", 3.5, "V")
    out, dead = run(d, b"inf", metric="battery")
    assert not out and dead.counts["not_finite"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


# Garbage in the places the options read: the values, entries, nested time, device, tags, errors.
leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
small = leaf | st.lists(leaf, max_size=3) | st.dictionaries(st.sampled_from(["ts", "dev", "q", "site", "x"]) |
                                                            st.text(max_size=4), leaf, max_size=3)
shaped = st.fixed_dictionaries({}, optional={k: small for k in ("ts", "v", "values", "meta", "tags", "err", "node",
                                                                "u")})
entry = st.fixed_dictionaries({}, optional={k: leaf for k in ("name", "value", "q", "t", "e")})
shaped_values = st.one_of(shaped, st.builds(lambda d, es: {**d, "v": es}, shaped, st.lists(entry, max_size=4)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(garbage=st.lists(st.binary(max_size=200) | (json_values | shaped_values).map(lambda v: json.dumps(v).encode()),
                        max_size=8),
       decoder_type=st.sampled_from(["json", "number", "line_protocol", "entries", "nested"]))
def test_no_exception_escapes_and_good_readings_survive(garbage, decoder_type):
    options = {"entries": {"values": "v", "entries": Entries(quality="q", timestamp="t", error="e"),
                           "device_field": "node", "tags_field": "tags", "tag_keys": ["a"], "errors_field": "err"},
               "nested": {"timestamp_field": "meta.ts", "values": "values", "device_field": "meta.dev",
                          "quality_field": "meta.q", "unit_field": "u", "tag_fields": {"site": "meta.site"}}}
    decoder = Decoder.create("json" if decoder_type in options else decoder_type, **options.get(decoder_type, {}))
    ms = NOW // 10**6
    good = {"json": b'{"ts": %d, "level": 1.25}' % ms,
            "number": b"1.25",
            "line_protocol": b"m,device=d level=1.25 %d" % NOW,
            "entries": b'{"ts": %d, "v": [{"name": "level", "value": 1.25}]}' % ms,
            "nested": b'{"meta": {"ts": %d}, "values": {"level": 1.25}}' % ms}[decoder_type]
    stream = [p for g in garbage for p in (g, good)] or [good]
    out: list[Reading] = []
    dead = DeadLetters("s", quiet=True)
    for payload in stream:
        decoder.decode(payload, ctx(metric="level"), out, dead)
    kept = [r for r in out if r.metric in ("level", "m.level") and r.value == 1.25]
    assert len(kept) >= len(stream) - len(garbage)
    assert all(math.isfinite(r.value) for r in out)
    assert "decoder_error" not in dead.counts, dead.recent


def test_http_line_protocol_names_each_reading_the_edge_check_refuses():
    """A line whose tag holds a control character is refused to the caller, not counted as accepted."""
    from app.hub import Hub
    from app.ingest.http import HttpSource
    from tests.helpers import Collector

    collector = Collector()
    source = HttpSource("http", Hub(store=collector), token="t")
    body = b"weather,device=ws-1 temp=3.5 1764066000000\nweather,device=ws\x012 temp=4.5 1764066000000\n"
    accepted, errors = source.ingest_lines(body, "ms")
    assert accepted == 1 and [e["kind"] for e in errors] == ["invalid_reading"], errors
    assert [r.device for r in collector.readings] == ["ws-1"]
    accepted, errors = source.ingest_json(b'[{"device": "ok", "metric": "m", "value": 1}]')
    assert (accepted, errors, len(collector.readings)) == (1, [], 2)


# -- the formats real gateways send (issue 15) ---------------------------------------------------------------
T_S = NOW // 10**9 - 60  # a minute ago, in whole seconds
T_NS = T_S * 10**9


def series(out: list[Reading]) -> list[tuple]:
    return [(r.device, r.metric, r.time_ns, r.value, r.quality, r.unit, r.tags) for r in out]


def letters(dead: DeadLetters) -> list[tuple[str, str, str]]:
    return [(d.where, d.kind, d.reason) for d in dead.recent]


# Telegraf's own output (inputs.cpu, inputs.mem, inputs.disk, inputs.system), as its influx serializer writes it.
TELEGRAF = (
    f"cpu,cpu=cpu0,host=h1 usage_idle=97.5,usage_user=1.5 {T_NS}\n"
    f"cpu,cpu=cpu-total,host=h1 usage_idle=98,usage_user=1 {T_NS}\n"
    f"mem,host=h1 used_percent=41.2,available=8123456i {T_NS}\n"
    f"disk,device=sda1,fstype=ext4,host=h1,mode=rw,path=/ used_percent=71.25,free=1000i {T_NS}\n"
    f"system,host=h1 uptime_format=\"2 days,  3:04\" {T_NS}\n"
).encode()


def test_line_protocol_keeps_the_measurement_and_refuses_collisions():
    """mem and disk used_percent are two series; cpu0 and cpu-total on one series are refused, not merged."""
    d = Decoder.create("line_protocol", device_tags=["host"])
    out, dead = run(d, TELEGRAF, device=None)
    disk_tags = {"device": "sda1", "fstype": "ext4", "mode": "rw", "path": "/"}
    assert series(out) == [
        ("h1", "mem.used_percent", T_NS, 41.2, "good", "", {}),
        ("h1", "mem.available", T_NS, 8123456.0, "good", "", {}),
        ("h1", "disk.used_percent", T_NS, 71.25, "good", "", disk_tags),
        ("h1", "disk.free", T_NS, 1000.0, "good", "", disk_tags)]
    hint = (" (metric_template '{measurement}.{field}': add the tag that tells them apart, e.g. "
            "{measurement}.{cpu}.{field})")
    cpu0, total = "measurement 'cpu' tags cpu=cpu0,host=h1", "measurement 'cpu' tags cpu=cpu-total,host=h1"
    assert letters(dead) == [
        ("t line 5", "no_readings", "measurement 'system' has only string fields: nothing numeric"),
        ("t line 1", "series_collision", f"{cpu0} writes series h1/cpu.usage_idle, which {total} also writes at the "
                                         f"same instant: none is kept{hint}"),
        ("t line 1", "series_collision", f"{cpu0} writes series h1/cpu.usage_user, which {total} also writes at the "
                                         f"same instant: none is kept{hint}"),
        ("t line 2", "series_collision", f"{total} writes series h1/cpu.usage_idle, which {cpu0} also writes at the "
                                         f"same instant: none is kept{hint}"),
        ("t line 2", "series_collision", f"{total} writes series h1/cpu.usage_user, which {cpu0} also writes at the "
                                         f"same instant: none is kept{hint}")]

    # The cpu tag in the name tells the cores apart; lines without it drop it with the dot before it.
    d = Decoder.create("line_protocol", device_tags=["host"], metric_template="{measurement}.{cpu}.{field}",
                       measurement_tag="measurement", units={"mem.used_percent": "%"})
    out, dead = run(d, TELEGRAF, device=None)
    assert [(r.metric, r.value, r.unit, r.tags.get("measurement")) for r in out] == [
        ("cpu.cpu0.usage_idle", 97.5, "", "cpu"), ("cpu.cpu0.usage_user", 1.5, "", "cpu"),
        ("cpu.cpu-total.usage_idle", 98.0, "", "cpu"), ("cpu.cpu-total.usage_user", 1.0, "", "cpu"),
        ("mem.used_percent", 41.2, "%", "mem"), ("mem.available", 8123456.0, "", "mem"),
        ("disk.used_percent", 71.25, "", "disk"), ("disk.free", 1000.0, "", "disk")]
    assert [d.kind for d in dead.recent] == ["no_readings"]

    # The former naming, by field alone: mem and disk used_percent would be one series; both are refused.
    d = Decoder.create("line_protocol", device_tags=["host"], metric_template="{field}", measurement_tag="m")
    out, dead = run(d, TELEGRAF, device=None)
    assert [(r.metric, r.tags["m"]) for r in out] == [("available", "mem"), ("free", "disk")]
    collided = [(w, r.split(" writes series ")[1].split(",")[0]) for w, k, r in letters(dead)
                if k == "series_collision"]
    assert collided == [("t line 1", "h1/usage_idle"), ("t line 1", "h1/usage_user"),
                        ("t line 2", "h1/usage_idle"), ("t line 2", "h1/usage_user"),
                        ("t line 3", "h1/used_percent"), ("t line 4", "h1/used_percent")]
    # The device is the first of device_tags in the config's order, whatever the line's order.
    d = Decoder.create("line_protocol", device_tags=["host", "device"])
    out, dead = run(d, f"disk,device=sda1,host=h1 free=1 {T_NS}".encode(), device=None)
    assert [(r.key, r.tags) for r in out] == [("h1/disk.free", {})] and not dead.recent
    # The same line twice is the same data (a resend), not a collision.
    line = f"mem,host=h1 used_percent=41.2 {T_NS}\n".encode()
    out, dead = run(Decoder.create("line_protocol"), line * 2, device=None)
    assert [r.key for r in out] == ["h1/mem.used_percent"] * 2 and not dead.recent


def test_neuron_values_format_with_errors():
    """Neuron's 'values' upload format: values by name, failed tags by error code."""
    d = Decoder.create("json", timestamp_field="timestamp", device_field="node", tag_fields={"group": "group"},
                       values="values", errors_field="errors", fields={"tag2": FieldMap("flow", "m3/h")})
    payload = {"node": "modbus-tcp-1", "group": "grp1", "timestamp": T_S * 1000 + 943,
               "values": {"tag1": 123, "tag2": 1.1, "tag4": "running", "tag5": None}, "errors": {"tag3": 2014}}
    out, dead = run(d, json.dumps(payload).encode(), device=None)
    t = T_NS + 943 * 10**6
    assert series(out) == [("modbus-tcp-1", "flow", t, 1.1, "good", "m3/h", {"group": "grp1"}),
                           ("modbus-tcp-1", "tag1", t, 123.0, "good", "", {"group": "grp1"})]
    assert letters(dead) == [("t", "wrong_type", "field 'tag4' is str 'running', not a number"),
                             ("t", "wrong_type", "field 'tag5' is NoneType null, not a number"),
                             ("t", "device_error", "field 'tag3': the gateway reports error int 2014")]


def test_neuron_tags_format_name_value_entries():
    """Neuron's 'tags' format: an array of {name, value} entries, each with its own quality and time."""
    d = Decoder.create("json", timestamp_field="timestamp", device_field="node", tag_fields={"group": "group"},
                       values="tags", entries=Entries(quality="q", timestamp="ts", error="error"))
    payload = {"node": "n1", "group": "g", "timestamp": T_S * 1000,
               "tags": [{"name": "t1", "value": 1.5, "q": "good", "ts": T_S * 1000 + 5},
                        {"name": "t2", "value": 2, "q": "BAD"},
                        {"name": "t3", "error": 2014},
                        {"name": "t4", "value": "1,5"},
                        {"value": 7},
                        {"name": "t6", "value": 6, "ts": "yesterday"}]}
    out, dead = run(d, json.dumps(payload).encode(), device=None)
    assert series(out) == [("n1", "t1", T_NS + 5 * 10**6, 1.5, "good", "", {"group": "g"}),
                           ("n1", "t2", T_NS, 2.0, "bad", "", {"group": "g"})]
    assert letters(dead) == [
        ("t", "device_error", "field 't3': the gateway reports error int 2014"),
        ("t", "wrong_type", "field 't4' is str '1,5', not a number"),
        ("t", "no_name", "entry 4 has no 'name' (the value's name)"),
        ("t", "bad_timestamp", "field 't6': 'ts': expected a number of ms, got 'yesterday'")]


def test_lorawan_and_node_red_arrays_of_name_value():
    """A bare array of {name, value, unit} (a LoRaWAN codec's or Node-RED's output), arrival time."""
    d = Decoder.create("json", timestamp_field=None, entries=Entries(unit="unit"), fields={"battery": None})
    payload = [{"name": "temperature", "value": 21.5, "unit": "°C"}, {"name": "humidity", "value": 48},
               {"name": "battery", "value": 3.6}, {"name": "door", "value": True}, {"name": "rssi"}]
    out, dead = run(d, json.dumps(payload).encode(), device="lht65-01", tags={"app": "farm"})
    assert series(out) == [("lht65-01", "temperature", NOW, 21.5, "good", "°C", {"app": "farm"}),
                           ("lht65-01", "humidity", NOW, 48.0, "good", "", {"app": "farm"}),
                           ("lht65-01", "door", NOW, 1.0, "good", "", {"app": "farm"})]
    assert letters(dead) == [("t", "missing_value", "field 'rssi': entry 4 has no 'value'")]
    # An object where the array should be is said so, not read as nothing.
    out, dead = run(d, b'{"name": "temperature", "value": 1}', device="x")
    assert not out and letters(dead) == [("t", "wrong_type", "expected an array of entries, got dict")]


def test_payload_tags_device_path_nested_timestamp_and_unit():
    """Tags from a payload object (only the allowed keys), the device and the time from nested paths."""
    d = Decoder.create("json", timestamp_field="meta.time", timestamp_unit="iso", device_field="device.id",
                       tags_field="tags", tag_keys=["site", "line"], tag_fields={"fw": "meta.firmware"},
                       unit_field="unit", quality_field="meta.status")
    payload = {"meta": {"time": "2026-11-25T10:00:00.250Z", "firmware": "2.1", "status": 1 << 30},
               "device": {"id": "p-7"}, "tags": {"site": "north", "line": "L2", "secret": "x"}, "unit": "bar",
               "pressure": 3.2, "temp": 40}
    out, dead = run(d, json.dumps(payload).encode(), device=None, max_future_s=10**9)
    tags = {"site": "north", "line": "L2", "fw": "2.1"}
    assert series(out) == [("p-7", "pressure", 1795600800250000000, 3.2, "uncertain", "bar", tags),
                           ("p-7", "temp", 1795600800250000000, 40.0, "uncertain", "bar", tags)]
    assert not dead.recent
    out, dead = run(d, json.dumps({**payload, "meta": {}}).encode(), device=None)
    assert not out and letters(dead) == [("t", "missing_timestamp", "no 'meta.time' field")]
    out, dead = run(d, json.dumps({**payload, "device": {}}).encode(), device=None)
    assert not out and letters(dead) == [("t", "no_device", "neither the topic nor the payload names a device "
                                                            "(no 'device.id')")]


def test_nothing_numeric_and_a_field_that_fails_are_dead_letters():
    d = Decoder.create("json", fields={"level": FieldMap("water_level", "m"), "flow": FieldMap(unit="m3/s")})
    ms = T_S * 1000
    notes: list[str] = []
    out, dead = run(d, json.dumps({"ts": ms, "status": "ok", "fw": "1.2"}).encode(), notes=notes)
    assert not out and letters(dead) == [("t", "no_readings", "nothing numeric in the message: no reading, nothing "
                                                              "refused")]
    assert notes == ["t: field 'status' (str) is not a value: ignored", "t: field 'fw' (str) is not a value: ignored"]
    out, dead = run(d, json.dumps({"ts": ms, "level": 3.5, "flow": "n/a", "extra": 1}).encode())
    assert series(out) == [("d", "water_level", T_NS, 3.5, "good", "m", {}), ("d", "extra", T_NS, 1.0, "good", "", {})]
    assert letters(dead) == [("t", "wrong_type", "field 'flow' is str 'n/a', not a number")]
    # Two items of one message in an array: each is placed, each accounted for.
    out, dead = run(d, json.dumps([{"ts": ms, "level": 1}, {"ts": ms, "note": "x"}]).encode())
    assert [r.metric for r in out] == ["water_level"]
    assert letters(dead) == [("t item 1", "no_readings", "nothing numeric in the message: no reading, nothing "
                                                         "refused")]


def test_check_config_refuses_what_a_decoder_cannot_do(tmp_path):
    """Inconsistent options are config problems, with their key path, before anything runs."""
    import subprocess
    import sys
    import textwrap

    from app.config import ConfigError, load_config

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "vigie.yaml").write_text(textwrap.dedent("""\
        http: {line_protocol: {metric_template: "{field}"}}
        mqtt:
          - name: gw
            subscriptions:
              - {topic: 'a/{device}', decoder: line_protocol, fields: {x: null}}
              - {topic: 'b/{device}', entries: {name: n}, device_field: node}
              - {topic: 'c/{device}', tags_field: tags}
              - {topic: 'd/{device}', timestamp_field: null, timestamp_unit: s}
              - {topic: 'e/{device}', decoder: number, entries: {}, metric: m}
              - {topic: 'f/{device}', fields: {a: {metric: x}, b: {metric: x}}}
              - {topic: 'g/{device}', decoder: line_protocol, metric_template: "{measurement}"}
              - {topic: 'h/{device}', timestamp_field: "meta..time", values: tags, entries: {}}
              - {topic: 'i/{device}', decoder: line_protocol}
              - {topic: 'k/{device}', name: dup}
              - {topic: 'l/{device}', name: dup}
        """))
    try:
        load_config(cfg, env={})
    except ConfigError as exc:
        problems = [(p.where, p.message) for p in exc.problems]
    else:
        raise AssertionError("the config was accepted")
    s = "mqtt[0].subscriptions"
    assert problems == [
        (f"{s}[0].fields", "only the json decoder reads it (this one is line_protocol)"),
        (f"{s}[1].timestamp_field", "the message is the array of entries itself, with no 'ts' beside it: set "
                                    "timestamp_field: null (arrival time) or entries.timestamp, or values: the "
                                    "array's path"),
        (f"{s}[1].device_field", "the message is the array of entries itself, with nothing beside it: give values: "
                                 "the array's path"),
        (f"{s}[2].tag_keys", "tags_field and tag_keys go together: the object, and the keys allowed from it"),
        (f"{s}[3].timestamp_unit", "no timestamp is read (timestamp_field is null: the arrival time)"),
        (f"{s}[4].entries", "only the json decoder reads it (this one is number)"),
        (f"{s}[5].fields.b", "metric 'x' is also field 'a''s: two fields would write one series"),
        (f"{s}[6].metric_template", "metric template '{measurement}' has no {field}: every field of a line would be "
                                    "one series"),
        (f"{s}[7].timestamp_field", "'meta..time' is not a path (keys joined by dots: meta.time)"),
        (f"{s}[10].name", "'dup' names an earlier subscription of this broker too"),
        *((f"{s}[{i}].metric_template", f"mqtt 'gw' subscription '{t}/{{device}}' ('{{measurement}}.{{field}}') and "
                                         "the HTTP line protocol endpoints ('{field}') can write the same series: a "
                                         "template without {measurement} merges different measurements' fields; put "
                                         "{measurement} (or a text of its own) in one of them")
          for i, t in ((0, "a"), (8, "i")))]
    # The command says so too, and fails.
    vigie = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(cfg)], capture_output=True,
                           text=True, timeout=60)
    assert vigie.returncode == 2 and "12 problem(s)" in vigie.stderr and "tags_field and tag_keys" in vigie.stderr
    # Two templates that both keep the measurement only meet on the same data: accepted.
    (cfg / "vigie.yaml").write_text("mqtt:\n  - subscriptions:\n      - {topic: 'i/{device}', decoder: line_protocol}\n"
                                    "      - {topic: 'j/{device}', decoder: line_protocol, "
                                    "metric_template: 'plc.{measurement}.{field}'}\n")
    assert len(load_config(cfg, env={}).config.mqtt[0].subscriptions) == 2


NEURON_CONFIG = """\
mqtt:
  - name: plant
    subscriptions:
      - name: neuron
        topic: neuron/{site}/upload
        timestamp_field: timestamp
        device_field: node
        tag_fields: {group: group}
        values: tags
        entries: {quality: q, error: error}
        fields: {t1: {metric: pressure, unit: bar}}
      - topic: servers/{device}/metrics
        decoder: line_protocol
        precision: s
"""


def test_vigie_decode_prints_every_reading_and_dead_letter_of_a_sample(tmp_path):
    """`vigie decode` as a user runs it: a sample payload under a configured subscription, before going live."""
    import subprocess
    import sys

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "vigie.yaml").write_text(NEURON_CONFIG)
    sample = tmp_path / "sample.json"
    ms = T_S * 1000
    sample.write_text(json.dumps({"node": "press-4", "group": "g1", "timestamp": ms, "tags": [
        {"name": "t1", "value": 2.5, "q": "good"}, {"name": "t2", "value": "on"}, {"name": "t3", "error": 2014},
        {"name": "t4", "value": 7, "q": "bad"}]}))
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T_S)) + ".000000000Z"

    def vigie(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", "decode", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60, input=stdin)

    done = vigie("--subscription", "neuron", "--topic", "neuron/north/upload", str(sample))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "subscription 'neuron' of mqtt 'plant' (decoder json)",
        "2 reading(s)",
        f'  press-4/pressure = 2.5  at {iso}  good  unit bar  tags {{"site": "north", "group": "g1"}}',
        f'  press-4/t4 = 7  at {iso}  bad  tags {{"site": "north", "group": "g1"}}',
        "2 dead letter(s)",
        "  neuron/north/upload: wrong_type: field 't2' is str 'on', not a number",
        "  neuron/north/upload: device_error: field 't3': the gateway reports error int 2014"]

    # By topic alone (the first matching template, as the broker routes), from standard input, as JSON.
    lines = f"cpu,host=a usage=1.5 {T_S}\nmem,host=a usage=40 {T_S}\n"
    done = vigie("--topic", "servers/srv-1/metrics", "--json", "-", stdin=lines)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [(r["series"], r["value"], r["time_ns"]) for r in doc["readings"]] == [
        ("srv-1/cpu.usage", 1.5, T_NS), ("srv-1/mem.usage", 40.0, T_NS)]
    assert doc["dead_letters"] == []
    # A message with nothing numeric, as the HTTP endpoints would take it.
    done = vigie("--http", "-", stdin=f'event,host=a text="door opened" {T_NS}\n')
    assert done.returncode == 1 and "no_readings: measurement 'event' has only string fields" in done.stdout
    # What cannot be used is said, with exit 2.
    done = vigie("--subscription", "nope", str(sample))
    assert done.returncode == 2 and "no subscription named or templated 'nope'" in done.stderr
    assert "'neuron' (plant)" in done.stderr
    done = vigie("--subscription", "neuron", "--topic", "other/topic", str(sample))
    assert done.returncode == 2 and "does not match the template 'neuron/{site}/upload'" in done.stderr


def test_the_readme_decoder_examples_are_valid_subscriptions():
    """Each subscription the README shows in its Decoders section passes the config checks as printed."""
    import re
    from pathlib import Path

    import yaml

    from app.ingest.mqtt_spec import SubscriptionSpec

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Decoders: what a payload becomes"):readme.index("### An OPC-UA server")]
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if b.lstrip().startswith("- topic:")]
    assert len(blocks) == 4
    for block in blocks:
        (spec,) = yaml.safe_load(block)
        sub = SubscriptionSpec.from_spec(spec)
        sub.build_decoder()


async def test_gateway_formats_through_a_real_broker_from_the_config(mosquitto, request):
    """Neuron and LoRaWAN payloads published to Mosquitto, decoded by subscriptions built from a config section."""
    import asyncio

    from app.hub import Hub
    from app.ingest.mqtt_spec import MqttSpec
    from app.ingest.source_spec import BuildContext
    from tests.helpers import Collector, publish, until

    prefix = request.node.name
    spec = MqttSpec.from_spec({"name": "gw", "host": mosquitto.host, "port": mosquitto.port,
                               "client_id": f"{prefix}-c", "subscriptions": [
        {"name": "neuron", "topic": prefix + "/neuron/{site}", "timestamp_field": "timestamp", "device_field": "node",
         "tag_fields": {"group": "group"}, "values": "tags", "entries": {"quality": "q", "error": "error"}},
        {"name": "lora", "topic": prefix + "/lora/{device}/up", "timestamp_field": None, "entries": {"unit": "unit"}},
    ]})
    collector = Collector()
    source = spec.build(BuildContext(Hub(store=collector), secret=lambda name: None))
    task = asyncio.create_task(source.run())
    await until(lambda: source.state == "connected", what="MQTT connected")
    ms = T_S * 1000
    await publish(mosquitto.host, mosquitto.port, [
        (f"{prefix}/neuron/north", json.dumps({"node": "plc-1", "group": "g1", "timestamp": ms, "tags": [
            {"name": "level", "value": 3.25, "q": "good"}, {"name": "pump", "error": 2014}]})),
        (f"{prefix}/lora/lht-1/up", json.dumps([{"name": "temperature", "value": 21.5, "unit": "°C"},
                                                 {"name": "status", "value": "ok"}])),
        (f"{prefix}/lora/lht-1/up", json.dumps([])),
    ])
    await until(lambda: len(collector.readings) + source.dead.total >= 5, what="every value accounted for")
    assert [(r.key, r.value, r.unit, r.tags) for r in collector.readings] == [
        ("plc-1/level", 3.25, "", {"site": "north", "group": "g1"}), ("lht-1/temperature", 21.5, "°C", {})]
    assert collector.readings[0].time_ns == T_NS
    assert [(d.where, d.kind, d.reason) for d in source.dead.recent] == [
        (f"{prefix}/neuron/north", "device_error", "field 'pump': the gateway reports error int 2014"),
        (f"{prefix}/lora/lht-1/up", "wrong_type", "field 'status' is str 'ok', not a number"),
        (f"{prefix}/lora/lht-1/up", "no_readings", "nothing numeric in the message: no reading, nothing refused")]
    await source.stop()
    await asyncio.wait_for(task, 5)


def test_a_mapped_dotted_field_inside_values_is_not_also_a_wrong_type():
    """``values: data`` with ``env.temp`` mapped: the reading, and no dead letter for its parent ``env``."""
    from app.ingest.decoders import FieldMap

    d = Decoder.create("json", values="data", fields={"env.temp": FieldMap("t", "°C")}, timestamp_field=None)
    out, dead = run(d, json.dumps({"data": {"env": {"temp": 1.5}, "rh": 40}}).encode())
    assert [(r.metric, r.value, r.unit) for r in out] == [("t", 1.5, "°C"), ("rh", 40.0, "")]
    assert not dead.recent
