"""The embedded store's history: chunks, rollups, retention, crash safety, start-up without a scan.

Real DuckDB files and Parquet chunks in a temporary directory; maintenance
passes are run explicitly (``store.maintain()``) so each test says when
compaction happens; the crash test kills a real process with SIGKILL.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from app.model import Reading
from app.store import rollup
from app.store.chunks import PARTITION_NS
from app.store.embedded import EmbeddedStore
from app.store.history_policy import HistoryPolicy
from tests.history_data import DAY, MINUTE, SERIES, T0, expected, first_set, second_set
from tests.servers import wait_until

HOUR = 60 * MINUTE
ROOT = Path(__file__).resolve().parent.parent


async def write_all(store: EmbeddedStore, readings: list[Reading], batch: int = 5000) -> None:
    for i in range(0, len(readings), batch):
        await store.write(readings[i:i + batch])


def reference(points: dict[int, float], start: int, end: int, width: int) -> list[tuple[int, float, float, float]]:
    """Min/mean/max per bucket of ``width`` from ``start``, computed from the raw points in Python."""
    buckets: dict[int, list[float]] = {}
    for t, v in points.items():
        if start <= t < end:
            buckets.setdefault(start + (t - start) // width * width, []).append(v)
    return [(b, min(vs), sum(vs) / len(vs), max(vs)) for b, vs in sorted(buckets.items())]


def assert_envelope(env, ref) -> None:
    assert env.time_ns == [r[0] for r in ref]
    assert env.min == [r[1] for r in ref]
    assert env.max == [r[3] for r in ref]
    assert all(math.isclose(a, r[2], rel_tol=1e-9, abs_tol=1e-9) for a, r in zip(env.mean, ref, strict=True))


def rolled(store: EmbeddedStore, resolution: int) -> dict[tuple[int, int], tuple[float, float, float, int]]:
    """Return a rollup table's partials combined per (sid, bucket)."""
    rows = store.cursor().execute(
        f"SELECT sid, bucket, min(vmin), max(vmax), sum(vsum), sum(n) FROM {rollup.table(resolution)} "
        "GROUP BY sid, bucket").fetchall()
    return {(sid, b): (lo, hi, s, n) for sid, b, lo, hi, s, n in rows}


@pytest.mark.parametrize("retention", [{"raw": "30d"}, {}], ids=["every-rollup-stored", "rollups-where-smaller"])
async def test_rollups_equal_the_raw_aggregation_with_late_and_replayed_points(tmp_path, retention):
    # Raw kept for less time than the rollups: every partial is stored. Default (all kept): a rollup is stored
    # only where it is smaller than the readings (the hourly one here), the 1-minute buckets are read raw.
    rng = random.Random(3)
    policy = HistoryPolicy.from_config(["1m", "1h"], retention)
    store = EmbeddedStore(tmp_path, policy=policy, clock=lambda: T0 + 4 * DAY, maintenance_interval_s=3600)
    await store.open()
    try:
        first = first_set()
        await write_all(store, first)
        await store.maintain()  # appended chunks
        second = second_set()
        rng.shuffle(second)
        await write_all(store, second[: len(second) // 2], batch=700)
        await store.maintain()  # late data and overwrites: days rewritten
        await write_all(store, second[len(second) // 2:], batch=700)
        await write_all(store, second[:300], batch=300)  # a spool replayed again
        await store.maintain()
        want = expected(first, second, second[:300])
        sids = store._sids
        for res in (MINUTE, HOUR) if retention else (HOUR,):
            got = rolled(store, res)
            ref: dict[tuple[int, int], list[float]] = {}
            for key, points in want.items():
                for t, v in points.items():
                    ref.setdefault((sids[key], t // res * res), []).append(v)
            assert set(got) == set(ref)
            for k, vs in ref.items():
                lo, hi, s, n = got[k]
                assert (lo, hi, n) == (min(vs), max(vs), len(vs))
                assert math.isclose(s / n, sum(vs) / len(vs), rel_tol=1e-9)
        if not retention:
            assert rolled(store, MINUTE) == {}  # one reading a minute: the 1m rollup would only add bytes
        # And the store answers from them what the raw points say, for every series.
        for key, points in want.items():
            assert await store.count(key) == len(points)
            assert [(t, v) for t, v, _ in await store.raw(key, 0, 2**62)] == sorted(points.items())
            for buckets, width in ((96, HOUR), (960, 6 * MINUTE)):  # the hourly rollup, the 1-minute one
                env = await store.envelope(key, T0, T0 + 4 * DAY, buckets)
                assert env.bucket_ns == width
                assert_envelope(env, reference(points, T0, T0 + 4 * DAY, width))
        assert store.health()["hot_rows"] == 0
    finally:
        await store.close()


async def test_a_query_spanning_rollups_and_uncompacted_readings_returns_continuous_buckets(tmp_path):
    store = EmbeddedStore(tmp_path, maintenance_interval_s=3600)
    await store.open()
    try:
        first = first_set(days=2)
        await write_all(store, first)
        await store.maintain()  # two days in chunks and rollups
        newer = [Reading(d, m, T0 + 2 * DAY + i * MINUTE, float(i)) for i in range(1440) for d, m in SERIES]
        late = [Reading("tank", "level", T0 + DAY + 90 * MINUTE, 999.0)]  # an uncompacted point inside rolled days
        await write_all(store, newer + late)  # stays in the hot table
        want = expected(first, newer, late)
        for key, points in want.items():
            env = await store.envelope(key, T0, T0 + 3 * DAY, 72)
            assert env.bucket_ns == HOUR
            assert env.time_ns == [T0 + i * HOUR for i in range(72)]  # continuous across the two
            assert_envelope(env, reference(points, T0, T0 + 3 * DAY, HOUR))
        # A range not aligned to the rollup still has no gap and counts every point once.
        start = T0 + 17 * MINUTE
        env = await store.envelope("tank/level", start, T0 + 3 * DAY, 50)
        steps = {b - a for a, b in zip(env.time_ns, env.time_ns[1:], strict=False)}
        assert steps == {env.bucket_ns}
        first_bucket = [v for t, v in want["tank/level"].items() if start <= t < start + env.bucket_ns]
        assert math.isclose(env.max[0], max(first_bucket))
    finally:
        await store.close()


async def test_retention_removes_exactly_what_is_past_each_horizon(tmp_path):
    clock = [T0]
    policy = HistoryPolicy.from_config(["1m", "1h"], {"raw": "3d", "1m": "6d", "1h": "forever"})
    store = EmbeddedStore(tmp_path, policy=policy, clock=lambda: clock[0], maintenance_interval_s=3600)
    await store.open()
    points = {T0 + i * 7 * MINUTE + 11 * 10**9: float(i % 50) for i in range(10 * 1440 // 7)}
    try:
        for day in range(10):  # ten days go by, a maintenance pass at the end of each
            clock[0] = T0 + (day + 1) * DAY - 5 * MINUTE
            await write_all(store, [Reading("d", "m", t, v) for t, v in points.items()
                                    if T0 + day * DAY <= t < T0 + (day + 1) * DAY])
            await store.maintain()
        now = clock[0]
        raw_cut, minute_cut = now - 3 * DAY, now - 6 * DAY
        kept = {t: v for t, v in points.items() if t >= raw_cut}
        assert [(t, v) for t, v, _ in await store.raw("d/m", 0, 2**62)] == sorted(kept.items())
        assert await store.count("d/m") == await store.count() == len(kept)
        minutes = rolled(store, MINUTE)
        assert {b for _, b in minutes} == {t // MINUTE * MINUTE for t in points if t // MINUTE * MINUTE >= minute_cut}
        hours = rolled(store, HOUR)
        assert {b for _, b in hours} == {t // HOUR * HOUR for t in points}  # kept forever
        # Old history is still drawn, from the hourly rollup, though its raw readings are gone.
        env = await store.envelope("d/m", T0, T0 + 2 * DAY, 48)
        assert_envelope(env, reference(points, T0, T0 + 2 * DAY, HOUR))
        # A late reading of a day already expired whole is not kept.
        await store.write([Reading("d", "m", T0 + DAY, 5.0)])
        await store.maintain()
        assert await store.raw("d/m", T0, T0 + 2 * DAY) == []
        assert rolled(store, HOUR)[(0, T0 + DAY)][3] == 60 // 7 + 1  # its bucket unchanged
        assert "raw 3d" in store.health()["retention"]
    finally:
        await store.close()
    # Whole partitions past the raw horizon left the disk (the one straddling it stays until it is past too).
    parts = sorted(int(p.name.split("-")[0]) for p in (tmp_path / "history" / "raw").glob("*.parquet"))
    assert parts[0] == raw_cut // PARTITION_NS


@pytest.mark.parametrize("phase", ["start", "written", "committed"])
def test_a_kill_during_compaction_loses_nothing_and_duplicates_nothing(tmp_path, phase):
    data, marker = tmp_path / "data", tmp_path / "marker"
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "compaction_crash_child.py"), str(data),
                              str(marker), phase], stdin=subprocess.PIPE, cwd=ROOT)
    try:
        wait_until(lambda: marker.exists() or child.poll() is not None, timeout=120, what="the compaction")
        assert child.poll() is None, "the child died before the compaction"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    asyncio.run(_everything_once(data, expected(first_set(), second_set())))
    live = {f for (f,) in _manifest(data)}
    assert {p.name for p in (data / "history" / "raw").glob("*.parquet")} == live  # no orphan left


async def _everything_once(data: Path, want: dict[str, dict[int, float]]) -> None:
    """Reopen the store: every reading there once, before and after the interrupted work is redone."""
    store = EmbeddedStore(data, maintenance_interval_s=3600)
    await store.open()
    try:
        for _ in range(2):
            for key, points in want.items():
                assert [(t, v) for t, v, _ in await store.raw(key, 0, 2**62)] == sorted(points.items())
            assert await store.count() == sum(len(p) for p in want.values())
            await store.maintain()  # the interrupted work completes
    finally:
        await store.close()


def _manifest(data: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(data / "vigie.duckdb"), read_only=True)
    try:
        return con.execute("SELECT file FROM chunks").fetchall()
    finally:
        con.close()


async def test_start_up_reads_no_history(tmp_path):
    store = EmbeddedStore(tmp_path, maintenance_interval_s=3600)
    await store.open()
    first = first_set()
    await write_all(store, first)
    await store.maintain()
    await store.close()
    # Make every history chunk unreadable: an open that read history would fail or lose the latest values.
    chunks = list((tmp_path / "history" / "raw").glob("*.parquet"))
    assert chunks
    for path in chunks:
        path.write_bytes(b"not parquet")
    reopened = EmbeddedStore(tmp_path, maintenance_interval_s=3600)
    await reopened.open()
    try:
        want = expected(first)
        latest = {v.key: (v.time_ns, v.value) for v in await reopened.latest()}
        assert latest == {k: max(p.items()) for k, p in want.items()}
        assert {s.key for s in await reopened.series()} == set(want)
        await reopened.write([Reading("tank", "level", T0 + 9 * DAY, 1.5)])  # and it takes writes
        assert {v.key: v.value for v in await reopened.latest()}["tank/level"] == 1.5
    finally:
        await reopened.close()


async def test_an_old_file_is_migrated_to_chunks_and_its_rollups_backfilled(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "vigie.duckdb"))
    con.execute("CREATE TABLE readings (device VARCHAR, metric VARCHAR, time BIGINT, value DOUBLE, quality VARCHAR,"
                " PRIMARY KEY (device, metric, time))")
    con.execute("CREATE TABLE series (device VARCHAR, metric VARCHAR, unit VARCHAR, tags VARCHAR, "
                "PRIMARY KEY (device, metric))")
    first = first_set(days=2)
    rows = pa.table({"device": [r.device for r in first], "metric": [r.metric for r in first],
                     "time": [r.time_ns for r in first], "value": [r.value for r in first]})
    con.register("rows", rows)
    con.execute("INSERT INTO readings SELECT *, 'good' FROM rows")
    con.execute("INSERT INTO series VALUES ('tank', 'level', 'm', '{\"site\": \"a\"}')")
    con.close()
    store = EmbeddedStore(tmp_path, maintenance_interval_s=3600)
    await store.open()
    try:
        want = expected(first)
        assert {s.key: s.unit for s in await store.series()}["tank/level"] == "m"
        assert {v.key: v.value for v in await store.latest()} == {k: max(p.items())[1] for k, p in want.items()}
        assert store.health()["rollups"] == {"1m": "backfilling", "1h": "backfilling"}
        await store.maintain()
        assert store.health()["rollups"] == {"1m": "ready", "1h": "ready"}
        for key, points in want.items():
            assert await store.count(key) == len(points)
            assert_envelope(await store.envelope(key, T0, T0 + 2 * DAY, 48), reference(points, T0, T0 + 2 * DAY, HOUR))
        assert store.health()["bytes_on_disk"] > 0
    finally:
        await store.close()


async def test_a_migrated_file_gives_back_the_space_of_its_readings(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "vigie.duckdb"))
    con.execute("CREATE TABLE readings (device VARCHAR, metric VARCHAR, time BIGINT, value DOUBLE, quality VARCHAR,"
                " PRIMARY KEY (device, metric, time))")
    n = 300_000
    con.execute(f"INSERT INTO readings SELECT 'd' || (i % 10), 'm', {T0} + (i // 10) * {MINUTE}, i % 997, 'good' "
                f"FROM range({n}) t(i)")
    con.close()
    before = (tmp_path / "vigie.duckdb").stat().st_size
    store = EmbeddedStore(tmp_path, maintenance_interval_s=3600)
    await store.open()
    try:
        assert await store.count() == n
    finally:
        await store.close()
    assert (tmp_path / "vigie.duckdb").stat().st_size < before / 2
    assert not (tmp_path / "vigie.duckdb.rewrite").exists()


async def test_a_day_compacted_many_times_is_merged_and_stays_exact(tmp_path):
    policy = HistoryPolicy.from_config(["1m", "1h"], {"raw": "30d"})
    store = EmbeddedStore(tmp_path, policy=policy, clock=lambda: T0 + 2 * DAY, maintenance_interval_s=3600)
    await store.open()
    try:
        first = first_set(days=1)
        step = len(first) // 12
        for i in range(0, len(first), step):  # twelve compactions of one day, as a live day gets
            await write_all(store, first[i:i + step])
            await store.maintain()
        files = store.cursor().execute("SELECT count(*) FROM chunks").fetchall()[0][0]
        assert files < 8
        want = expected(first)
        for key, points in want.items():
            assert [(t, v) for t, v, _ in await store.raw(key, 0, 2**62)] == sorted(points.items())
            assert_envelope(await store.envelope(key, T0, T0 + DAY, 24), reference(points, T0, T0 + DAY, HOUR))
        assert sum(n for *_, n in rolled(store, MINUTE).values()) == len(first)
    finally:
        await store.close()


async def test_a_retention_expiring_raw_first_gets_the_rollups_it_had_left_out(tmp_path):
    store = EmbeddedStore(tmp_path, clock=lambda: T0 + 3 * DAY, maintenance_interval_s=3600)
    await store.open()
    first = first_set(days=2)
    await write_all(store, first)
    await store.maintain()
    assert rolled(store, MINUTE) == {}  # one reading a minute: not worth a 1-minute rollup while raw is kept
    await store.close()
    policy = HistoryPolicy.from_config(["1m", "1h"], {"raw": "30d", "1m": "1y"})
    store = EmbeddedStore(tmp_path, policy=policy, clock=lambda: T0 + 3 * DAY, maintenance_interval_s=3600)
    await store.open()
    try:
        await store.maintain()
        got = rolled(store, MINUTE)
        assert len(got) == len(first) and all(n == 1 for *_, n in got.values())
        assert store.cursor().execute("SELECT count(*) FROM unrolled").fetchall()[0][0] == 0
    finally:
        await store.close()


@pytest.mark.parametrize("resolution", [MINUTE, HOUR])
def test_a_chunks_partials_keep_the_series_with_two_readings_per_bucket(tmp_path, resolution):
    """rollup.partials decides per series as counted here in Python, whether its span decides it or its buckets do."""
    import duckdb

    from app.store.chunks import write_chunk

    rng = random.Random(3)
    times = {0: [T0 + i * MINUTE for i in range(300)],  # one a minute: 1m no, 1h yes
             1: [T0 + i * 20 * 10**9 for i in range(300)],  # three a minute: both yes
             2: [T0, T0 + 5 * HOUR],  # two far apart: neither
             3: sorted(rng.sample(range(T0, T0 + DAY, 10**9), 200)),  # scattered over a day
             4: [T0 + HOUR - MINUTE, T0 + HOUR - 1, T0 + HOUR, T0 + HOUR + 1]}  # straddling an hour
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.register("r", pa.table({"sid": pa.array([s for s, ts in times.items() for _ in ts], pa.int32()),
                                "time": pa.array([t for ts in times.values() for t in ts], pa.int64()),
                                "value": [float(i) for i, _ in enumerate(t for ts in times.values() for t in ts)],
                                "quality": ["good"] * sum(len(ts) for ts in times.values())}))
    path = tmp_path / "2000-0123456789abcdef.parquet"
    write_chunk(con, "SELECT * FROM r", path)
    rows, unrolled = rollup.partials(con, path, resolution, keep_all=False)
    kept = {s for s, ts in times.items() if len(ts) >= 2 * len({t // resolution for t in ts})}
    assert set(rows.column("sid").to_pylist()) == kept
    assert set(unrolled.column("sid").to_pylist()) == set(times) - kept
    for s in kept:
        buckets = {t // resolution * resolution for t in times[s]}
        assert sorted(b for sid, b in zip(rows.column("sid").to_pylist(), rows.column("bucket").to_pylist(),
                                          strict=True) if sid == s) == sorted(buckets)
    assert rows.column("n").to_pylist() and sum(rows.column("n").to_pylist()) == sum(len(times[s]) for s in kept)
    con.close()


async def test_maintenance_clusters_the_rollups_by_series_once_enough_is_appended(tmp_path, monkeypatch):
    # Compaction appends partials chunk by chunk; a pass re-sorts a table by (sid, bucket) once enough has been
    # appended (rollup.recluster), and the answers, and a reader's snapshot taken before, are unchanged.
    monkeypatch.setattr(rollup, "CLUSTER_MIN_APPENDED", 10**12)  # not during the writes' compactions
    store = EmbeddedStore(tmp_path, policy=HistoryPolicy.from_config(["1h"]), maintenance_interval_s=3600,
                          compact_rows=5_000)
    await store.open()
    try:
        await write_all(store, first_set(days=10), batch=5000)  # two partitions (weeks), so two chunks
        await store.maintain()
        await store.maintain()  # the last pass's partitions merged whole (compaction.tidy): nothing left to do
        table = rollup.table(HOUR)
        cur = store.cursor()
        order = cur.execute(f"SELECT sid, bucket FROM {table} ORDER BY rowid").fetchall()
        assert order != sorted(order)  # appended per chunk
        before = cur.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
        want = {key: await store.envelope(key, T0, T0 + 10 * DAY, 240) for key in {f"{d}/{m}" for d, m in SERIES}}
        monkeypatch.setattr(rollup, "CLUSTER_MIN_APPENDED", 0)
        await store.maintain()  # (or the pass the writes woke, if it runs first)
        order = cur.execute(f"SELECT sid, bucket FROM {table} ORDER BY rowid").fetchall()
        assert order == sorted(order)
        assert cur.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == before  # the same partials
        for key, env in want.items():  # the same answers (means up to the order of summation)
            got = await store.envelope(key, T0, T0 + 10 * DAY, 240)
            assert (got.time_ns, got.min, got.max) == (env.time_ns, env.min, env.max)
            assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got.mean, env.mean, strict=True))
        assert cur.execute("SELECT sum(n) FROM rollup_appended").fetchall() == [(0,)]
        assert (await store.maintain())["clustered_rollups"] == 0  # nothing appended since
        # A query's snapshot taken before a table is swapped for its sorted copy still reads the old one.
        reader = store.cursor()
        reader.execute("BEGIN")
        seen = reader.execute(f"SELECT count(*), sum(n) FROM {table}").fetchall()
        with store.write_lock:
            rollup.cluster(store.cursor(), [HOUR])
        assert reader.execute(f"SELECT count(*), sum(n) FROM {table}").fetchall() == seen
        reader.execute("COMMIT")
    finally:
        await store.close()
