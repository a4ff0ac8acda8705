"""Rollups: min, max, sum and count per series and bucket, at each configured resolution.

Each resolution has a DuckDB table ``rollup_<seconds>s`` of *partial*
aggregates: one row per (series, bucket) per chunk the rows came from, with
the chunk's day. Since the chunks of a day never share a point, partials of
the same bucket combine exactly (min of mins, sum of sums, sum of counts),
which the envelope query does anyway when it groups buckets into its wider
ones. So a compaction that appends a chunk appends its partials, and one that
rewrites a day (late data, a replayed spool overwriting points) replaces the
day's partials with those of the rewritten day: a late reading fixes its
bucket, a duplicate is counted once. Partials are written in the same
transaction as the manifest, so the rollups always match the history chunks;
the hot table (not yet compacted) is never rolled up, and queries read it raw.

A resolution added to the config on a store that already has history is
*backfilled* day by day by the maintenance task, and not used by queries
until it is complete (``rollup_state.ready``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from app.store.chunks import sql_list
from app.store.history_policy import NS

log = logging.getLogger(__name__)


def table(resolution: int) -> str:
    """Return the table of a resolution (ns): ``rollup_60s``."""
    return f"rollup_{resolution // NS}s"


def ensure_tables(con: duckdb.DuckDBPyConnection, resolutions: Sequence[int]) -> None:
    """Create each resolution's table; a new one is ready at once on an empty store, else after its backfill."""
    has_history = con.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
    for res in resolutions:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table(res)} (sid INTEGER, bucket BIGINT, vmin DOUBLE, "
                    "vmax DOUBLE, vsum DOUBLE, n BIGINT, day INTEGER)")
        con.execute("INSERT INTO rollup_state SELECT ?, ? WHERE NOT EXISTS "
                    "(SELECT 1 FROM rollup_state WHERE resolution = ?)", [res, not has_history, res])


def ready(con: duckdb.DuckDBPyConnection, resolutions: Sequence[int]) -> list[int]:
    """Return the configured resolutions complete enough to answer queries, finest first."""
    done = {r for (r,) in con.execute("SELECT resolution FROM rollup_state WHERE ready").fetchall()}
    return [r for r in resolutions if r in done]


def partials(cur: duckdb.DuckDBPyConnection, files: Iterable[Path], resolution: int, day: int) -> pa.Table:
    """Return the partial aggregates of some chunk files at a resolution, tagged with their day."""
    return cur.sql(
        f"SELECT sid, time // {resolution} * {resolution} AS bucket, min(value) AS vmin, max(value) AS vmax, "
        f"sum(value) AS vsum, count(*) AS n, {int(day)}::INTEGER AS day "
        f"FROM read_parquet({sql_list(files)}) GROUP BY ALL").to_arrow_table()


def choose(resolutions: Sequence[int], width_ns: int) -> int | None:
    """Return the coarsest ready resolution that still fills buckets of ``width_ns`` (None: read raw)."""
    fit = [r for r in resolutions if r <= width_ns]
    return max(fit) if fit else None


def backfill(con: duckdb.DuckDBPyConnection, directory: Path, resolutions: Sequence[int],
             lock: object) -> list[int]:
    """Build the partials of resolutions not ready yet from every history chunk; return those completed.

    Runs under the maintenance lock (no compaction meanwhile); each day is its
    own transaction (``DELETE`` then ``INSERT`` of the day's partials), so an
    interrupted backfill resumes cleanly.
    """
    done = set(ready(con, resolutions))
    todo = [r for r in resolutions if r not in done]
    if not todo:
        return []
    cur = con.cursor()
    days: dict[int, list[Path]] = {}
    for file, day in cur.execute("SELECT file, day FROM chunks ORDER BY day").fetchall():
        days.setdefault(day, []).append(directory / file)
    for res in todo:
        for day, files in days.items():
            part = partials(cur, files, res, day)
            with lock:  # type: ignore[attr-defined]
                cur.execute("BEGIN")
                try:
                    cur.execute(f"DELETE FROM {table(res)} WHERE day = ?", [day])
                    cur.register("part", part)
                    cur.execute(f"INSERT INTO {table(res)} SELECT * FROM part")
                    cur.unregister("part")
                    cur.execute("COMMIT")
                except Exception:
                    cur.execute("ROLLBACK")
                    raise
        con.execute("UPDATE rollup_state SET ready = true WHERE resolution = ?", [res])
        log.info("embedded store: rollup %s backfilled over %d days", table(res), len(days))
    return todo
