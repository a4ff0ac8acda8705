"""The embedded store's layout: a small DuckDB file for what changes, Parquet chunks for history.

``vigie.duckdb`` holds the series catalogue (each series gets an integer
``sid``), the latest value of each series (so start-up reads one row per
series, never the history), the *hot* table (readings not yet compacted,
each tagged with the write's sequence number ``seq``: a point written again
is another row, and the one with the highest ``seq`` is its value), the
rollup tables, and the **manifest** of history chunks.

The hot table has no key on purpose: its primary-key index made deleting
a compaction's rows (300,000) cost 1.5 s of a transaction writes wait for,
and halved the insert rate; without it the delete takes a few ms. Readers
and the compaction keep the last value of a point with
``arg_max_null(value, seq)`` over the few rows the hot table holds.

A chunk is a Parquet file ``history/raw/<part>-<id>.parquet`` holding readings
of many series within one partition (a week, :data:`PARTITION_NS`), sorted by
series then time, ZSTD-compressed
(2.5 to 7 bytes a reading for sampled levels), in row groups small enough
that a query for one series skips the others' by their statistics. The
manifest (``chunks``, and ``chunk_series``: each chunk's time range per
series) says which files are live; a query lists, from it, only the chunks
that hold the series in the range, so its cost follows that series' rows.

Invariant: the chunks of one partition never share a point (series and time), so
a query needs no de-duplication between chunks, only between the chunks and
the hot table, whose rows win (they were written last).

Crash safety: a chunk is written under a new name and fsynced before one
DuckDB transaction adds it to the manifest (and removes the hot rows and the
chunks it replaces); a file that no committed manifest names is an orphan of
a crash and is deleted at open, a file the manifest names is never
rewritten. Replaced files are deleted only after a grace period, since a
query that read the manifest just before may still be reading them.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from app.store.history_policy import DAY_NS

log = logging.getLogger(__name__)

PARTITION_NS = 7 * DAY_NS
"""History is partitioned by week (from the epoch, a Thursday): a month's query opens a handful of files.

Days made a month 30+ files, and opening a Parquet file costs DuckDB ~0.3 ms
here; a week of a large site is still a manageable rewrite when late data
lands in it (100 devices at one reading a minute: 1 M rows, ~1 s).
"""

ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group: ~13 series-weeks of one point a minute (10,080 rows each).

DuckDB's cost of a one-series scan is per row group more than per row, and
ZSTD and dictionaries restart at each group. Measured with
``bench/rowgroup.py`` (bench/README.md, History at scale): at 1,000 devices
(a weekly chunk of 10 M rows) 131,072-row groups against 16,384 cut a
one-series month's query from 58 to 19 ms CPU, a day's from 23 to 14 ms, and
the store from 6.5 to 3.2 bytes a reading; at 5 and 50 devices the queries
are as fast or faster and the store smaller too.
"""

PARQUET_OPTIONS = f"FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, PARQUET_VERSION v2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogue (
    sid INTEGER PRIMARY KEY, device VARCHAR, metric VARCHAR, unit VARCHAR, tags VARCHAR
);
CREATE TABLE IF NOT EXISTS latest (sid INTEGER PRIMARY KEY, time BIGINT, value DOUBLE, quality VARCHAR);
CREATE TABLE IF NOT EXISTS hot (sid INTEGER, time BIGINT, value DOUBLE, quality VARCHAR, seq BIGINT);
CREATE TABLE IF NOT EXISTS chunks (file VARCHAR PRIMARY KEY, part INTEGER, rows BIGINT);
CREATE TABLE IF NOT EXISTS chunk_series (
    file VARCHAR, part INTEGER, sid INTEGER, tmin BIGINT, tmax BIGINT, n BIGINT
);
CREATE TABLE IF NOT EXISTS rollup_state (resolution BIGINT PRIMARY KEY, ready BOOLEAN);
CREATE TABLE IF NOT EXISTS unrolled (
    chunk BIGINT, file VARCHAR, sid INTEGER, resolution BIGINT, tmin BIGINT, tmax BIGINT
);
"""


def part_of(time_ns: int) -> int:
    """Return the number of the partition (a week since the epoch) a reading's time lives in."""
    return time_ns // PARTITION_NS


def new_chunk_name(part: int) -> str:
    """Return a fresh chunk file name for partition ``part`` (never reused, so a live file is never overwritten)."""
    return f"{part}-{uuid.uuid4().hex[:16]}.parquet"


def chunk_id(name: str) -> int:
    """Return the number that tags a chunk's rollup partials (60 bits of its random name)."""
    return int(name.split("-", 1)[1][:15], 16)


def sql_list(paths: Iterable[Path]) -> str:
    """Return a DuckDB list literal of file paths (ours, but quoted properly all the same)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk, then its directory entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a new or removed file name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_chunk(cur: duckdb.DuckDBPyConnection, select_sql: str, path: Path) -> None:
    """Write the rows of ``select_sql`` (sid, time, value, quality) as a chunk sorted by series and time."""
    cur.execute(f"COPY (SELECT sid, time, value, quality FROM ({select_sql}) ORDER BY sid, time) "
                f"TO '{path}' ({PARQUET_OPTIONS})")
    fsync_file(path)


def chunk_stats(cur: duckdb.DuckDBPyConnection, path: Path, part: int) -> pa.Table:
    """Return the manifest rows of a written chunk: (file, part, sid, tmin, tmax, n) per series, as Arrow.

    Arrow, so that they go into ``chunk_series`` in one statement
    (:func:`insert_rows`): ``executemany`` runs one statement per row, and a
    thousand series took seconds inside the transaction writes wait for.
    """
    name = path.name.replace("'", "''")
    return cur.sql(f"SELECT '{name}' AS file, {int(part)}::INTEGER AS part, sid, min(time) AS tmin, "
                   f"max(time) AS tmax, count(*) AS n FROM read_parquet('{path}') GROUP BY sid ORDER BY sid"
                   ).to_arrow_table()


def insert_rows(cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append an Arrow table's rows (its columns in the table's order) to a DuckDB table in one statement."""
    if rows.num_rows:
        cur.register("_vigie_rows", rows)
        try:
            cur.execute(f"INSERT INTO {table} SELECT * FROM _vigie_rows")
        finally:
            cur.unregister("_vigie_rows")


def remove_orphans(con: duckdb.DuckDBPyConnection, directory: Path) -> int:
    """Delete chunk files no committed manifest names (a crash between writing and committing); return how many.

    Also fail loudly if the manifest names a file that is missing: that is
    lost history, not something to paper over.
    """
    live = {f for (f,) in con.execute("SELECT file FROM chunks").fetchall()}
    present = {p.name for p in directory.glob("*.parquet")}
    missing = live - present
    if missing:
        raise RuntimeError(f"embedded store: {len(missing)} history chunks named by the manifest are missing "
                           f"from {directory} (e.g. {sorted(missing)[0]})")
    orphans = present - live
    for name in orphans:
        (directory / name).unlink(missing_ok=True)
    for tmp in directory.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    if orphans:
        fsync_dir(directory)
        log.info("embedded store: removed %d history chunks left by an interrupted compaction", len(orphans))
    return len(orphans)
