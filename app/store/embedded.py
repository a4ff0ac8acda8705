"""The embedded store: DuckDB in one file, zero setup, the demo's default.

Readings go in as Arrow batches (about a million rows a second here, where
``executemany`` manages two thousand). DuckDB is blocking, so every call
runs in a worker thread with its own cursor. The latest value per series is
kept in memory (rebuilt from the file at open) so the overview never scans
the table. The file is locked to one process, which is what one Vigie
process per data directory wants anyway.

As in InfluxDB, a point is identified by its series and time: writing the
same series and timestamp again replaces the value (an MQTT QoS 1 message
delivered twice, a spool replayed after a crash, a gateway re-sending its
buffer), so nothing is stored twice. The primary key costs insert speed
(bench/README.md) but the demo and small sites write far below it. Files
made before the key existed are migrated on open, keeping the last value
written for each point.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from app.model import Envelope, LatestValue, Reading, SeriesInfo
from app.store.base import StoreEngine, bucket_width_ns

log = logging.getLogger(__name__)

_READINGS = """
CREATE TABLE {exists} {name} (
    device VARCHAR, metric VARCHAR, time BIGINT, value DOUBLE, quality VARCHAR,
    PRIMARY KEY (device, metric, time)
);
"""
_SCHEMA = _READINGS.format(exists="IF NOT EXISTS", name="readings") + """
CREATE TABLE IF NOT EXISTS series (
    device VARCHAR, metric VARCHAR, unit VARCHAR, tags VARCHAR, PRIMARY KEY (device, metric)
);
"""


class EmbeddedStore(StoreEngine):
    """Readings in a DuckDB file under ``data_dir`` (or in memory when None)."""

    engine_type = "embedded"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.path = Path(data_dir) / "vigie.duckdb" if data_dir else None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()  # one writer at a time; readers use their own cursors
        self._latest: dict[str, LatestValue] = {}
        self._series: dict[str, SeriesInfo] = {}

    async def open(self) -> None:
        """Open (or create) the database file and load the series catalogue."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path) if self.path else ":memory:")
        self._con.execute(_SCHEMA)
        self._migrate_unique_points()
        for device, metric, unit, tags in self._con.execute("SELECT * FROM series").fetchall():
            info = SeriesInfo(device, metric, unit, json.loads(tags))
            self._series[info.key] = info
        rows = self._con.execute(
            "SELECT device, metric, max(time), arg_max(value, time), arg_max(quality, time) "
            "FROM readings GROUP BY device, metric"
        ).fetchall()
        for device, metric, t, v, q in rows:
            info = self._series.get(f"{device}/{metric}")
            self._latest[f"{device}/{metric}"] = LatestValue(
                device, metric, t, v, q, info.unit if info else "", info.tags if info else {}
            )

    def _migrate_unique_points(self) -> None:
        """Give a readings table from before the primary key one, keeping the last value of each point."""
        assert self._con is not None
        keyed = self._con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'readings' "
            "AND constraint_type = 'PRIMARY KEY'").fetchone()[0]
        if keyed:
            return
        before = self._con.execute("SELECT count(*) FROM readings").fetchone()[0]
        self._con.execute("BEGIN")
        try:
            self._con.execute(_READINGS.format(exists="", name="readings_keyed"))
            self._con.execute(
                "INSERT INTO readings_keyed SELECT device, metric, time, arg_max_null(value, rowid), "
                "arg_max_null(quality, rowid) FROM readings GROUP BY device, metric, time")
            self._con.execute("DROP TABLE readings")
            self._con.execute("ALTER TABLE readings_keyed RENAME TO readings")
            self._con.execute("COMMIT")
        except Exception:
            self._con.execute("ROLLBACK")
            raise
        after = self._con.execute("SELECT count(*) FROM readings").fetchone()[0]
        log.warning("embedded store %s migrated to one row per point: %d rows, %d duplicates dropped",
                    self.path, after, before - after)

    async def close(self) -> None:
        """Checkpoint and close the file."""
        if self._con is not None:
            con, self._con = self._con, None
            await asyncio.to_thread(con.close)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("embedded store is not open")
        return self._con.cursor()

    async def write(self, batch: Sequence[Reading]) -> None:
        """Append a batch as one Arrow table; update the catalogue and latest values."""
        if not batch:
            return
        if len({(r.device, r.metric, r.time_ns) for r in batch}) < len(batch):
            # The same point twice in one batch: the last one wins, as across batches.
            batch = list({(r.device, r.metric, r.time_ns): r for r in batch}.values())
        table = pa.table(
            {
                "device": [r.device for r in batch],
                "metric": [r.metric for r in batch],
                "time": pa.array([r.time_ns for r in batch], pa.int64()),
                "value": pa.array([r.value for r in batch], pa.float64()),
                "quality": [str(r.quality) for r in batch],
            }
        )
        # The catalogue and latest values change in memory only once the rows are in: a batch the
        # database refuses must leave no series behind that was never stored.
        series: dict[str, SeriesInfo] = {}
        latest: dict[str, LatestValue] = {}
        for r in batch:
            key = r.key
            known = series.get(key) or self._series.get(key)
            unit = r.unit or (known.unit if known else "")  # a reading without a unit keeps the series' one
            if known is None or known.unit != unit or known.tags != r.tags:
                known = series[key] = SeriesInfo(r.device, r.metric, unit, dict(r.tags))
            last = latest.get(key) or self._latest.get(key)
            if last is None or r.time_ns >= last.time_ns:
                latest[key] = LatestValue(r.device, r.metric, r.time_ns, r.value, r.quality, unit, r.tags)
        await asyncio.to_thread(self._insert, table, list(series.values()))
        self._series.update(series)
        self._latest.update(latest)

    def _insert(self, table: pa.Table, new_series: list[SeriesInfo]) -> None:
        with self._lock:
            cur = self._cursor()
            cur.register("batch", table)
            cur.execute("INSERT OR REPLACE INTO readings SELECT * FROM batch")
            cur.unregister("batch")
            if new_series:
                cur.executemany(
                    "INSERT OR REPLACE INTO series VALUES (?, ?, ?, ?)",
                    [(s.device, s.metric, s.unit, json.dumps(s.tags, sort_keys=True)) for s in new_series],
                )

    async def latest(self) -> list[LatestValue]:
        """Return the latest value of every series (from memory)."""
        return sorted(self._latest.values(), key=lambda v: v.key)

    async def series(self) -> list[SeriesInfo]:
        """Return the series catalogue."""
        return sorted(self._series.values(), key=lambda s: s.key)

    async def envelope(self, key: str, start_ns: int, end_ns: int, buckets: int) -> Envelope:
        """Return min/mean/max per bucket, computed in DuckDB."""
        device, _, metric = key.rpartition("/")
        width = bucket_width_ns(start_ns, end_ns, buckets)
        rows = await asyncio.to_thread(
            self._query,
            "SELECT ?::BIGINT + ((time - ?::BIGINT) // ?::BIGINT) * ?::BIGINT AS b, "
            "min(value), avg(value), max(value) FROM readings "
            "WHERE device = ? AND metric = ? AND time >= ? AND time < ? GROUP BY b ORDER BY b",
            [start_ns, start_ns, width, width, device, metric, start_ns, end_ns],
        )
        return Envelope(
            key,
            width,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )

    async def raw(self, key: str, start_ns: int, end_ns: int) -> list[tuple[int, float, str]]:
        """Return the raw points of a range (for exports and tests)."""
        device, _, metric = key.rpartition("/")
        return await asyncio.to_thread(
            self._query,
            "SELECT time, value, quality FROM readings WHERE device = ? AND metric = ? "
            "AND time >= ? AND time < ? ORDER BY time",
            [device, metric, start_ns, end_ns],
        )

    async def count(self, key: str | None = None) -> int:
        """Return how many readings are stored."""
        if key is None:
            rows = await asyncio.to_thread(self._query, "SELECT count(*) FROM readings", [])
        else:
            device, _, metric = key.rpartition("/")
            rows = await asyncio.to_thread(
                self._query, "SELECT count(*) FROM readings WHERE device = ? AND metric = ?", [device, metric]
            )
        return int(rows[0][0])

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        return self._cursor().execute(sql, params).fetchall()

    def health(self) -> dict[str, Any]:
        """Return the file and the number of series."""
        return {"engine": self.engine_type, "path": str(self.path) if self.path else ":memory:",
                "series": len(self._series)}
