"""A store filled by bulk import answers exactly as one fed through write() and compaction.

The same generated readings (DuckDB SQL, deterministic) go into two real
embedded stores: one through ``write()`` in time-interleaved batches with
background compactions and a final maintenance pass, one through
:func:`app.store.bulk.import_history`. Their manifests, rollups, catalogue,
latest values and every query's answer must be the same.
"""

from __future__ import annotations

import math

import duckdb
import pytest

from app.model import Reading, SeriesInfo
from app.store import rollup
from app.store.bulk import import_history
from app.store.embedded import EmbeddedStore
from app.store.history_policy import HistoryPolicy
from tests.history_data import DAY, MINUTE, T0

DEVICES, DAYS = 4, 21
START, END = T0 + 5 * MINUTE, T0 + DAYS * DAY  # not on a partition edge
SERIES = [SeriesInfo(f"dev-{i}", "level", "m") for i in range(DEVICES)]


def rows_sql(lo: int, hi: int) -> str:
    """Return the readings of ``[lo, hi)``: one a minute per device, a daily sine plus hashed noise."""
    first = -(-lo // MINUTE) * MINUTE
    return (f"SELECT d.sid::INTEGER AS sid, m.t AS time, round(10 + 3 * sin(2 * pi() * (m.t % {DAY}) / {DAY} "
            f"+ d.sid) + ((hash(d.sid, m.t) % 1000) / 1000.0 - 0.5), 3) AS value, "
            f"CASE WHEN hash(m.t, d.sid) % 97 = 0 THEN 'uncertain' ELSE 'good' END AS quality "
            f"FROM range(0, {DEVICES}) d(sid), range({first}, {hi}, {MINUTE}) m(t)")


def interleaved() -> list[Reading]:
    """Return the same readings as Vigie's writer would see them: every device's minute, then the next minute."""
    rows = duckdb.sql(f"SELECT * FROM ({rows_sql(START, END)}) ORDER BY time, sid").fetchall()
    return [Reading(SERIES[sid].device, SERIES[sid].metric, t, v, quality=q, unit="m") for sid, t, v, q in rows]


def on_disk(store: EmbeddedStore) -> dict[str, object]:
    """Return the store's manifest and rollups, independent of chunk names."""
    cur = store.cursor()
    out: dict[str, object] = {
        "chunks": cur.execute("SELECT part, rows FROM chunks ORDER BY part").fetchall(),
        "chunk_series": cur.execute("SELECT part, sid, tmin, tmax, n FROM chunk_series ORDER BY ALL").fetchall(),
        "unrolled": cur.execute("SELECT sid, resolution, tmin, tmax FROM unrolled ORDER BY ALL").fetchall(),
        "hot": cur.execute("SELECT count(*) FROM hot").fetchall(),
        "ready": cur.execute("SELECT * FROM rollup_state ORDER BY ALL").fetchall(),
    }
    for res in store.policy.rollups:
        out[rollup.table(res)] = cur.execute(
            f"SELECT sid, bucket, min(vmin), max(vmax), round(sum(vsum), 6), sum(n) FROM {rollup.table(res)} "
            "GROUP BY ALL ORDER BY ALL").fetchall()
    return out


async def answers(store: EmbeddedStore) -> dict[str, object]:
    """Return every read the pages and the API make, over ranges on and across partition edges."""
    ranges = [(START, END), (T0, T0 + DAY), (T0 + 6 * DAY + 7 * MINUTE, T0 + 15 * DAY), (T0 - DAY, END + 365 * DAY),
              (END - 2 * 3600 * 10**9, END)]
    out: dict[str, object] = {
        "series": await store.series(),
        "latest": await store.latest(),
        "count": await store.count(),
        "count_one": await store.count(SERIES[1].key),
    }
    for s in SERIES:
        for a, b in ranges:
            for buckets in (800, 50):
                env = await store.envelope(s.key, a, b, buckets)
                out[f"env {s.key} {a} {b} {buckets}"] = (env.bucket_ns, env.time_ns, env.min, env.max, env.mean)
        out[f"raw {s.key}"] = await store.raw(s.key, T0 + 3 * DAY, T0 + 9 * DAY)
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("env "):
            width, times, lo, hi, mean = a[key]
            assert (width, times, lo, hi) == b[key][:4], key
            assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(mean, b[key][4], strict=True)), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("rollups", [None, ("1h",)])
async def test_a_bulk_imported_store_answers_as_one_written_and_compacted(tmp_path, rollups):
    policy = HistoryPolicy() if rollups is None else HistoryPolicy.from_config(list(rollups))
    written = EmbeddedStore(tmp_path / "written", policy=policy, compact_rows=40_000)
    await written.open()
    try:
        readings = interleaved()
        for i in range(0, len(readings), 5000):
            await written.write(readings[i:i + 5000])
        await written.maintain()
        await written.maintain()  # the last pass's partitions are merged whole at the next one (compaction.tidy)
        assert written.maintenance.passes >= 2  # compactions ran during the writes, not only at the end
        want_disk, want = on_disk(written), await answers(written)
    finally:
        await written.close()

    done = import_history(tmp_path / "bulk", SERIES, rows_sql, START, END, policy=policy)
    assert done.rows == len(readings) and done.chunks == len(want_disk["chunks"])
    bulk = EmbeddedStore(tmp_path / "bulk", policy=policy)
    await bulk.open()
    try:
        assert on_disk(bulk) == want_disk
        assert_same(await answers(bulk), want)
        cur = bulk.cursor()
        for res in policy.rollups:  # clustered by series (rollup.cluster), so a one-series filter prunes
            stored = cur.execute(f"SELECT sid, bucket FROM {rollup.table(res)} ORDER BY rowid").fetchall()
            assert stored == sorted(stored)
    finally:
        await bulk.close()


async def test_bulk_import_refuses_a_store_that_holds_readings(tmp_path):
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.write([Reading("d", "m", T0, 1.0)])
    await store.close()
    with pytest.raises(ValueError, match="empty store"):
        import_history(tmp_path, SERIES, rows_sql, START, END)
