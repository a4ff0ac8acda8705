"""Hostile readings through the real HTTP API and a real Mosquitto, into both stores: none vanishes.

Regression test for issue 10's first finding: one reading with a lone
surrogate in its name made the store refuse the batch it landed in, and the
writer dropped up to 5,000 good readings with it (a fuzz run lost 6,215 of
7,934 over HTTP and 772 of 915 over MQTT). Hypothesis sends arbitrary
Unicode names (surrogates, NUL, bidi controls, 10 kB names), NaN / ±inf /
huge integers and out-of-range timestamps, mixed with clean readings, to a
real ``vigie serve``. Every reading carries a unique timestamp, so each one
is found afterwards in exactly one place: the store, the HTTP answer's
per-item errors, the MQTT source's dead letters, or the store's file of
refused readings. Clean readings must all be stored.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.store.embedded import EmbeddedStore
from tests.servers import InfluxDB, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "fuzz-token-" + uuid.uuid4().hex
T0_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: every reading's time is T0 + its sequence number
_seq = itertools.count(1)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# -- what hostile and clean readings look like -------------------------------------------------------------
HOSTILE_CHARS = st.sampled_from(["\ud800", "\udfff", "\x00", "\x07", "\n", "\u202e", "\u200b", "\u2028", "/",
                                 "\\", " ", "<", "é", "水", "😀", "\ufeff", "\x7f", "\x9f", '"', "="])
HOSTILE_TEXT = st.one_of(
    st.text(min_size=0, max_size=30),  # arbitrary Unicode, surrogates included
    st.lists(st.one_of(HOSTILE_CHARS, st.characters()), min_size=1, max_size=12).map("".join),
    st.just("x" * 10_000),
    st.just(""), st.just("."), st.just(".."), st.just(" pad "),
)
CLEAN_NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
HOSTILE_VALUE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400),
                          st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**309]))
CLEAN_VALUE = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)


@st.composite
def http_item(draw) -> dict:
    """One JSON reading: clean, or with any field hostile."""
    clean = draw(st.booleans())
    item = {"device": draw(CLEAN_NAME), "metric": draw(CLEAN_NAME), "value": draw(CLEAN_VALUE),
            "tags": {"site": draw(CLEAN_NAME)}, "unit": "m", "_clean": clean}
    if not clean:
        for key in draw(st.sets(st.sampled_from(["device", "metric", "value", "site", "tag_key", "unit", "ts"]),
                                min_size=1)):
            if key == "value":
                item["value"] = draw(HOSTILE_VALUE)
            elif key == "site":
                item["tags"] = {"site": draw(HOSTILE_TEXT)}
            elif key == "tag_key":
                item["tags"] = {draw(HOSTILE_TEXT): "v"}
            elif key == "ts":
                item["_ts"] = draw(st.sampled_from([-1, 0, 10**30, 2**63, 253402300800000 * 1000]))
            else:
                item[key] = draw(HOSTILE_TEXT)
    return item


@st.composite
def mqtt_message(draw) -> dict:
    """One MQTT message's fields (device from the topic, metrics from the JSON keys)."""
    fields = {"level": draw(CLEAN_VALUE)}  # the clean reading every message carries
    for _ in range(draw(st.integers(0, 3))):
        fields[draw(HOSTILE_TEXT)] = draw(st.one_of(CLEAN_VALUE, HOSTILE_VALUE))
    fields.pop("ts", None)
    device = draw(st.one_of(CLEAN_NAME, st.lists(st.sampled_from(["a", "é", "\u202e", "\u200b", "水", " "]),
                                                 min_size=1, max_size=6).map("".join)))
    return {"device": device, "fields": fields}


# -- a real vigie serve --------------------------------------------------------------------------------------
@dataclass
class Sent:
    """Every reading sent, by its unique time (ms), and where each one was accounted for."""

    readings: dict[int, dict] = field(default_factory=dict)  # time_ms -> {device, metric, value, clean, via}
    http_refused: set[int] = field(default_factory=set)
    mqtt_messages: int = 0


class Vigie:
    def __init__(self, tmp: Path, broker_port: int, store: str) -> None:
        self.tmp, self.port = tmp, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"fz{uuid.uuid4().hex[:6]}"
        cfg = tmp / "config"
        cfg.mkdir()
        (cfg / "vigie.yaml").write_text(textwrap.dedent(f"""\
            server: {{port: {self.port}}}
            store: {store}
            http: {{token_env: FUZZ_TOKEN, timestamp_unit: ms}}
            mqtt:
              - name: m
                port: {broker_port}
                client_id: {self.prefix}-vigie
                subscriptions:
                  - topic: {self.prefix}/{{device}}/telemetry
                    timestamp_field: ts
                    timestamp_unit: ms
                    other_fields: keep
            """))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--config", str(cfg), "--data-root", str(tmp)], cwd=ROOT,
            stdout=(tmp / "vigie.log").open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "FUZZ_TOKEN": TOKEN})
        wait_until(lambda: self.proc.poll() is not None or self.health()["sources"]["m"]["state"] == "connected",
                   60, 0.1, "vigie connected")
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        return (self.tmp / "vigie.log").read_text(errors="replace")[-4000:]

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)
        except OSError:
            return {"sources": {"m": {"state": "down"}}}

    def post(self, items: list[dict]) -> tuple[int, dict]:
        body = json.dumps(items).encode()  # ensure_ascii: lone surrogates travel as \\ud800 escapes
        req = urllib.request.Request(self.url + "/api/v1/readings", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"reply": text[:500]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def send_rounds(vigie: Vigie, broker_port: int) -> Sent:
    """Let Hypothesis send mixed batches over HTTP and MQTT; return what was sent and refused over HTTP."""
    sent = Sent()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{vigie.prefix}-pub")
    client.connect("127.0.0.1", broker_port)
    client.loop_start()

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(http_item(), min_size=1, max_size=40), st.lists(mqtt_message(), max_size=10))
    def one_round(items: list[dict], messages: list[dict]) -> None:
        body, times = [], []
        for item in items:
            t = T0_MS + next(_seq)
            clean = item.pop("_clean")
            item["ts"] = item.pop("_ts", t)
            sent.readings[t] = {"device": item["device"], "metric": item["metric"], "value": item["value"],
                                "clean": clean, "via": "http"}
            body.append(item)
            times.append(t)
        status, answer = vigie.post(body)
        assert status in (200, 400), (status, answer)
        refused = {int(e["where"].split()[-1]) for e in answer.get("errors", [])}
        assert answer["accepted"] + len(refused) == len(body), answer
        sent.http_refused |= {times[i] for i in refused}
        for m in messages:
            t = next(_seq)
            payload = {"ts": T0_MS + t, **m["fields"]}
            for k, v in m["fields"].items():
                key = (T0_MS + t, k)
                sent.readings[key] = {"device": m["device"], "metric": k, "value": v,  # type: ignore[index]
                                      "clean": k == "level" and m["device"].isalnum(), "via": "mqtt"}
            text = json.dumps(payload, allow_nan=True)
            client.publish(f"{vigie.prefix}/{m['device']}/telemetry", text.encode("utf-8", "surrogatepass"),
                           qos=1).wait_for_publish(10)
            sent.mqtt_messages += 1

    try:
        one_round()
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


def settle(vigie: Vigie, sent: Sent) -> dict:
    """Wait until every message reached Vigie and the writer holds nothing; return the health."""
    def done():
        h = vigie.health()
        src, store = h["sources"]["m"], h["store"]
        mqtt_seen = src["readings_total"] + src["dead_letters"]["total"]
        mqtt_sent = sum(1 for r in sent.readings.values() if r["via"] == "mqtt")
        return (mqtt_seen >= mqtt_sent and store["queue_depth"] == 0
                and store["written_total"] + store["rejected_total"] == h["hub"]["published_total"] and h)

    return wait_until(done, 60, 0.1, "every reading handled")


def embedded_rows(data: Path) -> dict:
    """Every reading in the embedded store (its process is gone: the files are free to open)."""
    return asyncio.run(_embedded_rows(data))


async def _embedded_rows(data: Path) -> dict:
    store = EmbeddedStore(data)
    await store.open()
    try:
        rows = [(t, s.device, s.metric, v) for s in await store.series()
                for t, v, _ in await store.raw(s.key, 0, 2**62)]
    finally:
        await store.close()
    return {(t // 10**6, m): (t // 10**6, d, m, v) for t, d, m, v in rows}


def refused_times(tmp: Path) -> set[int]:
    out = set()
    for path in (tmp / "rejected").glob("*.jsonl"):
        out |= {json.loads(line)["time_ns"] // 10**6 for line in path.read_text().splitlines() if line}
    return out


def run_and_check(tmp: Path, broker_port: int, store: str, read_rows) -> None:
    vigie = Vigie(tmp, broker_port, store)
    try:
        sent = send_rounds(vigie, broker_port)
        health = settle(vigie, sent)
    finally:
        vigie.stop()
    assert vigie.proc.returncode == 0, vigie.log()
    _check_all(sent, read_rows(), refused_times(tmp), health)
    assert "Traceback" not in (tmp / "vigie.log").read_text(errors="replace"), vigie.log()


def _check_all(sent: Sent, rows: dict, refused_by_store: set[int], health: dict) -> None:
    """Each reading found in exactly one place; every clean reading stored."""
    stored = {(t, d, m) for (t, d, m, _v) in rows.values()}
    stored_tm = {(t, m) for (t, _d, m, _v) in rows.values()}
    lost, doubled, mqtt_unstored = [], [], 0
    for key, r in sent.readings.items():
        if r["via"] == "http":
            t = key
            is_stored = (t, r["device"], r["metric"]) in stored
            elsewhere = (t in sent.http_refused) + (t in refused_by_store)
            if is_stored + elsewhere != 1:
                (doubled if is_stored else lost).append((t, r))
        else:
            t = key[0]
            is_stored = (t, r["metric"]) in stored_tm
            mqtt_unstored += not is_stored
        if r["clean"] and not is_stored:
            lost.append((t, r))
    assert not lost, f"{len(lost)} readings neither stored nor dead-lettered, e.g. {lost[:3]!r}"
    assert not doubled, f"{len(doubled)} readings both stored and refused, e.g. {doubled[:3]!r}"
    http_times = {k for k, r in sent.readings.items() if r["via"] == "http"}
    mqtt_refused_by_store = len(refused_by_store - http_times)
    src = health["sources"]["m"]
    assert mqtt_unstored == src["dead_letters"]["total"] + mqtt_refused_by_store, (mqtt_unstored, src["dead_letters"])
    assert health["store"]["rejected_total"] == len(refused_by_store)


def test_fuzzed_readings_into_the_embedded_store(tmp_path: Path, mosquitto) -> None:
    run_and_check(tmp_path, mosquitto.port, "{engine: embedded, data_dir: data, spool_dir: spool, "
                  "rejected_dir: rejected, flush_interval_s: 0.05}", lambda: embedded_rows(tmp_path / "data"))


def test_fuzzed_readings_into_influxdb(tmp_path: Path, mosquitto, influxdb: InfluxDB) -> None:
    measurement = f"fz_{uuid.uuid4().hex[:8]}"

    def rows() -> dict:
        points = influxdb.points(f'SELECT "value", "device", "metric" FROM "{measurement}"')
        return {(p["time"] // 10**6, p["metric"]): (p["time"] // 10**6, p["device"], p["metric"], p["value"])
                for p in points}

    run_and_check(tmp_path, mosquitto.port, f"{{engine: influx, url: '{influxdb.url}', database: "
                  f"{influxdb.database}, measurement: {measurement}, spool_dir: spool, rejected_dir: rejected, "
                  "flush_interval_s: 0.05}", rows)
