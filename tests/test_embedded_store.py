"""The embedded store keeps one value per point (series + time), as InfluxDB does."""

from __future__ import annotations

import threading
import time

import duckdb

from app.model import Reading
from app.store.embedded import EmbeddedStore


async def test_the_same_point_written_again_replaces_its_value(tmp_path):
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        await store.write([Reading("d", "m", 1000, 1.0), Reading("d", "m", 2000, 2.0)])
        # A QoS 1 message delivered twice, a replayed spool: the same points again, one corrected.
        await store.write([Reading("d", "m", 1000, 1.0), Reading("d", "m", 2000, 2.5)])
        # The same point twice in one batch: the last one wins.
        await store.write([Reading("d", "m", 3000, 3.0), Reading("d", "m", 3000, 3.5), Reading("e", "m", 3000, 9.0)])
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.0, "good"), (2000, 2.5, "good"), (3000, 3.5, "good")]
        assert await store.count() == 4
    finally:
        await store.close()
    reopened = EmbeddedStore(tmp_path)
    await reopened.open()
    try:
        assert {v.key: v.value for v in await reopened.latest()} == {"d/m": 3.5, "e/m": 9.0}
    finally:
        await reopened.close()


async def test_a_file_from_before_the_key_is_migrated_keeping_the_last_value_written(tmp_path):
    con = duckdb.connect(str(tmp_path / "vigie.duckdb"))
    con.execute("CREATE TABLE readings (device VARCHAR, metric VARCHAR, time BIGINT, value DOUBLE, quality VARCHAR)")
    con.execute("INSERT INTO readings VALUES ('d','m',1000,1.0,'good'), ('d','m',2000,2.0,'good'), "
                "('d','m',1000,1.5,'uncertain'), ('d','m',3000,3.0,'good')")
    con.close()
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.5, "uncertain"), (2000, 2.0, "good"),
                                                     (3000, 3.0, "good")]
        await store.write([Reading("d", "m", 2000, 2.2)])  # and the key holds from now on
        assert await store.count("d/m") == 3
    finally:
        await store.close()


async def test_a_point_written_twice_before_a_compaction_keeps_the_last_value(tmp_path):
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        await store.write([Reading("d", "m", 1000, 1.0), Reading("d", "m", 2000, 2.0)])
        await store.write([Reading("d", "m", 1000, 1.5, quality="uncertain")])  # both rows hot, the last wins
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.5, "uncertain"), (2000, 2.0, "good")]
        await store.maintain()
        assert store.cursor().execute("SELECT count(*) FROM hot").fetchone()[0] == 0
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.5, "uncertain"), (2000, 2.0, "good")]
        assert await store.count() == 2
    finally:
        await store.close()


async def test_a_hot_table_made_with_a_key_is_kept_without_it(tmp_path):
    con = duckdb.connect(str(tmp_path / "vigie.duckdb"))
    con.execute("CREATE TABLE catalogue (sid INTEGER PRIMARY KEY, device VARCHAR, metric VARCHAR, unit VARCHAR, "
                "tags VARCHAR)")
    con.execute("CREATE TABLE hot (sid INTEGER, time BIGINT, value DOUBLE, quality VARCHAR, seq BIGINT, "
                "PRIMARY KEY (sid, time))")
    con.execute("INSERT INTO catalogue VALUES (0, 'd', 'm', '', '{}')")
    con.execute("INSERT INTO hot VALUES (0, 1000, 1.0, 'good', 1), (0, 2000, 2.0, 'good', 2)")
    con.close()
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        assert store.cursor().execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'hot'"
                                      ).fetchone()[0] == 0
        await store.write([Reading("d", "m", 2000, 2.5)])
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.0, "good"), (2000, 2.5, "good")]
        await store.maintain()
        assert await store.raw("d/m", 0, 10_000) == [(1000, 1.0, "good"), (2000, 2.5, "good")]
    finally:
        await store.close()


async def test_a_compaction_holds_writes_up_only_while_it_publishes(tmp_path):
    """Writes wait for the compaction's one transaction, which runs no statement per row or per series.

    2,000 series: at c5fd102 the transaction inserted their manifest and
    ``unrolled`` rows one statement each and deleted the hot rows through the
    hot table's key index, holding writes up for ~8 s here; now well under 1 s.
    """
    store = EmbeddedStore(tmp_path, compact_rows=10**9)
    await store.open()
    held: list[float] = []
    lock = store.write_lock

    class Timed:
        def __enter__(self):
            lock.acquire()
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            if threading.current_thread() is not threading.main_thread():
                held.append(time.perf_counter() - self.t)
            lock.release()

    try:
        readings = [Reading(f"dev-{i % 2000}", "level", 60 * 10**9 * (i // 2000), float(i)) for i in range(100_000)]
        for i in range(0, len(readings), 5000):
            await store.write(readings[i:i + 5000])
        store.write_lock = Timed()
        held.clear()
        done = await store.maintain()
        assert done["compacted_rows"] == 100_000
        assert max(held) < 1.0, held
    finally:
        store.write_lock = lock
        await store.close()


async def test_every_cursor_keeps_parquet_footers_cached(tmp_path):
    # A one-series query on a 1,000-device week chunk (615 row groups) spent a third of its CPU re-reading
    # the footer; the cache must hold for the worker threads' cursors, not only the connection that set it.
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        await store.write([Reading("d", "m", t, float(t)) for t in range(0, 10_000, 10)])
        await store.maintain()
        cur = store.cursor()
        assert cur.execute("SELECT current_setting('parquet_metadata_cache')").fetchone()[0] is True
        assert await store.count("d/m") == 1000
        await store.write([Reading("d", "m", 5, -1.0)])  # late: the week's chunk is replaced by a new file
        await store.maintain()
        assert (await store.raw("d/m", 0, 11))[:2] == [(0, 0.0, "good"), (5, -1.0, "good")]
        assert await store.count("d/m") == 1001
    finally:
        await store.close()
