"""``GET /metrics``: a real ``vigie serve`` scraped while MQTT and HTTP readings flow; the collector in-process.

The server test runs the worktree's code (``python -m app.cli serve``,
tests/browser.py) against the session's Mosquitto, parses the exposition
with prometheus-client's own parser, and checks that the counters move by
exactly what was sent. The in-process tests drive a :class:`Runtime` through
an alarm and its notification, and the lag monitor through a real stall.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import ClassVar

import pytest
from paho.mqtt import publish as paho_publish
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from app.config import load_config
from app.model import Reading
from app.notify.channels import Channel
from app.runtime import Runtime
from app.server import attach_http_source
from app.web.metrics import LoopLag, build_registry
from tests.browser import VigieServer
from tests.helpers import until
from tests.servers import wait_until

TOKEN = "metrics-token"
FAMILIES = {
    "vigie_readings_received": "counter", "vigie_dead_letters": "counter", "vigie_source_connected": "gauge",
    "vigie_readings_written": "counter", "vigie_store_readings_refused": "counter",
    "vigie_store_queue_depth": "gauge", "vigie_store_awaiting_durability": "gauge",
    "vigie_store_spool_files": "gauge", "vigie_store_spool_readings": "gauge", "vigie_store_available": "gauge",
    "vigie_store_last_flush_seconds": "gauge", "vigie_store_write_duration_seconds": "histogram",
    "vigie_alarms": "gauge", "vigie_alarm_events": "counter", "vigie_alarm_rules": "gauge",
    "vigie_notifications": "counter", "vigie_notifications_in_flight": "gauge",
    "vigie_page_sessions": "gauge", "vigie_page_builds_in_progress": "gauge", "vigie_page_builds": "counter",
    "vigie_page_busy": "counter", "vigie_event_loop_lag_seconds": "gauge", "vigie_event_loop_lag_max_seconds": "gauge",
    "process_resident_memory_bytes": "gauge",
}


class Samples(dict):
    """A parsed exposition: ``samples[name, {label: value}]`` -> value (KeyError when the series is absent)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                super().__setitem__((s.name, frozenset(s.labels.items())), s.value)

    def __getitem__(self, key: str | tuple[str, dict[str, str]]) -> float:
        name, labels = key if isinstance(key, tuple) else (key, {})
        return super().__getitem__((name, frozenset(labels.items())))


# -- a real server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vigie(tmp_path_factory, mosquitto):
    """One `vigie serve` for the module: MQTT source m on the session broker, HTTP ingest, one alarm rule."""
    server = VigieServer(
        tmp_path_factory.mktemp("metrics"), mosquitto.port, env={"VIGIE_INGEST_TOKEN": TOKEN},
        store="{engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.05}",
        extra_config="alarms:\n  rules:\n    - {name: mt flood, series: mt-hot/level, above: 50, severity: critical}\n",
    ).start()
    yield server
    server.stop()


def scrape(server: VigieServer) -> Samples:
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return Samples(r.read().decode())


def post_readings(server: VigieServer, items: list[dict]) -> tuple[int, dict]:
    req = urllib.request.Request(server.base + "/api/v1/readings", data=json.dumps(items).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def mqtt(mosquitto, messages: list[tuple[str, bytes | str]]) -> None:
    """Publish at QoS 1 with paho; returns once the broker acknowledged every message."""
    paho_publish.multiple([{"topic": t, "payload": p, "qos": 1} for t, p in messages],
                          hostname=mosquitto.host, port=mosquitto.port)


def moved(server: VigieServer, before: Samples, expected: dict[tuple[str, tuple], float]):
    """Return the scrape once every ``(name, labels)`` moved by its expected amount since ``before``, else None."""
    now = scrape(server)
    deltas = {k: now[k[0], dict(k[1])] - before[k[0], dict(k[1])] for k in expected}
    return now if deltas == expected else None


def test_every_family_is_exposed_with_its_type(vigie):
    samples = scrape(vigie)
    for name, kind in FAMILIES.items():
        assert samples.types.get(name) == kind, name
    assert samples["vigie_source_connected", {"source": "m"}] == 1
    assert samples["vigie_source_connected", {"source": "http"}] == 1
    assert samples["vigie_store_available"] == 1 and samples["vigie_alarm_rules"] == 1
    assert samples["vigie_alarms", {"state": "unacknowledged", "severity": "critical"}] == 0  # present from zero
    assert samples["vigie_store_write_duration_seconds_bucket", {"le": "+Inf"}] == \
        samples["vigie_store_write_duration_seconds_count"]


def test_readings_over_mqtt_and_http_move_the_counters_by_exactly_what_was_sent(vigie, mosquitto):
    before = scrape(vigie)
    now_ms = int(time.time() * 1000)
    mqtt(mosquitto, [(f"bt/north/mt-{i % 3}/telemetry", json.dumps({"ts": now_ms + i, "level": i / 4}))
                     for i in range(25)])
    status, doc = post_readings(vigie, [{"device": "mt-api", "metric": "temp", "value": 20 + i, "ts": now_ms + i}
                                        for i in range(7)])
    assert status == 200 and doc == {"accepted": 7, "rejected": 0}
    expected = {("vigie_readings_received_total", (("source", "m"),)): 25,
                ("vigie_readings_received_total", (("source", "http"),)): 7,
                ("vigie_readings_written_total", ()): 32,
                ("vigie_dead_letters_total", (("source", "m"),)): 0}
    after = wait_until(lambda: moved(vigie, before, expected), what="counters moved by 25, 7 and 32")
    writes = after["vigie_store_write_duration_seconds_count"] - before["vigie_store_write_duration_seconds_count"]
    assert 1 <= writes <= 32  # batched: at least one write, never more than one per reading
    assert after["vigie_store_last_flush_seconds"] > 0
    assert after["vigie_store_queue_depth"] == 0 and after["vigie_store_awaiting_durability"] == 0


def test_malformed_inputs_move_the_dead_letter_counters_and_nothing_else(vigie, mosquitto):
    before = scrape(vigie)
    now_ms = int(time.time() * 1000)
    mqtt(mosquitto, [("bt/north/mt-0/telemetry", b"{not json"),
                     ("bt/north/mt-0/telemetry", json.dumps({"ts": now_ms, "level": "high"}))])
    status, doc = post_readings(vigie, [{"device": "mt-api", "metric": "temp", "value": "hot", "ts": now_ms}])
    assert status == 400 and doc["accepted"] == 0
    expected = {("vigie_dead_letters_total", (("source", "m"),)): 2,
                ("vigie_dead_letters_total", (("source", "http"),)): 1,
                ("vigie_readings_received_total", (("source", "m"),)): 0,
                ("vigie_readings_received_total", (("source", "http"),)): 0}
    wait_until(lambda: moved(vigie, before, expected), what="two MQTT and one HTTP dead letter")


def test_an_alarm_shows_in_the_state_gauge_and_the_event_counter(vigie, mosquitto):
    before = scrape(vigie)
    mqtt(mosquitto, [("bt/north/mt-hot/telemetry", json.dumps({"ts": int(time.time() * 1000), "level": 60}))])
    expected = {("vigie_alarms", (("state", "unacknowledged"), ("severity", "critical"))): 1,
                ("vigie_alarm_events_total", (("kind", "raised"),)): 1}
    wait_until(lambda: moved(vigie, before, expected), what="the alarm raised")


def test_event_loop_lag_is_measured_small_and_never_negative(vigie):
    wait_until(lambda: scrape(vigie)["vigie_event_loop_lag_seconds"] > 0, timeout=5,
               what="a first lag measurement")  # a timer is never exactly on time: > 0 once one was measured
    samples = scrape(vigie)
    lag, peak = samples["vigie_event_loop_lag_seconds"], samples["vigie_event_loop_lag_max_seconds"]
    assert 0 < lag < 0.5 and 0 < peak < 2.0, (lag, peak)


# -- in-process ------------------------------------------------------------------------------------
class Delivered(Channel):
    """A channel at the boundary: delivers to a list, so the notification counter moves for real."""

    channel_type = "metricstest"
    sent: ClassVar[list[str]] = []

    def address(self, contact):
        return contact.mail

    def prepare(self, contact, title, body, extra):
        return Delivered.sent.append, (contact.name,)


async def test_the_collector_reads_a_runtime_through_an_alarm_its_notification_and_an_acknowledgement(tmp_path):
    d = tmp_path / "config"
    d.mkdir()
    (d / "vigie.yaml").write_text("""\
store: {engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.05}
http: {token_env: T}
alarms:
  rules:
    - {name: high, series: "*/level", above: 10, severity: high, policy: p}
contacts:
  people: [{name: ann, mail: a@x.org}]
escalation:
  group_window_s: 0
  isolation: thread
  attempts: 1
  fallback: {}
  policies:
    - name: p
      steps: [{whom: [ann], channels: [metricstest], wait_s: 600}]
""")
    Delivered.sent.clear()
    runtime = Runtime(load_config(d, env={"T": "t"}), base_dir=tmp_path)
    http = attach_http_source(runtime)
    await runtime.start()
    try:
        registry = build_registry(runtime)
        zero = Samples(generate_latest(registry).decode())
        assert zero["vigie_notifications_total", {"channel": "metricstest", "outcome": "sent"}] == 0
        assert zero["vigie_readings_received_total", {"source": "http"}] == 0
        assert "vigie_page_sessions" not in zero.types and "vigie_event_loop_lag_seconds" not in zero.types

        now = time.time_ns()
        http.publish([Reading("d1", "level", now, 5.0), Reading("d1", "level", now + 1, float("nan")),
                      Reading("d2", "level", now, 12.0)])
        await until(lambda: runtime.writer.written == 2 and Delivered.sent == ["ann"], what="stored and notified")
        got = Samples(generate_latest(registry).decode())
        assert got["vigie_readings_received_total", {"source": "http"}] == 2
        assert got["vigie_dead_letters_total", {"source": "http"}] == 1  # the NaN
        assert got["vigie_readings_written_total"] == 2
        assert got["vigie_alarms", {"state": "unacknowledged", "severity": "high"}] == 1
        assert got["vigie_alarm_events_total", {"kind": "raised"}] == 1
        assert got["vigie_notifications_total", {"channel": "metricstest", "outcome": "sent"}] == 1
        assert got["vigie_notifications_total", {"channel": "metricstest", "outcome": "failed"}] == 0

        runtime.alarms.acknowledge([runtime.alarms.alarms()[0].alarm_id], "op")
        got = Samples(generate_latest(registry).decode())
        assert got["vigie_alarms", {"state": "unacknowledged", "severity": "high"}] == 0
        assert got["vigie_alarms", {"state": "acknowledged", "severity": "high"}] == 1
        assert got["vigie_alarm_events_total", {"kind": "acknowledged"}] == 1
    finally:
        await runtime.stop()


def stall(seconds: float) -> None:
    """Hold the event loop's thread, as a long page build or garbage collection would."""
    time.sleep(seconds)


async def test_the_lag_monitor_sees_a_stall_once_and_stops_cleanly():
    lag = LoopLag(interval_s=0.05)
    lag.start()
    task = lag._task
    try:
        await until(lambda: lag.samples >= 2, what="two measurements")
        assert lag.take_peak() < 0.2  # an idle loop: wakes on time (generous for a loaded 2-core machine)
        taken = lag.samples
        stall(0.3)
        await until(lambda: lag.samples > taken, what="a measurement after the stall")
        assert lag.take_peak() >= 0.25  # the timer due during the stall ran that late
        await until(lambda: lag.samples > taken + 2, what="more measurements")
        assert lag.take_peak() < 0.2  # the peak is per scrape: the stall is not reported twice
    finally:
        await lag.stop()
    assert task is not None and task.done() and not lag.running  # awaited, not left behind
