"""Retention: each resolution's history older than its horizon is removed.

Exact as seen by every query: raw reads never return a reading older than
``now - horizon(raw)``, rollup reads no bucket starting before
``now - horizon(resolution)``. On disk, rollup rows and hot rows are deleted
exactly; raw history is deleted a whole partition (a week) at a time, once
all of it is past the horizon (the partition straddling it stays, hidden from
queries, until it is past too), since rewriting it at every pass would cost
more than the space it saves. Rollups outlive the raw readings they were made
from: that is their purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.store import rollup
from app.store.chunks import PARTITION_NS

if TYPE_CHECKING:
    from app.store.embedded import EmbeddedStore

log = logging.getLogger(__name__)


@dataclass
class Expired:
    """What one retention pass removed."""

    chunks: list[Path] = field(default_factory=list)
    hot_rows: int = 0
    rollup_rows: dict[int, int] = field(default_factory=dict)


def enforce(store: EmbeddedStore) -> Expired:
    """Remove what is past its horizon at every resolution; return what went (files to delete later)."""
    out = Expired()
    now = store.now_ns()
    cur = store.cursor()
    raw_cutoff = store.policy.cutoff(None, now)
    with store.write_lock:
        cur.execute("BEGIN")
        try:
            if raw_cutoff is not None:
                last_whole_part = raw_cutoff // PARTITION_NS  # parts before this one are entirely past the horizon
                files = [f for (f,) in cur.execute("SELECT file FROM chunks WHERE part < ?",
                                                   [last_whole_part]).fetchall()]
                if files:
                    cur.execute("DELETE FROM chunk_series WHERE list_contains(?, file)", [files])
                    cur.execute("DELETE FROM chunks WHERE list_contains(?, file)", [files])
                    cur.execute("DELETE FROM unrolled WHERE list_contains(?, file)", [files])
                out.chunks = [store.chunk_dir / f for f in files]
                out.hot_rows = cur.execute("DELETE FROM hot WHERE time < ?", [raw_cutoff]).fetchone()[0]
            for res in store.policy.rollups:
                cutoff = store.policy.cutoff(res, now)
                if cutoff is not None:
                    out.rollup_rows[res] = cur.execute(f"DELETE FROM {rollup.table(res)} WHERE bucket < ?",
                                                       [cutoff]).fetchone()[0]
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        store.hot_rows_left(cur.execute("SELECT count(*) FROM hot").fetchall()[0][0])
    if out.chunks or out.hot_rows or any(out.rollup_rows.values()):
        log.info("embedded store retention: %d part chunks, %d hot rows, rollup rows %s expired",
                 len(out.chunks), out.hot_rows, out.rollup_rows)
    return out
