"""The embedded store: zero setup, the demo's and small sites' default, now at a year of history.

Layout (see :mod:`app.store.chunks`): a small DuckDB file ``vigie.duckdb``
holds the catalogue, the latest value of each series, the *hot* table of
readings not yet compacted, the rollups and the manifest; history lives in
Parquet chunks, each within a partition (a week), sorted by series then time, which
DuckDB reads directly. So:

- a query reads only its series' rows (the manifest names the chunks that
  hold the series in the range; row-group statistics skip the other series);
- a reading costs a few bytes on disk (6.7 in bench/README.md's fleet)
  instead of ~90 (no per-row index at all, not even on the hot table of
  minutes of data);
- start-up reads the catalogue and the latest values (one row per series),
  never the history;
- ``envelope()`` reads rollups (:mod:`app.store.rollup`) when a resolution
  fills the requested buckets, so its cost follows buckets, not points;
- history past its horizon is expired per resolution (:mod:`app.store.retention`).

Writes go to the hot table as Arrow batches. As in InfluxDB, a point is
identified by its series and time: writing the same series and timestamp
again replaces the value (an MQTT QoS 1 message delivered twice, a spool
replayed after a crash, a gateway re-sending its buffer), so nothing is
counted twice: in the hot table each write has a sequence number and the
last written row of a point is its value (reads and compaction take
``arg_max_null(value, seq)``; the table has no key, whose index made
compaction hold writes up for seconds), and between the hot table and the
chunks because hot rows win at query time and compaction
(:mod:`app.store.compaction`) merges them in the same way.

DuckDB is blocking, so every call runs in a worker thread with its own
cursor; each read runs in one transaction, so it sees the manifest and the
hot table of the same instant. The background work (compaction, rollup
backfill, retention) is one task (:mod:`app.store.maintenance`) started by
``open()`` and awaited by ``close()``. The file is locked to one process.

Files from before this layout (a ``readings`` table, with or without its
primary key) are migrated on open: their readings become chunks (the last
value written for a point kept), their rollups are backfilled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from app.model import Envelope, LatestValue, Reading, SeriesInfo
from app.store import compaction, retention, rollup
from app.store.base import StoreEngine, bucket_width_ns
from app.store.chunks import (
    PARTITION_NS,
    SCHEMA,
    chunk_stats,
    fsync_dir,
    fsync_file,
    insert_rows,
    new_chunk_name,
    remove_orphans,
    sql_list,
    write_chunk,
)
from app.store.history_policy import HistoryPolicy, duration_label
from app.store.maintenance import Maintenance

log = logging.getLogger(__name__)

REPLACED_FILE_GRACE_S = 60.0
"""A replaced chunk is deleted this long after its replacement, when no query can still be reading it."""

_ALL_TIME = (-(2**63), 2**63 - 1)


def default_threads() -> int:
    """Return DuckDB's worker threads: every core this process may use but one, at least one.

    Vigie's Python (ingest, alarms, pages) runs on one core at a time, the
    interpreter lock's; DuckDB's default (a thread per core) made a
    compaction take that core too, and writes during it fell to 0.57-0.70
    of their quiet rate on 2 cores, against 0.75-1.2 with one thread
    (bench/compaction.py, bench/README.md). ``threads`` is DuckDB's global
    setting, not per connection, so queries get the same number.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


def _drop_hot_key(con: duckdb.DuckDBPyConnection) -> None:
    """Give a hot table made with a primary key (before compaction stopped waiting on its index) none.

    One transaction: a kill leaves the keyed table, done again at the next open.
    """
    keyed = con.execute("SELECT count(*) FROM duckdb_constraints() WHERE schema_name = 'main' "
                        "AND table_name = 'hot' AND constraint_type = 'PRIMARY KEY'").fetchone()[0]
    if not keyed:
        return
    con.execute("BEGIN")
    try:
        con.execute("CREATE TABLE hot_unkeyed AS SELECT * FROM hot")
        con.execute("DROP TABLE hot")
        con.execute("ALTER TABLE hot_unkeyed RENAME TO hot")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class EmbeddedStore(StoreEngine):
    """Readings under ``data_dir`` (a DuckDB file and Parquet chunks), or in memory when None.

    ``policy`` sets rollup resolutions and retention; ``compact_rows`` how
    many hot rows wake the maintenance task (which also runs every
    ``maintenance_interval_s``); ``clock`` is the time retention measures
    horizons from (tests move it); ``threads`` DuckDB's worker threads
    (:func:`default_threads` when None).
    """

    engine_type = "embedded"

    def __init__(self, data_dir: str | Path | None = None, *, policy: HistoryPolicy | None = None,
                 compact_rows: int = 250_000, maintenance_interval_s: float = 300.0,
                 clock: Callable[[], int] = time.time_ns, threads: int | None = None) -> None:
        self.path = Path(data_dir) / "vigie.duckdb" if data_dir else None
        self.chunk_dir = Path(data_dir) / "history" / "raw" if data_dir else None
        self.policy = policy or HistoryPolicy()
        self.compact_rows = compact_rows
        self.now_ns = clock
        self.threads = threads or default_threads()
        self.compaction_hook: Callable[[str], None] | None = None  # crash tests stop the process in it
        self._con: duckdb.DuckDBPyConnection | None = None
        self.write_lock = threading.Lock()  # one writer at a time; readers use their own cursors
        self._maintain_lock = threading.Lock()
        self._latest: dict[str, LatestValue] = {}
        self._series: dict[str, SeriesInfo] = {}
        self._sids: dict[str, int] = {}
        self._next_sid = 0
        self._seq = 0
        self._hot_estimate = 0
        self._ready: list[int] = []
        self._doomed: list[tuple[float, Path]] = []  # replaced chunks, deleted after the grace period
        self._disk: dict[str, Any] = {}
        self.maintenance = Maintenance(self._maintain_once, maintenance_interval_s)

    # -- life cycle -----------------------------------------------------
    async def open(self) -> None:
        """Open (or create, or migrate) the store, load catalogue and latest values, start maintenance."""
        await asyncio.to_thread(self._open)
        self.maintenance.start()

    def _open(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            assert self.chunk_dir is not None
            self.chunk_dir.mkdir(parents=True, exist_ok=True)
            self.path.with_name(self.path.name + ".rewrite").unlink(missing_ok=True)  # a rewrite a kill cut short
        self._con = self._connect()
        self._con.execute(SCHEMA)
        _drop_hot_key(self._con)
        tables = {t for (t,) in self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        if self.chunk_dir is not None:
            remove_orphans(self._con, self.chunk_dir)
        if "readings" in tables or "series" in tables:
            self._migrate(tables)
        rollup.ensure_tables(self._con, self.policy.rollups)
        self._ready = rollup.ready(self._con, self.policy.rollups)
        for sid, device, metric, unit, tags in self._con.execute("SELECT * FROM catalogue").fetchall():
            info = SeriesInfo(device, metric, unit, json.loads(tags))
            self._series[info.key] = info
            self._sids[info.key] = sid
        self._next_sid = max(self._sids.values(), default=-1) + 1
        by_sid = {sid: key for key, sid in self._sids.items()}
        for sid, t, v, q in self._con.execute("SELECT * FROM latest").fetchall():
            info = self._series[by_sid[sid]]
            self._latest[info.key] = LatestValue(info.device, info.metric, t, v, q, info.unit, info.tags)
        seq, rows = self._con.execute("SELECT max(seq), count(*) FROM hot").fetchone()
        self._seq, self._hot_estimate = seq or 0, rows
        self._measure_disk()

    def _migrate(self, tables: set[str]) -> None:
        """Turn a file from before the chunk layout (``series`` + ``readings``) into this one.

        The readings become chunks (the last value written for each point
        kept, as the former key did), then one transaction names them in the
        manifest, fills the catalogue and latest values and drops the old
        tables: a kill before it leaves the old file as it was (the written
        chunks are orphans, removed at the next open, which migrates again).
        """
        con = self._con
        assert con is not None
        readings = "readings" in tables
        before = con.execute("SELECT count(*) FROM readings").fetchone()[0] if readings else 0
        con.execute("BEGIN")
        try:
            # Every series named by either table gets a sid (a pre-key file may have readings only).
            if "series" not in tables:
                con.execute("CREATE TEMP TABLE series (device VARCHAR, metric VARCHAR, unit VARCHAR, tags VARCHAR)")
            names = " UNION ".join(f"SELECT DISTINCT device, metric FROM {t}"
                                   for t in ("series", "readings") if t in tables)
            con.execute(f"CREATE TEMP TABLE sidmap AS SELECT row_number() OVER (ORDER BY device, metric)::INTEGER "
                        f"- 1 AS sid, device, metric FROM ({names})")
            con.execute("INSERT INTO catalogue SELECT m.sid, m.device, m.metric, coalesce(s.unit, ''), "
                        "coalesce(s.tags, '{}') FROM sidmap m LEFT JOIN series s USING (device, metric)")
            stats: list[pa.Table] = []
            if readings and before:
                assert self.chunk_dir is not None, "an in-memory store has nothing to migrate"
                con.execute("CREATE TEMP TABLE points AS SELECT m.sid, r.time, arg_max_null(r.value, r.rowid) AS value,"
                            " arg_max_null(r.quality, r.rowid) AS quality FROM readings r JOIN sidmap m "
                            "USING (device, metric) GROUP BY m.sid, r.time")
                for (part,) in con.execute(f"SELECT DISTINCT time // {PARTITION_NS} FROM points ORDER BY 1").fetchall():
                    path = self.chunk_dir / new_chunk_name(part)
                    write_chunk(con, f"SELECT * FROM points WHERE time // {PARTITION_NS} = {part}", path)
                    part_stats = chunk_stats(con, path, part)
                    stats.append(part_stats)
                    con.execute("INSERT INTO chunks VALUES (?, ?, ?)",
                                [path.name, part, sum(part_stats.column("n").to_pylist())])
                con.execute("INSERT INTO latest SELECT sid, max(time), arg_max(value, time), arg_max(quality, time) "
                            "FROM points GROUP BY sid")
            for part_stats in stats:
                insert_rows(con, "chunk_series", part_stats)
            for t in ("readings", "series"):
                if t in tables:
                    con.execute(f"DROP TABLE {t}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            for t in ("points", "sidmap", "series"):
                con.execute(f"DROP TABLE IF EXISTS temp.{t}")
        con.execute("CHECKPOINT")
        if self.path is not None and readings:
            self._rewrite_file()
        after = sum(sum(t.column("n").to_pylist()) for t in stats)
        log.warning("embedded store %s migrated to history chunks: %d readings, %d duplicates dropped; "
                    "rollups will be backfilled", self.path, after, before - after)

    def _rewrite_file(self) -> None:
        """Copy the database into a new file and put it in place of the old one.

        Dropping the migrated readings frees their blocks but DuckDB does not
        shrink its file: a demo's 440 MB would stay 440 MB. The copy is written
        under another name, fsynced, then renamed over the old file (atomic):
        a kill before the rename leaves the old file, migrated and whole.
        """
        assert self._con is not None and self.path is not None
        fresh = self.path.with_name(self.path.name + ".rewrite")
        fresh.unlink(missing_ok=True)
        name = self._con.execute("SELECT current_database()").fetchall()[0][0]
        self._con.execute(f"ATTACH '{fresh}' AS fresh")
        self._con.execute(f"COPY FROM DATABASE {name} TO fresh")
        self._con.execute("DETACH fresh")
        self._con.close()
        fsync_file(fresh)
        os.replace(fresh, self.path)
        fsync_dir(self.path.parent)
        self._con = self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the DuckDB file with its thread count, keeping Parquet footers in memory once read.

        The footer cache is for every cursor (``SET GLOBAL``): a week's chunk of
        a large site has hundreds of row groups (1,000 devices: 615), and
        without it each query parses each chunk's footer again, a third of a
        one-series query's CPU (bench/README.md, *History at scale*). Safe: a
        chunk is never rewritten under its name, and DuckDB checks the file's
        modification time anyway.
        """
        con = duckdb.connect(str(self.path) if self.path else ":memory:", config={"threads": self.threads})
        con.execute("SET GLOBAL parquet_metadata_cache = true")
        return con

    async def close(self) -> None:
        """Stop the maintenance task (awaiting its pass), close the file, delete replaced chunks."""
        await self.maintenance.stop()
        if self._con is not None:
            con, self._con = self._con, None
            await asyncio.to_thread(con.close)
        for _, path in self._doomed:
            path.unlink(missing_ok=True)
        self._doomed.clear()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return a new cursor (one per thread: DuckDB connections are not shared across threads)."""
        if self._con is None:
            raise RuntimeError("embedded store is not open")
        return self._con.cursor()

    _cursor = cursor

    # -- writes -----------------------------------------------------------
    async def write(self, batch: Sequence[Reading]) -> None:
        """Put a batch into the hot table as one Arrow table; update catalogue and latest values."""
        if not batch:
            return
        if len({(r.device, r.metric, r.time_ns) for r in batch}) < len(batch):
            # The same point twice in one batch: the last one wins, as across batches.
            batch = list({(r.device, r.metric, r.time_ns): r for r in batch}.values())
        # The catalogue and latest values change in memory only once the rows are in: a batch the
        # database refuses must leave no series behind that was never stored.
        series: dict[str, tuple[int, SeriesInfo]] = {}
        latest: dict[str, LatestValue] = {}
        sids: list[int] = []
        next_sid = self._next_sid
        for r in batch:
            key = r.key
            sid = self._sids.get(key)
            if sid is None:
                if key in series:
                    sid = series[key][0]
                else:
                    sid, next_sid = next_sid, next_sid + 1
            sids.append(sid)
            known = series[key][1] if key in series else self._series.get(key)
            unit = r.unit or (known.unit if known else "")  # a reading without a unit keeps the series' one
            if known is None or known.unit != unit or known.tags != r.tags:
                series[key] = (sid, SeriesInfo(r.device, r.metric, unit, dict(r.tags)))
            last = latest.get(key) or self._latest.get(key)
            if last is None or r.time_ns >= last.time_ns:
                latest[key] = LatestValue(r.device, r.metric, r.time_ns, r.value, r.quality, unit, r.tags)
        table = pa.table({
            "sid": pa.array(sids, pa.int32()),
            "time": pa.array([r.time_ns for r in batch], pa.int64()),
            "value": pa.array([r.value for r in batch], pa.float64()),
            "quality": [str(r.quality) for r in batch],
        })
        latest_rows = pa.table({
            "sid": pa.array([self._sids.get(k, series[k][0] if k in series else -1) for k in latest], pa.int32()),
            "time": pa.array([v.time_ns for v in latest.values()], pa.int64()),
            "value": pa.array([v.value for v in latest.values()], pa.float64()),
            "quality": [str(v.quality) for v in latest.values()],
        })
        await asyncio.to_thread(self._insert, table, list(series.values()), latest_rows)
        for key, (sid, info) in series.items():
            self._series[key] = info
            self._sids[key] = sid
        self._next_sid = next_sid
        self._latest.update(latest)
        self._hot_estimate += len(batch)
        if self._hot_estimate >= self.compact_rows and self.chunk_dir is not None:
            self.maintenance.poke()

    def _insert(self, table: pa.Table, new_series: list[tuple[int, SeriesInfo]], latest_rows: pa.Table) -> None:
        with self.write_lock:
            cur = self.cursor()
            self._seq += 1
            cur.register("batch", table)
            cur.register("newest", latest_rows)
            cur.execute("BEGIN")
            try:
                cur.execute(f"INSERT INTO hot SELECT sid, time, value, quality, {self._seq} FROM batch")
                if new_series:  # one statement: executemany cost 4.7 ms of CPU per new series (a new fleet's first
                    # 20,000 series took 173 s); as an Arrow table, tens of microseconds each
                    cur.register("series_rows", pa.table({
                        "sid": pa.array([sid for sid, _ in new_series], pa.int32()),
                        "device": [s.device for _, s in new_series],
                        "metric": [s.metric for _, s in new_series],
                        "unit": [s.unit for _, s in new_series],
                        "tags": [json.dumps(s.tags, sort_keys=True) for _, s in new_series],
                    }))
                    try:
                        cur.execute("INSERT OR REPLACE INTO catalogue SELECT * FROM series_rows")
                    finally:
                        cur.unregister("series_rows")
                cur.execute("INSERT OR REPLACE INTO latest SELECT * FROM newest")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.unregister("batch")
                cur.unregister("newest")

    def hot_rows_left(self, rows: int) -> None:
        """Note how many rows the hot table holds (counted under the write lock after compaction or expiry)."""
        self._hot_estimate = rows

    # -- reads ----------------------------------------------------------------
    async def latest(self) -> list[LatestValue]:
        """Return the latest value of every series (from memory)."""
        return sorted(self._latest.values(), key=lambda v: v.key)

    async def series(self) -> list[SeriesInfo]:
        """Return the series catalogue."""
        return sorted(self._series.values(), key=lambda s: s.key)

    def _raw_sql(self, cur: duckdb.DuckDBPyConnection, sid: int, ranges: list[tuple[int, int]],
                 unrolled: tuple[int, int, int] | None = None) -> str | None:
        """Return SQL for a series' (time, value, quality) in some ranges: hot rows, and chunk rows they don't replace.

        ``unrolled`` = (resolution, start, end) adds the readings of chunks
        whose rollup at that resolution was not stored (the rollup part of an
        envelope, where the hot table has no row). Ranges are clipped to the
        raw horizon; None when nothing is left.
        """
        cutoff = self.policy.cutoff(None, self.now_ns())

        def clip(a: int, b: int) -> tuple[int, int]:
            return (int(max(a, cutoff)) if cutoff is not None else int(a)), int(b)

        ranges = [r for r in (clip(a, b) for a, b in ranges) if r[0] < r[1]]
        parts: list[str] = []
        if ranges:
            where = f"sid = {int(sid)} AND (" + " OR ".join(f"(time >= {a} AND time < {b})" for a, b in ranges) + ")"
            # A point written again is another hot row: the last written (highest seq) is its value.
            hot = (f"SELECT time, arg_max_null(value, seq) AS value, arg_max_null(quality, seq) AS quality "
                   f"FROM hot WHERE {where} GROUP BY time")
            files: set[str] = set()
            if self.chunk_dir is not None:
                for a, b in ranges:
                    files.update(f for (f,) in cur.execute(
                        "SELECT DISTINCT file FROM chunk_series WHERE sid = ? AND tmax >= ? AND tmin < ?",
                        [sid, a, b]).fetchall())
            if files:
                paths = sql_list(self.chunk_dir / f for f in sorted(files))
                chunks = f"SELECT time, value, quality FROM read_parquet({paths}) WHERE {where}"
                parts.append(f"SELECT * FROM ({hot}) UNION ALL SELECT c.* FROM ({chunks}) c ANTI JOIN "
                             f"(SELECT time FROM hot WHERE {where}) h USING (time)")
            else:
                parts.append(hot)
        if unrolled is not None and self.chunk_dir is not None:
            res, a, b = unrolled
            a, b = clip(a, b)
            files = {f for (f,) in cur.execute(
                "SELECT DISTINCT file FROM unrolled WHERE sid = ? AND resolution = ? AND tmax >= ? AND tmin < ?",
                [sid, res, a, b]).fetchall()} if a < b else set()
            if files:
                paths = sql_list(self.chunk_dir / f for f in sorted(files))
                parts.append(f"SELECT time, value, quality FROM read_parquet({paths}) "
                             f"WHERE sid = {int(sid)} AND time >= {a} AND time < {b}")
        return " UNION ALL ".join(f"({p})" for p in parts) if parts else None

    def _in_snapshot(self, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """Run ``work`` in one read transaction: the manifest and the hot table of the same instant."""
        cur = self.cursor()
        cur.execute("BEGIN")
        try:
            out = work(cur)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return out

    async def envelope(self, key: str, start_ns: int, end_ns: int, buckets: int) -> Envelope:
        """Return min/mean/max per bucket: from the coarsest rollup that fills the buckets, raw elsewhere.

        The rollup covers whole rollup buckets inside ``[start, end)`` that
        hold no hot (uncompacted) reading of the series; raw readings cover
        the rest (the edges, and from the series' first hot reading on), so
        the buckets are continuous across the two and every point counts once.
        """
        width = bucket_width_ns(start_ns, end_ns, buckets)
        sid = self._sids.get(key)
        rows: list[tuple] = []
        if sid is not None:
            rows = await asyncio.to_thread(self._in_snapshot,
                                           lambda cur: self._envelope_rows(cur, sid, start_ns, end_ns, width))
        return Envelope(key, width, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                        [r[3] for r in rows])

    def _envelope_rows(self, cur: duckdb.DuckDBPyConnection, sid: int, start: int, end: int,
                       width: int) -> list[tuple]:
        res = rollup.choose(self._ready, width)
        raw_ranges = [(start, end)]
        rolled = ""
        unrolled = None
        if res is not None:
            first = -(-start // res) * res  # the first whole rollup bucket
            last = end // res * res  # the end of the last whole one
            raw_cutoff = self.policy.cutoff(None, self.now_ns())
            hot_min = cur.execute("SELECT min(time) FROM hot WHERE sid = ? AND time >= ? AND time < ?",
                                  [sid, max(first, raw_cutoff or first), last]).fetchone()[0]
            upto = last if hot_min is None else min(last, hot_min // res * res)
            if upto > first:
                raw_ranges = [(start, first), (upto, end)]
                unrolled = (res, first, upto)
                since = max(first, self.policy.cutoff(res, self.now_ns()) or first)
                rolled = (f"SELECT bucket AS time, vmin, vmax, vsum, n FROM {rollup.table(res)} "
                          f"WHERE sid = {int(sid)} AND bucket >= {int(since)} AND bucket < {int(upto)}")
        raw = self._raw_sql(cur, sid, raw_ranges, unrolled)
        parts = [p for p in (
            f"SELECT time, value AS vmin, value AS vmax, value AS vsum, 1 AS n FROM ({raw})" if raw else "",
            rolled) if p]
        if not parts:
            return []
        return cur.execute(
            f"SELECT {int(start)} + ((time - {int(start)}) // {int(width)}) * {int(width)} AS b, min(vmin), "
            f"sum(vsum) / sum(n), max(vmax) FROM ({' UNION ALL '.join(parts)}) GROUP BY b ORDER BY b").fetchall()

    async def raw(self, key: str, start_ns: int, end_ns: int) -> list[tuple[int, float, str]]:
        """Return the raw points of a range (for exports, backtests and tests)."""
        sid = self._sids.get(key)
        if sid is None:
            return []

        def work(cur: duckdb.DuckDBPyConnection) -> list[tuple]:
            sql = self._raw_sql(cur, sid, [(start_ns, end_ns)])
            return cur.execute(f"{sql} ORDER BY time").fetchall() if sql else []

        return await asyncio.to_thread(self._in_snapshot, work)

    async def count(self, key: str | None = None) -> int:
        """Return how many readings are stored (within the raw horizon)."""
        if key is None:
            return await asyncio.to_thread(self._in_snapshot, self._count_all)
        sid = self._sids.get(key)
        if sid is None:
            return 0

        def work(cur: duckdb.DuckDBPyConnection) -> int:
            sql = self._raw_sql(cur, sid, [_ALL_TIME])
            return int(cur.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]) if sql else 0

        return await asyncio.to_thread(self._in_snapshot, work)

    def _count_all(self, cur: duckdb.DuckDBPyConnection) -> int:
        cutoff = self.policy.cutoff(None, self.now_ns())
        since = int(cutoff) if cutoff is not None else _ALL_TIME[0]
        n = cur.execute(f"SELECT count(*) FROM (SELECT DISTINCT sid, time FROM hot WHERE time >= {since})"
                        ).fetchone()[0]
        files = [f for (f,) in cur.execute("SELECT file FROM chunks").fetchall()]
        if files and self.chunk_dir is not None:
            n += cur.execute(f"SELECT count(*) FROM read_parquet({sql_list(self.chunk_dir / f for f in files)}) c "
                             f"ANTI JOIN hot h USING (sid, time) WHERE c.time >= {since}").fetchone()[0]
        return int(n)

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        return self.cursor().execute(sql, params).fetchall()

    # -- maintenance ------------------------------------------------------------
    async def maintain(self) -> dict[str, Any]:
        """Run one maintenance pass now (compaction, rollup backfill, retention); return what it did."""
        return await self.maintenance.run_once()

    def _maintain_once(self) -> dict[str, Any]:
        """One pass, in a worker thread: compact, tidy, backfill rollups, expire, delete replaced files."""
        with self._maintain_lock:
            done: dict[str, Any] = {}
            if self.chunk_dir is not None:
                out = compaction.compact(self, self.compaction_hook)
                self._doom(out.replaced)
                done["compacted_rows"] = out.rows
                done["compaction_s"] = round(out.seconds, 3)
                self._doom(compaction.tidy(self, out.touched))
                con = self._con
                assert con is not None
                if rollup.backfill(con, self.chunk_dir, self.policy, self.write_lock):
                    self._ready = rollup.ready(con.cursor(), self.policy.rollups)
                done["clustered_rollups"] = len(rollup.recluster(con, self.policy.rollups, self.write_lock))
            expired = retention.enforce(self)
            self._doom(expired.chunks)
            done["expired_chunks"] = len(expired.chunks)
            self._delete_doomed(REPLACED_FILE_GRACE_S)
            if self.path is not None:
                t0 = time.perf_counter()
                with self.write_lock:  # fold the WAL into the file, so the space freed by compaction is reused
                    self.cursor().execute("CHECKPOINT")
                done["checkpoint_s"] = round(time.perf_counter() - t0, 3)
            self._measure_disk()
            return done

    def _doom(self, paths: list[Path]) -> None:
        now = time.monotonic()
        self._doomed += [(now, p) for p in paths]

    def _delete_doomed(self, grace_s: float) -> None:
        now = time.monotonic()
        keep = []
        for since, path in self._doomed:
            if now - since >= grace_s:
                path.unlink(missing_ok=True)
            else:
                keep.append((since, path))
        self._doomed = keep

    def _measure_disk(self) -> None:
        """Note the bytes on disk (DuckDB file, its WAL, the chunks) for health()."""
        if self.path is None or self.chunk_dir is None:
            self._disk = {}
            return
        db = sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + ".wal")) if p.exists())
        chunks = 0
        files = 0
        with os.scandir(self.chunk_dir) as it:
            for entry in it:
                if entry.name.endswith(".parquet"):
                    chunks += entry.stat().st_size
                    files += 1
        self._disk = {"bytes_on_disk": db + chunks, "database_bytes": db, "history_bytes": chunks,
                      "history_files": files}

    def health(self) -> dict[str, Any]:
        """Return the file, series, space used, retention per resolution, rollups and maintenance state."""
        return {
            "engine": self.engine_type,
            "path": str(self.path) if self.path else ":memory:",
            "series": len(self._series),
            "hot_rows": self._hot_estimate,
            **self._disk,
            "retention": " · ".join(f"{k} {v}" for k, v in self.policy.describe().items()),
            "rollups": {duration_label(r): ("ready" if r in self._ready else "backfilling")
                        for r in self.policy.rollups},
            "maintenance": self.maintenance.health(),
        }
