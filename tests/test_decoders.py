"""Decoders and topic templates: exact results, and no exception escapes on any input."""

from __future__ import annotations

import json
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.deadletters import DeadLetters
from app.ingest.decoders import Context, Decoder, FieldMap
from app.ingest.lineprotocol import escape_key, escape_measurement, escape_string_field, parse_line
from app.ingest.topics import TemplateError, TopicTemplate
from app.model import Reading

NOW = time.time_ns()


def ctx(**kw) -> Context:
    base = {"source": "s", "where": "t", "received_ns": NOW, "device": "d", "metric": None, "tags": {}}
    base.update(kw)
    return Context(**base)


def run(decoder: Decoder, payload: bytes, **kw) -> tuple[list[Reading], DeadLetters]:
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


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(garbage=st.lists(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()), max_size=8),
       decoder_type=st.sampled_from(["json", "number", "line_protocol"]))
def test_no_exception_escapes_and_good_readings_survive(garbage, decoder_type):
    decoder = Decoder.create(decoder_type)
    good = {"json": b'{"ts": %d, "level": 1.25}' % (NOW // 10**6),
            "number": b"1.25",
            "line_protocol": b"m,device=d level=1.25 %d" % NOW}[decoder_type]
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
