"""Bulk import: history written straight into an empty embedded store's chunks, as compaction would leave it.

Why a separate path: filling a store with a year of a thousand devices
(525 M readings) through ``write()`` takes hours on a small machine, nearly
all of it in the hot table's key and in compactions that move each reading
once more. Readings that are already complete (a benchmark's generated
fleet, an export from another system) can skip both: each partition (a
week) is written once as one chunk, which is what compaction followed by
:func:`~app.store.compaction.tidy` leaves for a partition that is over.

The import uses the store's own pieces, so the result is the store's
on-disk form and nothing else: :data:`~app.store.chunks.SCHEMA`,
:func:`~app.store.chunks.write_chunk` (sorted by series then time, the same
Parquet options), :func:`~app.store.chunks.chunk_stats` for the manifest,
:func:`~app.store.rollup.chunk_partials` and :func:`~app.store.rollup.replace`
for the rollups (including the ``unrolled`` list of series not worth rolling
up), and one transaction per chunk, after its file is fsynced, as compaction
commits. ``tests/test_bulk_import.py`` checks that a store built this way
answers every query as one fed through ``write()`` and compaction does.

Only into an empty store (no catalogue, chunks or hot rows): then the chunks
of a partition trivially never share a point, the invariant queries rely on.
A killed import leaves a readable store holding the partitions committed so
far (the chunk being written is an orphan, removed at the next open).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from app.model import SeriesInfo
from app.store import rollup
from app.store.chunks import PARTITION_NS, SCHEMA, chunk_stats, insert_rows, new_chunk_name, write_chunk
from app.store.history_policy import HistoryPolicy

if TYPE_CHECKING:
    from app.store.embedded import EmbeddedStore

RowsSql = Callable[[int, int], str]
"""``rows_sql(lo, hi)``: SQL of the readings with ``lo <= time < hi``: (sid, time, value, quality), sid an index."""


@dataclass
class Imported:
    """What an import wrote."""

    rows: int = 0
    chunks: int = 0
    seconds: float = 0.0


def import_history(data_dir: str | Path, series: Sequence[SeriesInfo], rows_sql: RowsSql, start_ns: int,
                   end_ns: int, *, policy: HistoryPolicy | None = None,
                   progress: Callable[[int, Imported], None] | None = None) -> Imported:
    """Write the readings of ``[start_ns, end_ns)`` into the empty store under ``data_dir``; return what was done.

    ``series[i]`` is the series whose readings ``rows_sql`` gives sid ``i``.
    ``policy`` must be the one the store will be opened with (its rollups
    are built here; another one is backfilled by the store's maintenance).
    The store must not be open (DuckDB locks its file to one process).
    """
    from app.store.embedded import EmbeddedStore

    layout = EmbeddedStore(data_dir, policy=policy)  # not opened: for its paths and policy only
    assert layout.path is not None and layout.chunk_dir is not None
    layout.chunk_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = Imported()
    con = duckdb.connect(str(layout.path))
    try:
        con.execute(SCHEMA)
        for table in ("catalogue", "chunks", "hot"):
            if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
                raise ValueError(f"bulk import needs an empty store; {layout.path} has rows in {table}")
        rollup.ensure_tables(con, layout.policy.rollups)  # no history yet: the rollups are ready at once
        con.executemany("INSERT INTO catalogue VALUES (?, ?, ?, ?, ?)",
                        [(sid, s.device, s.metric, s.unit, json.dumps(s.tags, sort_keys=True))
                         for sid, s in enumerate(series)])
        for part in range(start_ns // PARTITION_NS, (end_ns - 1) // PARTITION_NS + 1):
            lo, hi = max(start_ns, part * PARTITION_NS), min(end_ns, (part + 1) * PARTITION_NS)
            rows = _import_part(con, layout, part, f"SELECT * FROM ({rows_sql(lo, hi)}) "
                                                   f"WHERE time >= {int(lo)} AND time < {int(hi)}")
            if rows:
                out.rows += rows
                out.chunks += 1
            if progress:
                progress(part, out)
        rollup.cluster(con, layout.policy.rollups)  # by series, not by chunk: a one-series read prunes (rollup.py)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    out.seconds = time.perf_counter() - t0
    return out


def _import_part(con: duckdb.DuckDBPyConnection, layout: EmbeddedStore, part: int, select_sql: str) -> int:
    """Write one partition's readings as one chunk and commit it with its manifest, rollups and latest values."""
    assert layout.chunk_dir is not None
    path = layout.chunk_dir / new_chunk_name(part)
    write_chunk(con, select_sql, path)
    try:
        stats = chunk_stats(con, path, part)
        if not stats.num_rows:
            path.unlink()
            return 0
        parts = rollup.chunk_partials(con, [path], layout.policy)
        rows = sum(stats.column("n").to_pylist())
        con.execute("BEGIN")
        try:
            con.execute("INSERT INTO chunks VALUES (?, ?, ?)", [path.name, part, rows])
            insert_rows(con, "chunk_series", stats)
            rollup.replace(con, parts, [])
            # Partitions come oldest first, so a later one's last value replaces an earlier one's.
            con.execute("INSERT OR REPLACE INTO latest SELECT sid, max(time), arg_max(value, time), "
                        f"arg_max(quality, time) FROM read_parquet('{path}') GROUP BY sid")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return rows
