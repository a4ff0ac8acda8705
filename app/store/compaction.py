"""Compaction: moves the hot table's readings into history chunks, and keeps each partition's chunk count low.

One compaction takes a snapshot of the hot table (every row up to a write
sequence number ``S``) and, for each partition (a week) it touches:

- **append**, when every series' new readings are later than what the partition's
  chunks hold for it (live data arriving in order): the new rows become one
  more chunk, and their rollup partials are appended;
- **rewrite**, otherwise (late data, a replayed spool, a corrected point):
  the partition's chunks and the new rows are merged into one chunk, new
  rows winning, and its rollup partials replace those of the former chunks.

Then one transaction adds the new chunks to the manifest, drops the
replaced ones, swaps the rollup partials and deletes the hot rows with a
sequence number up to ``S``: a point written again during the compaction got
a newer number, stays hot, and still wins. A kill at any moment leaves
either the old state (the new files are orphans, removed at open) or the new
one. Writes wait for that transaction only, not for the Parquet writing.

:func:`tidy` merges a partition's smallest chunks when it has many (a live
partition gets one chunk per compaction), and all the chunks of a partition
once it is over, recomputing the merged chunk's partials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.store import rollup
from app.store.chunks import PARTITION_NS, chunk_stats, insert_rows, new_chunk_name, sql_list, write_chunk

if TYPE_CHECKING:
    from app.store.embedded import EmbeddedStore

log = logging.getLogger(__name__)

MAX_CHUNKS_PER_PART = 8
"""A partition with this many chunks gets its smallest half merged (size-tiered: each row is rewritten ~log times)."""


@dataclass
class Outcome:
    """What one compaction did (for health() and tests)."""

    rows: int = 0
    appended: int = 0
    rewritten: int = 0
    dropped_expired: int = 0
    touched: set[int] = field(default_factory=set)
    replaced: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def compact(store: EmbeddedStore, hook: Callable[[str], None] | None = None) -> Outcome:
    """Move every hot row written so far into history chunks; return what was done.

    ``hook(phase)`` is called with ``"start"``, ``"written"`` once the new
    chunks are on disk (not yet committed) and ``"committed"`` after the
    transaction: the crash tests stop the process there.
    """
    if hook:
        hook("start")
    t0 = time.perf_counter()
    out = Outcome()
    cur = store.cursor()
    directory = store.chunk_dir
    raw_cutoff = store.policy.cutoff(None, store.now_ns())
    cur.execute("BEGIN")  # one snapshot for the sequence number and the rows
    seq = cur.execute("SELECT max(seq) FROM hot").fetchall()[0][0]
    if seq is None:
        cur.execute("COMMIT")
        return out
    # The hot table has no key (an index made the delete below cost seconds while writes waited): a point
    # written again is a second row, and the one written last (highest seq) is the point's value.
    snap = cur.sql(f"SELECT sid, time, arg_max_null(value, seq) AS value, arg_max_null(quality, seq) AS quality, "
                   f"time // {PARTITION_NS} AS part FROM hot WHERE seq <= {int(seq)} GROUP BY sid, time"
                   ).to_arrow_table()
    cur.execute("COMMIT")
    out.rows = snap.num_rows
    cur.register("snap", snap)
    expired = ""
    if raw_cutoff is not None:
        # Late readings of a partition already expired whole are not kept (retention removed its chunks;
        # its rollups are final). Readings of the partition straddling the horizon are, and feed its rollups.
        kept_from = raw_cutoff // PARTITION_NS * PARTITION_NS
        out.dropped_expired = cur.execute("SELECT count(*) FROM snap WHERE time < ?", [kept_from]).fetchall()[0][0]
        expired = f" AND time >= {int(kept_from)}"
    new_per_part = _per_part(cur, expired)
    existing = _existing(cur, list(new_per_part))
    new_chunks: list[tuple[int, Path]] = []
    replaced_files: list[str] = []
    written: list[Path] = []
    try:
        for part, new_min in new_per_part.items():
            files = existing.get(part, {})
            last: dict[int, int] = {}
            for per_sid in files.values():
                for sid, tmax in per_sid.items():
                    last[sid] = max(last.get(sid, tmax), tmax)
            overlaps = any(sid in last and tmin <= last[sid] for sid, tmin in new_min.items())
            path = directory / new_chunk_name(part)
            new_rows = f"SELECT sid, time, value, quality FROM snap WHERE part = {int(part)}{expired}"
            if overlaps:
                old = sql_list(directory / f for f in files)
                write_chunk(cur, f"{new_rows} UNION ALL SELECT o.sid, o.time, o.value, o.quality "
                                 f"FROM read_parquet({old}) o ANTI JOIN ({new_rows}) n USING (sid, time)", path)
                replaced_files += list(files)
                out.rewritten += 1
            else:
                write_chunk(cur, new_rows, path)
                out.appended += 1
            written.append(path)
            new_chunks.append((part, path))
            out.touched.add(part)
        stats = [(part, path, chunk_stats(cur, path, part)) for part, path in new_chunks]
        parts = rollup.chunk_partials(cur, [path for _, path in new_chunks], store.policy)
        if hook:
            hook("written")
        with store.write_lock:  # writes wait for this transaction: only inserts of prepared rows, and deletes
            cur.execute("BEGIN")
            try:
                for part, path, table in stats:
                    rows = sum(table.column("n").to_pylist())
                    cur.execute("INSERT INTO chunks VALUES (?, ?, ?)", [path.name, part, rows])
                    insert_rows(cur, "chunk_series", table)
                if replaced_files:
                    files_sql = sql_list(replaced_files)
                    cur.execute(f"DELETE FROM chunk_series WHERE list_contains({files_sql}, file)")
                    cur.execute(f"DELETE FROM chunks WHERE list_contains({files_sql}, file)")
                rollup.replace(cur, parts, replaced_files)
                cur.execute("DELETE FROM hot WHERE seq <= ?", [seq])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            store.hot_rows_left(cur.execute("SELECT count(*) FROM hot").fetchall()[0][0])
    except BaseException:
        for path in written:  # never named by the manifest: safe to remove
            path.unlink(missing_ok=True)
        raise
    finally:
        cur.unregister("snap")
    if hook:
        hook("committed")
    out.replaced = [directory / f for f in replaced_files]
    out.seconds = time.perf_counter() - t0
    return out


def _per_part(cur, expired: str) -> dict[int, dict[int, int]]:
    """Return, per partition of the snapshot, each series' earliest new time."""
    out: dict[int, dict[int, int]] = {}
    for part, sid, tmin in cur.execute(f"SELECT part, sid, min(time) FROM snap WHERE true{expired} "
                                      "GROUP BY part, sid").fetchall():
        out.setdefault(part, {})[sid] = tmin
    return out


def _existing(cur, parts: list[int]) -> dict[int, dict[str, dict[int, int]]]:
    """Return, per partition, per live chunk file, each series' latest time in it."""
    out: dict[int, dict[str, dict[int, int]]] = {}
    if not parts:
        return out
    for file, part, sid, tmax in cur.execute(
            "SELECT file, part, sid, tmax FROM chunk_series WHERE list_contains(?, part)", [parts]).fetchall():
        out.setdefault(part, {}).setdefault(file, {})[sid] = tmax
    return out


CLOSED_AFTER_NS = 3600 * 10**9
"""A partition whose end is this far in the past is over: its chunks are merged into one."""


def tidy(store: EmbeddedStore, touched: set[int] | frozenset[int] = frozenset()) -> list[Path]:
    """Merge chunks: the smallest half of a partition with too many, all of a partition that is over.

    A partition the last compaction wrote to (``touched``) is not merged
    whole yet, even if over: a bulk import of old history fills a partition
    over several compactions, and merging it at each would rewrite it each
    time. Return the replaced files (deleted later). A pure union (the chunks
    of a partition never share a point); the merged chunk's rollup partials
    replace theirs.
    """
    cur = store.cursor()
    over = (store.now_ns() - CLOSED_AFTER_NS) // PARTITION_NS  # partitions before this one are over
    replaced: list[Path] = []
    todo = cur.execute(
        "SELECT part, count(*) AS n FROM chunks GROUP BY part HAVING n >= ? OR (n > 1 AND part < ?) ORDER BY part",
        [MAX_CHUNKS_PER_PART, over]).fetchall()
    for part, n in todo:
        if part >= over or part in touched:
            if n < MAX_CHUNKS_PER_PART:
                continue
            files = [f for (f,) in cur.execute("SELECT file FROM chunks WHERE part = ? ORDER BY rows, file",
                                               [part]).fetchall()][: MAX_CHUNKS_PER_PART // 2]
        else:
            files = [f for (f,) in cur.execute("SELECT file FROM chunks WHERE part = ?", [part]).fetchall()]
        replaced += _merge(store, cur, part, files)
    return replaced


def _merge(store: EmbeddedStore, cur, part: int, files: list[str]) -> list[Path]:
    """Replace some chunks of a partition by one; return the replaced paths."""
    directory = store.chunk_dir
    path = directory / new_chunk_name(part)
    write_chunk(cur, f"SELECT * FROM read_parquet({sql_list(directory / f for f in files)})", path)
    try:
        stats = chunk_stats(cur, path, part)
        parts = rollup.chunk_partials(cur, [path], store.policy)
        with store.write_lock:
            cur.execute("BEGIN")
            try:
                rows = sum(stats.column("n").to_pylist())
                cur.execute("INSERT INTO chunks VALUES (?, ?, ?)", [path.name, part, rows])
                insert_rows(cur, "chunk_series", stats)
                cur.execute("DELETE FROM chunk_series WHERE list_contains(?, file)", [files])
                cur.execute("DELETE FROM chunks WHERE list_contains(?, file)", [files])
                rollup.replace(cur, parts, files)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return [directory / f for f in files]
