"""InfluxStore rollups and retention against a real InfluxDB 1.6.7 (Vigie's own rollup writer).

Each test writes to its own measurement; maintenance passes are run
explicitly (``store.maintain()``) so each test says when rollups are made.
"""

from __future__ import annotations

import math
import random
import uuid

import pytest

from app.model import Reading
from app.store.history_policy import HistoryPolicy
from app.store.influx import InfluxStore, quote_ident
from tests.history_data import DAY, MINUTE, T0, expected, first_set, second_set
from tests.servers import InfluxDB
from tests.test_history_store import assert_envelope, reference

HOUR = 60 * MINUTE


@pytest.fixture
def measurement() -> str:
    return f"h_{uuid.uuid4().hex[:10]}"


def rolled(server: InfluxDB, measurement: str, label: str) -> dict[tuple[str, int], tuple[float, float, float, int]]:
    """Return a rollup measurement's points per (series key, bucket)."""
    out = {}
    for row in server.points(f'SELECT vmin, vmax, vsum, n FROM {quote_ident(measurement + "_" + label)} '
                             "GROUP BY device, metric"):
        out[(f"{row['device']}/{row['metric']}", row["time"])] = (row["vmin"], row["vmax"], row["vsum"], row["n"])
    return out


async def write_all(store: InfluxStore, readings: list[Reading], batch: int = 5000) -> None:
    for i in range(0, len(readings), batch):
        await store.write(readings[i:i + batch])


async def test_rollups_equal_the_raw_aggregation_with_late_and_replayed_points(influxdb, measurement):
    rng = random.Random(5)
    store = InfluxStore(influxdb.url, database=influxdb.database, measurement=measurement,
                        policy=HistoryPolicy(), maintenance_interval_s=3600, clock=lambda: T0 + 4 * DAY)
    await store.open()
    try:
        first = first_set()
        await write_all(store, first)
        await store.maintain()
        second = second_set()
        rng.shuffle(second)
        await write_all(store, second, batch=700)  # corrected, replayed, late, new points
        await store.maintain()
        want = expected(first, second)
        for label, res in (("1m", MINUTE), ("1h", HOUR)):
            ref: dict[tuple[str, int], list[float]] = {}
            for key, points in want.items():
                for t, v in points.items():
                    ref.setdefault((key, t // res * res), []).append(v)
            got = rolled(influxdb, measurement, label)
            assert set(got) == set(ref)
            for k, vs in ref.items():
                lo, hi, s, n = got[k]
                assert (lo, hi, n) == (min(vs), max(vs), len(vs))
                assert math.isclose(s / n, sum(vs) / len(vs), rel_tol=1e-9)
        for key, points in want.items():
            for buckets, width in ((96, HOUR), (960, 6 * MINUTE)):
                env = await store.envelope(key, T0, T0 + 4 * DAY, buckets)
                assert env.bucket_ns == width
                assert_envelope(env, reference(points, T0, T0 + 4 * DAY, width))
        # Readings written since the pass are dirty: the rollup answers before them, raw readings after.
        late = [Reading("tank", "level", T0 + DAY + 90 * MINUTE, 999.0),
                Reading("tank", "level", T0 + 3 * DAY + 700 * MINUTE, -3.0)]
        await store.write(late)
        points = expected(first, second, late)["tank/level"]
        env = await store.envelope("tank/level", T0, T0 + 4 * DAY, 96)
        assert env.time_ns[:82] == [T0 + i * HOUR for i in range(82)]  # continuous (the data stops at 3 d 10 h)
        assert_envelope(env, reference(points, T0, T0 + 4 * DAY, HOUR))
        assert "up to date" not in store.health()["rollups"]["1h"]
    finally:
        await store.close()


async def test_retention_removes_what_is_past_each_horizon(influxdb, measurement):
    clock = [T0]
    policy = HistoryPolicy.from_config(["1m", "1h"], {"raw": "3d", "1m": "6d", "1h": "forever"})
    store = InfluxStore(influxdb.url, database=influxdb.database, measurement=measurement, policy=policy,
                        maintenance_interval_s=3600, clock=lambda: clock[0])
    await store.open()
    points = {T0 + i * 7 * MINUTE + 11 * 10**9: float(i % 50) for i in range(10 * 1440 // 7)}
    try:
        for day in range(10):
            clock[0] = T0 + (day + 1) * DAY - 5 * MINUTE
            await write_all(store, [Reading("d", "m", t, v) for t, v in points.items()
                                    if T0 + day * DAY <= t < T0 + (day + 1) * DAY])
            await store.maintain()
        now = clock[0]
        raw_cut, minute_cut = now - 3 * DAY, now - 6 * DAY
        kept = {t: v for t, v in points.items() if t >= raw_cut}
        assert [(t, v) for t, v, _ in await store.raw("d/m", 0, 2**62)] == sorted(kept.items())
        assert await store.count("d/m") == len(kept)
        on_disk = influxdb.points(f'SELECT count("value") FROM {quote_ident(measurement)}')
        assert on_disk[0]["count"] == len(kept)  # deleted, not only hidden
        minutes = {b for _, b in rolled(influxdb, measurement, "1m")}
        assert minutes == {t // MINUTE * MINUTE for t in points if t // MINUTE * MINUTE >= minute_cut}
        assert {b for _, b in rolled(influxdb, measurement, "1h")} == {t // HOUR * HOUR for t in points}
        env = await store.envelope("d/m", T0, T0 + 2 * DAY, 48)  # from the hourly rollup: raw is gone
        assert_envelope(env, reference(points, T0, T0 + 2 * DAY, HOUR))
        assert "raw 3d" in store.health()["retention"]
        assert store.health()["database_bytes_on_disk"] > 0
    finally:
        await store.close()


async def test_a_database_written_without_rollups_is_backfilled(influxdb, measurement):
    plain = InfluxStore(influxdb.url, database=influxdb.database, measurement=measurement)
    await plain.open()
    first = first_set(days=2)
    await write_all(plain, first)
    await plain.close()
    store = InfluxStore(influxdb.url, database=influxdb.database, measurement=measurement,
                        policy=HistoryPolicy(), maintenance_interval_s=3600, clock=lambda: T0 + 2 * DAY)
    await store.open()
    try:
        want = expected(first)
        # Before the backfill the answer comes from raw readings, and is right all the same.
        env = await store.envelope("tank/level", T0, T0 + 2 * DAY, 48)
        assert_envelope(env, reference(want["tank/level"], T0, T0 + 2 * DAY, HOUR))
        await store.maintain()
        assert len(rolled(influxdb, measurement, "1h")) == 3 * 48
        for key, points in want.items():
            assert_envelope(await store.envelope(key, T0, T0 + 2 * DAY, 48), reference(points, T0, T0 + 2 * DAY, HOUR))
    finally:
        await store.close()
