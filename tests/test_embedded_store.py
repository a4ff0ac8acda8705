"""The embedded store keeps one value per point (series + time), as InfluxDB does."""

from __future__ import annotations

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
