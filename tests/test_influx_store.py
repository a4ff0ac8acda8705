"""InfluxStore against a real InfluxDB 1.6.7: schema, queries, errors, outages.

Each test writes to its own measurement (or its own server when it stops
it), so tests sharing the session's InfluxDB do not see each other's points.
Waits poll a condition against a deadline; the only timed pause is the
outage itself, whose length is what the test is about.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from app.model import Reading, now_ns
from app.store.base import ReadingsRefused, StoreUnavailable, bucket_width_ns
from app.store.influx import InfluxStore, InfluxWriteRejected, quote_ident
from app.store.writer import StoreWriter
from tests.helpers import until
from tests.servers import InfluxDB, free_port

T0 = 1_700_000_000_123_456_789  # 2023-11-14, with sub-ms digits to prove ns precision


def raw_write(server: InfluxDB, body: str) -> None:
    """Write line protocol without Vigie (to set up conflicts)."""
    req = urllib.request.Request(f"{server.url}/write?db={server.database}&precision=ns",
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


@pytest.fixture
def measurement() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(influxdb: InfluxDB, measurement: str):
    s = InfluxStore(influxdb.url, database=influxdb.database, measurement=measurement)
    await s.open()
    yield s
    await s.close()


def rows(server: InfluxDB, measurement: str) -> list[dict]:
    """Every point of a measurement, without InfluxDB's empty tag columns."""
    found = server.points(f"SELECT * FROM {quote_ident(measurement)} GROUP BY *")
    return [{k: v for k, v in row.items() if v not in ("", None)} for row in found]


# -- schema and queries -------------------------------------------------
SPECIAL = [
    Reading("pump 1", "flow rate", T0, 12.5, "good", "m³/h", tags={"site": "Zone A, north=1", "line": 'say "hi"'}),
    Reading("a,b=c d", "temp", T0 + 1, -3.25, "uncertain", "°C", tags={"équipe": "nuit"}),
    Reading("O'Brien \"the\" pump", "pres/sure", T0 + 2, 1e-7, "bad", "bar"),
    Reading("rack/3", "t", T0 + 3, 1e16, 'odd "quality" \\ here'),
    Reading("日本語デバイス", "温度", T0 + 4, 0.0, tags={"back\\slash": "c:\\dir\\x"}),
]
UNWRITABLE = [
    Reading("nan", "x", T0, float("nan")),
    Reading("inf", "x", T0, float("inf")),
    Reading("trailing\\", "x", T0, 1.0),  # line protocol cannot end a tag value with "\"
    Reading("new\nline", "x", T0, 1.0),
]


def expected_row(r: Reading) -> dict:
    row = {"time": r.time_ns, "value": r.value, "quality": r.quality, "device": r.device, "metric": r.metric}
    if r.unit:
        row["unit"] = r.unit
    row.update(r.tags)
    return row


async def test_round_trip_special_characters(store: InfluxStore, influxdb: InfluxDB, measurement: str):
    with pytest.raises(ReadingsRefused) as refused:  # the rest is written; these are named, with a reason
        await store.write(SPECIAL + UNWRITABLE)
    assert [r for r, _reason in refused.value.refused] == UNWRITABLE
    assert all(reason for _r, reason in refused.value.refused)

    got = sorted(rows(influxdb, measurement), key=lambda row: row["time"])
    assert got == [expected_row(r) for r in SPECIAL]
    assert store.health()["skipped_total"] == len(UNWRITABLE)
    assert store.health()["points_written"] == len(SPECIAL)

    latest = {lv.key: lv for lv in await store.latest()}
    assert set(latest) == {r.key for r in SPECIAL}
    for r in SPECIAL:
        lv = latest[r.key]
        assert (lv.device, lv.metric, lv.time_ns, lv.value, lv.quality, lv.unit, lv.tags) == (
            r.device, r.metric, r.time_ns, r.value, r.quality, r.unit, r.tags)

    series = {s.key: s for s in await store.series()}
    assert {k: (s.unit, s.tags) for k, s in series.items()} == {r.key: (r.unit, r.tags) for r in SPECIAL}

    assert await store.count() == len(SPECIAL)
    for r in SPECIAL:
        assert await store.count(r.key) == 1, r.key
    # Quotes in a key are data, not InfluxQL.
    assert await store.count("x' OR 'a'='a/temp") == 0
    assert await store.count('x" OR 1=1 --/temp') == 0
    env = await store.envelope("O'Brien \"the\" pump/pres/sure", T0, T0 + 10, 5)
    assert (env.time_ns, env.min, env.max) == ([T0], [1e-7], [1e-7])


async def test_latest_follows_newest_point_and_unit_change(store: InfluxStore):
    await store.write([Reading("d", "m", T0, 1.0, unit="V"), Reading("d", "m", T0 + 10, 2.0, "bad", unit="V")])
    await store.write([Reading("d", "m", T0 + 20, 3.0, unit="mV")])  # a new InfluxDB series
    (lv,) = await store.latest()
    assert (lv.time_ns, lv.value, lv.quality, lv.unit) == (T0 + 20, 3.0, "good", "mV")
    (si,) = await store.series()
    assert (si.key, si.unit) == ("d/m", "mV")
    assert await store.count("d/m") == 3


async def test_envelope_matches_numpy(store: InfluxStore):
    rng = np.random.default_rng(7)
    start, end, buckets = T0, T0 + 10_000_000_000, 7
    times = np.unique(rng.integers(start - 1_000_000_000, end + 1_000_000_000, 3000))
    values = rng.normal(20, 5, len(times))
    await store.write([Reading("env", "temp", int(t), float(v)) for t, v in zip(times, values, strict=True)]
                      + [Reading("other", "temp", int(t), 1000.0) for t in times[::10]])

    env = await store.envelope("env/temp", start, end, buckets)

    width = bucket_width_ns(start, end, buckets)
    inside = (times >= start) & (times < end)
    idx = (times[inside] - start) // width
    expected = sorted(set(idx.tolist()))
    assert env.bucket_ns == width
    assert len(env) <= buckets
    assert env.time_ns == [start + i * width for i in expected]
    vals = values[inside]
    assert env.min == [vals[idx == i].min() for i in expected]
    assert env.max == [vals[idx == i].max() for i in expected]
    np.testing.assert_allclose(env.mean, [vals[idx == i].mean() for i in expected], rtol=1e-12)

    empty = await store.envelope("env/temp", end + 5_000_000_000, end + 6_000_000_000, 10)
    assert len(empty) == 0


async def test_same_series_and_time_overwrites(store: InfluxStore, influxdb: InfluxDB, measurement: str):
    await store.write([Reading("d", "m", T0, 1.0, "bad", "V", tags={"k": "v"})])
    await store.write([Reading("d", "m", T0, 2.0, "good", "V", tags={"k": "v"})])
    assert rows(influxdb, measurement) == [
        {"time": T0, "value": 2.0, "quality": "good", "device": "d", "metric": "m", "unit": "V", "k": "v"}
    ]
    assert await store.count() == 1


# -- errors and availability -----------------------------------------
async def test_unreachable_server_open_tolerates_write_raises_unavailable(caplog):
    s = InfluxStore(f"http://user:secret@127.0.0.1:{free_port()}", timeout_s=2)
    await s.open()  # must not raise: the writer spools until the server is there
    assert "unreachable" in caplog.text
    with pytest.raises(StoreUnavailable):
        await s.write([Reading("d", "m", T0, 1.0)])
    with pytest.raises(StoreUnavailable):
        await s.latest()
    health = s.health()
    assert health["reachable"] is False and health["last_ping_ok"] is False
    assert "secret" not in json.dumps(health) and "secret" not in caplog.text
    await s.close()


async def test_server_that_never_answers_times_out_as_unavailable():
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        s = InfluxStore(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.write([Reading("d", "m", T0, 1.0)])
        assert time.monotonic() - t0 < 5
        await s.close()


async def test_missing_database_is_created_on_first_write(influxdb: InfluxDB):
    db = f"db_{uuid.uuid4().hex[:8]}"
    s = InfluxStore(influxdb.url, database=db)  # never opened: created when a write finds it missing
    try:
        await s.write([Reading("d", "m", T0, 1.0)])
        assert await s.count() == 1
        no_create = InfluxStore(influxdb.url, database=db + "_absent", create_database=False)
        assert await no_create.count() == 0
        with pytest.raises(StoreUnavailable, match="database not found"):
            await no_create.write([Reading("d", "m", T0, 1.0)])
        await no_create.close()
    finally:
        influxdb.query(f"DROP DATABASE {quote_ident(db)}")
        await s.close()


async def test_rejected_batch_is_counted_and_writer_keeps_going(
    store: InfluxStore, influxdb: InfluxDB, measurement: str, tmp_path: Path
):
    # Field types are fixed per shard (a week here): a number "quality" in
    # 2001 makes every later string quality in that week a type conflict.
    old = 978_307_200_000_000_000
    raw_write(influxdb, f"{measurement},device=seed,metric=m value=1,quality=1 {old}")

    with pytest.raises(InfluxWriteRejected) as info:
        await store.write([Reading("x", "m", old + 1, 1.0), Reading("x", "m", old + 2, 2.0),
                           Reading("ok", "m", T0, 3.0)])
    assert isinstance(info.value, ValueError)
    assert info.value.partial and info.value.dropped == 2
    assert await store.count("ok/m") == 1  # InfluxDB kept the good point of the batch

    writer = StoreWriter(store, spool_dir=tmp_path / "spool", flush_interval=0.02)
    task = asyncio.create_task(writer.run())
    try:
        writer.accept([Reading("bad", "m", old + i, float(i)) for i in range(3)])
        await until(lambda: writer.rejected == 3, what="the bad batch to be rejected")
        writer.accept([Reading("good", "m", T0 + i, float(i)) for i in range(5)])
        await until(lambda: writer.written == 5, what="the later batch to be written")
    finally:
        await writer.stop()
        await asyncio.wait_for(task, 10)
    health = writer.health()
    assert health["rejected_total"] == 3 and health["available"] is True
    assert "field type conflict" in health["last_error"]
    assert health["spool_files"] == 0
    assert await store.count("good/m") == 5 and await store.count("bad/m") == 0


# -- outages through the writer ---------------------------------------
def stored_times(server: InfluxDB) -> list[tuple[str, int]]:
    return [(row["device"], row["time"]) for row in server.points('SELECT "value" FROM "telemetry" GROUP BY *')]


@pytest.mark.slow
async def test_outage_spools_and_replays_every_reading_once(own_influxdb: InfluxDB, tmp_path: Path):
    store = InfluxStore(own_influxdb.url, timeout_s=2)
    await store.open()
    writer = StoreWriter(store, spool_dir=tmp_path / "spool", batch_size=1000, flush_interval=0.1, retry_cap=0.5)
    writer_task = asyncio.create_task(writer.run())
    produced: list[Reading] = []
    producing = True
    base = now_ns()

    async def produce() -> None:  # ~500 readings/s, unique timestamps, 5 devices
        i = 0
        while producing:
            batch = [Reading(f"dev{(i + k) % 5}", "temp", base + (i + k) * 1000, float(i + k)) for k in range(10)]
            i += 10
            produced.extend(batch)
            writer.accept(batch)
            await asyncio.sleep(0.02)  # pacing of the producer, not a wait

    producer = asyncio.create_task(produce())
    try:
        await until(lambda: writer.written >= 200, what="writes before the outage")
        await asyncio.to_thread(own_influxdb.stop)
        stopped_at = len(produced)
        seen_unavailable = False
        max_spooled = 0
        outage_end = time.monotonic() + 10
        while time.monotonic() < outage_end:  # the outage lasts 10 s; watch the writer meanwhile
            health = writer.health()
            seen_unavailable |= health["available"] is False
            max_spooled = max(max_spooled, health["spool_readings"])
            await asyncio.sleep(0.1)
        assert seen_unavailable, "writer never reported the outage"
        assert max_spooled > 0 and len(produced) - stopped_at > 2500
        await asyncio.to_thread(own_influxdb.start)
        await until(lambda: writer.available and writer.health()["spool_files"] == 0, 20, "spool replayed")
    finally:
        producing = False
        await producer
    await until(lambda: writer.queue_depth == 0 and writer.health()["spool_files"] == 0, 10, "queue drained")
    await until(lambda: len(stored_times(own_influxdb)) == len(produced), 10, "every reading stored")
    await writer.stop()
    await asyncio.wait_for(writer_task, 10)

    stored = stored_times(own_influxdb)
    assert len(stored) == len(produced) == await store.count()
    assert set(stored) == {(r.device, r.time_ns) for r in produced}
    health = writer.health()
    assert health["available"] is True and health["rejected_total"] == 0
    assert health["spool_files"] == 0 and health["spool_readings"] == 0
    assert not list((tmp_path / "spool").iterdir())
    await store.close()


@pytest.mark.slow
async def test_shutdown_during_outage_spools_and_new_writer_replays(own_influxdb: InfluxDB, tmp_path: Path):
    spool = tmp_path / "spool"
    store = InfluxStore(own_influxdb.url, timeout_s=2)
    await store.open()
    writer = StoreWriter(store, spool_dir=spool, batch_size=100_000, flush_interval=60)
    task = asyncio.create_task(writer.run())
    readings = [Reading(f"dev{i % 7}", "level", T0 + i * 1_000_000, float(i)) for i in range(3000)]
    writer.accept(readings)  # held in memory: below batch size, long flush interval

    await asyncio.to_thread(own_influxdb.stop)
    await writer.stop()
    await asyncio.wait_for(task, 15)
    await store.close()
    assert writer.written == 0
    assert writer.health()["spool_readings"] == 3000
    assert list(spool.glob("*.jsonl"))

    await asyncio.to_thread(own_influxdb.start)
    store2 = InfluxStore(own_influxdb.url, timeout_s=2)
    await store2.open()
    writer2 = StoreWriter(store2, spool_dir=spool, flush_interval=0.05)
    assert writer2.health()["spool_readings"] == 3000
    task2 = asyncio.create_task(writer2.run())
    try:
        await until(lambda: writer2.health()["spool_files"] == 0, 15, "spool replayed")
    finally:
        await writer2.stop()
        await asyncio.wait_for(task2, 10)
    stored = stored_times(own_influxdb)
    assert len(stored) == 3000 == await store2.count()
    assert set(stored) == {(r.device, r.time_ns) for r in readings}
    assert writer2.written == 3000 and writer2.rejected == 0
    await store2.close()


# -- the v2 write API (against a stand-in: Debian's 1.6.7 has no /api/v2) --
class _V2Write(tornado.web.RequestHandler):
    def initialize(self, seen: list[dict], status: list[int]) -> None:
        self.seen = seen
        self.status = status

    def post(self) -> None:
        self.seen.append({
            "args": {k: self.get_argument(k) for k in self.request.arguments},
            "auth": self.request.headers.get("Authorization"),
            "body": self.request.body.decode(),
        })
        code = self.status[0]
        self.set_status(code)
        if code >= 400:
            self.finish({"code": "invalid", "message": f"stand-in error {code}"})


async def test_v2_write_api_sends_org_bucket_token():
    seen: list[dict] = []
    status = [204]
    app = tornado.web.Application([(r"/api/v2/write", _V2Write, {"seen": seen, "status": status})])
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    s = InfluxStore(f"http://127.0.0.1:{port}", api="v2", org="acme", bucket="plant", token="tok-123",
                    measurement="telemetry")
    try:
        await s.write([Reading("d 1", "m", T0, 1.5, unit="V")])
        (req,) = seen
        assert req["args"] == {"org": "acme", "bucket": "plant", "precision": "ns"}
        assert req["auth"] == "Token tok-123"
        assert req["body"] == f'telemetry,device=d\\ 1,metric=m,unit=V value=1.5,quality="good" {T0}'

        status[0] = 503
        with pytest.raises(StoreUnavailable):
            await s.write([Reading("d", "m", T0, 1.0)])
        status[0] = 400
        with pytest.raises(ValueError, match="stand-in error 400"):
            await s.write([Reading("d", "m", T0, 1.0)])
        assert "tok-123" not in json.dumps(s.health())
    finally:
        await s.close()
        server.stop()
