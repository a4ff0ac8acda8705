"""Rollups: min, max, sum and count per series and bucket, at each configured resolution.

Each resolution has a DuckDB table ``rollup_<seconds>s`` of *partial*
aggregates: one row per (series, bucket) per history chunk the readings are
in, tagged with the chunk. Since the chunks of a partition never share a point,
partials of the same bucket combine exactly (min of mins, sum of sums, sum of
counts), which the envelope query does anyway when it groups rollup buckets
into its wider ones. A compaction that writes a chunk writes its partials in
the same transaction as the manifest, and one that replaces chunks (late
data, a replayed spool overwriting points, a merge) deletes theirs: so a late
reading fixes its bucket and a duplicate is counted once. The hot table (not
yet compacted) is never rolled up; queries read it raw.

A rollup is only worth storing where it is smaller than the readings: a
series read once a minute has one reading per 1-minute bucket, and its 1m
rollup would double its size for nothing. So, per chunk and series, a
resolution whose buckets would hold fewer than :data:`MIN_READINGS_PER_BUCKET`
readings on average is not stored; the chunk and series are listed in the
``unrolled`` table instead, and queries read those readings raw (as cheap as
the rollup would have been). This holds only while the raw readings live at
least as long as the rollup; when ``retention`` expires raw first, every
rollup is stored (and a retention changed that way makes the maintenance
task store the rollups it had left out).

A resolution added to the config on a store that already has history is
*backfilled* chunk by chunk by the maintenance task, and not used by queries
until it is complete (``rollup_state.ready``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from app.store.chunks import chunk_id, insert_rows
from app.store.history_policy import NS, HistoryPolicy

log = logging.getLogger(__name__)

MIN_READINGS_PER_BUCKET = 2.0
"""Below this many readings per bucket (per chunk and series), a rollup is not stored: raw is as cheap to read."""


def table(resolution: int) -> str:
    """Return the table of a resolution (ns): ``rollup_60s``."""
    return f"rollup_{resolution // NS}s"


def ensure_tables(con: duckdb.DuckDBPyConnection, resolutions: Sequence[int]) -> None:
    """Create each resolution's table; a new one is ready at once on an empty store, else after its backfill."""
    has_history = con.execute("SELECT count(*) FROM chunks").fetchall()[0][0] > 0
    for res in resolutions:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table(res)} (sid INTEGER, bucket BIGINT, vmin DOUBLE, "
                    "vmax DOUBLE, vsum DOUBLE, n BIGINT, chunk BIGINT)")
        con.execute("INSERT INTO rollup_state SELECT ?, ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM rollup_state WHERE resolution = ?)", [res, not has_history, res])
        # A store from before clustering counts all its partials as appended: clustered at its next pass.
        # Rows inserted, never updated: an UPDATE's old version held by a query's open snapshot made the pass's
        # CHECKPOINT refuse ("other write transactions active"), where inserts and deletes do not.
        con.execute("CREATE TABLE IF NOT EXISTS rollup_appended (resolution BIGINT, n BIGINT)")
        con.execute(f"INSERT INTO rollup_appended SELECT ?, (SELECT count(*) FROM {table(res)}) WHERE NOT EXISTS "
                    "(SELECT 1 FROM rollup_appended WHERE resolution = ?)", [res, res])


def ready(con: duckdb.DuckDBPyConnection, resolutions: Sequence[int]) -> list[int]:
    """Return the configured resolutions complete enough to answer queries, finest first."""
    done = {r for (r,) in con.execute("SELECT resolution FROM rollup_state WHERE ready").fetchall()}
    return [r for r in resolutions if r in done]


def store_all(policy: HistoryPolicy, resolution: int) -> bool:
    """Return whether every partial of ``resolution`` must be stored: raw readings expire before it does."""
    raw, rolled = policy.horizon(None), policy.horizon(resolution)
    return raw is not None and (rolled is None or raw < rolled)


def partials(cur: duckdb.DuckDBPyConnection, path: Path, resolution: int,
             keep_all: bool) -> tuple[pa.Table, pa.Table]:
    """Return a chunk's partials at a resolution, and its ``unrolled`` rows (series not worth rolling up).

    Both as Arrow tables, inserted in one statement each by :func:`replace`.
    """
    chunk = chunk_id(path.name)
    # Which series are worth it first (readings per non-empty bucket), then the partials of those only: a
    # 1-minute series' 1m partials, one per reading and all thrown away, were most of a compaction's work.
    # Non-empty buckets are counted (DISTINCT) only for series whose span in buckets leaves it in doubt.
    src = f"read_parquet('{path}')"
    spans = f"(tmax // {resolution} - tmin // {resolution} + 1)"
    if keep_all:
        worth = f"SELECT sid, true AS keep, min(time) AS tmin, max(time) AS tmax FROM {src} GROUP BY sid"
    else:
        t = MIN_READINGS_PER_BUCKET
        worth = (f"WITH s AS (SELECT sid, count(*) AS n, min(time) AS tmin, max(time) AS tmax FROM {src} "
                 "GROUP BY sid), "
                 f"u AS (SELECT sid, count(DISTINCT time // {resolution}) AS b FROM {src} SEMI JOIN "
                 f"(SELECT sid FROM s WHERE n < {t} * {spans}) USING (sid) GROUP BY sid) "
                 f"SELECT sid, n >= {t} * coalesce(b, {spans}) AS keep, tmin, tmax FROM s LEFT JOIN u USING (sid)")
    cur.execute(f"CREATE OR REPLACE TEMP TABLE worth AS {worth}")
    rows = cur.sql(f"SELECT sid, time // {resolution} * {resolution} AS bucket, min(value) AS vmin, "
                   f"max(value) AS vmax, sum(value) AS vsum, count(*) AS n, {chunk}::BIGINT AS chunk "
                   f"FROM read_parquet('{path}') SEMI JOIN (SELECT sid FROM worth WHERE keep) USING (sid) "
                   "GROUP BY sid, bucket ORDER BY sid, bucket").to_arrow_table()
    name = path.name.replace("'", "''")
    unrolled = cur.sql(f"SELECT {chunk}::BIGINT AS chunk, '{name}' AS file, sid, {int(resolution)}::BIGINT AS "
                       "resolution, tmin, tmax FROM worth WHERE NOT keep ORDER BY sid").to_arrow_table()
    cur.execute("DROP TABLE temp.worth")
    return rows, unrolled


def chunk_partials(cur: duckdb.DuckDBPyConnection, paths: Sequence[Path],
                   policy: HistoryPolicy) -> dict[int, tuple[list[pa.Table], list[pa.Table]]]:
    """Return, per resolution of ``policy``, the partials and ``unrolled`` rows of some new chunks."""
    out: dict[int, tuple[list[pa.Table], list[pa.Table]]] = {}
    for res in policy.rollups:
        tables, unrolled = [], []
        for path in paths:
            t, u = partials(cur, path, res, store_all(policy, res))
            tables.append(t)
            unrolled.append(u)
        out[res] = (tables, unrolled)
    return out


def replace(cur: duckdb.DuckDBPyConnection, parts: dict[int, tuple[list[pa.Table], list[pa.Table]]],
            replaced_files: Sequence[str]) -> None:
    """In the caller's transaction: drop the partials of replaced chunks, add those of new ones.

    Runs while writes wait (the store's write lock): one statement per table, never one per row.
    """
    gone = [chunk_id(f) for f in replaced_files]
    if gone:
        cur.execute("DELETE FROM unrolled WHERE list_contains(?, chunk)", [gone])
    for res, (tables, unrolled) in parts.items():
        if gone:
            cur.execute(f"DELETE FROM {table(res)} WHERE list_contains(?, chunk)", [gone])
        for t in tables:
            insert_rows(cur, table(res), t)
        appended = sum(t.num_rows for t in tables)
        if appended:
            cur.execute("INSERT INTO rollup_appended VALUES (?, ?)", [res, appended])
        for u in unrolled:
            insert_rows(cur, "unrolled", u)


CLUSTER_MIN_APPENDED = 122_880
"""Partials appended since a table was last clustered before it is again: at least one DuckDB row group..."""
CLUSTER_FRACTION = 8
"""...and at least 1/8 of the table: a year of 1,000 devices' 1h partials is re-sorted every ~6 weeks."""


def cluster(cur: duckdb.DuckDBPyConnection, resolutions: Sequence[int]) -> None:
    """Rewrite each rollup table ordered by (sid, bucket), in one transaction: one series' rows in ~1 row group.

    Partials are appended chunk by chunk, each chunk's rows ordered by
    series, so every DuckDB row group (122,880 rows) spans most series and a
    one-series filter skips little: a year of 1,000 devices' 1h partials
    (8.7 M rows) took 12.7 ms CPU to filter, 2.5 ms once clustered
    (``bench/rowgroup.py --rollup-only``). Sorting that table takes ~2-4 s,
    so it is done once a bulk import is over, and by the maintenance pass
    when enough has been appended (:func:`recluster`), not per compaction.
    """
    cur.execute("BEGIN")
    try:
        for res in resolutions:
            t = table(res)
            cur.execute(f"CREATE TABLE {t}_clustered AS SELECT * FROM {t} ORDER BY sid, bucket, chunk")
            cur.execute(f"DROP TABLE {t}")
            cur.execute(f"ALTER TABLE {t}_clustered RENAME TO {t}")
            cur.execute("DELETE FROM rollup_appended WHERE resolution = ?", [res])
            cur.execute("INSERT INTO rollup_appended VALUES (?, 0)", [res])
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def recluster(con: duckdb.DuckDBPyConnection, resolutions: Sequence[int], lock: object) -> list[int]:
    """Cluster the rollup tables enough has been appended to since they last were; return their resolutions.

    Under the store's write lock (compactions append and delete partials
    under it): writes wait while a table is sorted, ~2-4 s for a year of
    1,000 devices, once every ~6 weeks of it.
    """
    cur = con.cursor()
    try:
        due = []
        for res in resolutions:
            total = cur.execute(f"SELECT count(*) FROM {table(res)}").fetchall()[0][0]
            appended = cur.execute("SELECT sum(n) FROM rollup_appended WHERE resolution = ?", [res]).fetchall()[0][0]
            if appended is not None and appended >= max(CLUSTER_MIN_APPENDED, total // CLUSTER_FRACTION):
                due.append(res)
        if due:
            with lock:  # type: ignore[attr-defined]
                cluster(cur, due)
        return due
    finally:
        cur.close()  # an open cursor's last result keeps its transaction: the pass's CHECKPOINT would refuse


def choose(resolutions: Sequence[int], width_ns: int) -> int | None:
    """Return the coarsest ready resolution that still fills buckets of ``width_ns`` (None: read raw)."""
    fit = [r for r in resolutions if r <= width_ns]
    return max(fit) if fit else None


def backfill(con: duckdb.DuckDBPyConnection, directory: Path, policy: HistoryPolicy, lock: object) -> list[int]:
    """Build missing partials; return the resolutions worked on.

    Two cases: a resolution not ready yet (new in the config, or a migrated
    store) gets the partials of every chunk; a resolution that must now be
    stored everywhere (retention changed so raw readings expire before it)
    gets those of the chunks listed as ``unrolled`` for it. Runs in the
    maintenance pass (no compaction meanwhile); each chunk is its own
    transaction, so an interrupted backfill resumes cleanly.
    """
    cur = con.cursor()
    done = set(ready(con, policy.rollups))
    work: dict[int, list[str]] = {}
    for res in policy.rollups:
        if res not in done:
            work[res] = [f for (f,) in cur.execute("SELECT file FROM chunks ORDER BY part").fetchall()]
        elif store_all(policy, res):
            files = [f for (f,) in cur.execute("SELECT DISTINCT file FROM unrolled WHERE resolution = ?",
                                               [res]).fetchall()]
            if files:
                work[res] = files
    for res, files in work.items():
        for name in files:
            rows, unrolled = partials(cur, directory / name, res, store_all(policy, res))
            with lock:  # type: ignore[attr-defined]
                cur.execute("BEGIN")
                try:
                    cur.execute(f"DELETE FROM {table(res)} WHERE chunk = ?", [chunk_id(name)])
                    cur.execute("DELETE FROM unrolled WHERE chunk = ? AND resolution = ?", [chunk_id(name), res])
                    replace(cur, {res: ([rows], [unrolled])}, [])
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        cur.execute("UPDATE rollup_state SET ready = true WHERE resolution = ?", [res])
        log.info("embedded store: rollup %s built for %d chunks", table(res), len(files))
    return list(work)
