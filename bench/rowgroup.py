"""Row-group size and rollup layout of the embedded store's history: one-series query times and bytes per reading.

Builds a store with :func:`app.store.bulk.import_history` (the fleet of
``bench/history.py --only fleet --bulk``: one reading a minute per device)
once per ``--row-group-rows`` value, then times ``store.envelope`` of one
series (800 buckets) over the last day, month and year, as process CPU and
wall medians: small and quick to repeat (minutes), where the full-size run
takes a quarter of an hour. ``--rollup-only`` instead times the 1h rollup
table's one-series read at a year's size (synthetic partials, as many rows
as a year of ``--devices`` devices), laid out per chunk as compaction
appends them versus clustered by series.

    .venv/bin/python bench/rowgroup.py --devices 1000 --weeks 4 --row-group-rows 16384,65536,131072
    .venv/bin/python bench/rowgroup.py --rollup-only --devices 1000
    .venv/bin/python bench/rowgroup.py --devices 1000 --weeks 52 --row-group-rows 131072 --unclustered
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.history import BUCKETS, DAY_NS, FLEET_METRIC, MINUTE_NS, fleet_rows_sql, fleet_series  # noqa: E402

RANGES = {"year": 365 * DAY_NS, "month": 30 * DAY_NS, "day": DAY_NS}
WEEK_NS = 7 * DAY_NS


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def one_size(root: Path, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """Import the fleet with ``rows``-row groups; return bytes per reading and the query timings."""
    from app.store import chunks
    from app.store.bulk import import_history
    from app.store.history_policy import HistoryPolicy

    chunks.ROW_GROUP_ROWS = rows
    chunks.PARQUET_OPTIONS = (f"FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {rows}, PARQUET_VERSION v2")
    policy = HistoryPolicy.from_config(["1h"])
    data = root / f"rg{rows}"
    end_ns = (time.time_ns() // WEEK_NS) * WEEK_NS  # whole weeks: one chunk each
    start_ns = end_ns - args.weeks * WEEK_NS
    done = await asyncio.to_thread(import_history, data, fleet_series(args.devices), fleet_rows_sql(args.devices),
                                   start_ns, end_ns, policy=policy)
    out: dict[str, Any] = {"row_group_rows": rows, "readings": done.rows, "import_s": round(done.seconds, 1),
                           "bytes_per_reading": round(dir_bytes(data) / done.rows, 2),
                           "chunk_bytes_per_reading": round(dir_bytes(data / "history") / done.rows, 2)
                           if (data / "history").exists() else None}
    out.update(await time_queries(data, policy, end_ns, args))
    if args.unclustered:
        # The same store with its 1h partials in the order compaction appends them (week by week, then series).
        import duckdb

        con = duckdb.connect(str(data / "vigie.duckdb"))
        con.execute("CREATE TABLE r AS SELECT * FROM rollup_3600s ORDER BY bucket // 604800000000000, sid, bucket")
        con.execute("DROP TABLE rollup_3600s")
        con.execute("ALTER TABLE r RENAME TO rollup_3600s")
        con.execute("CHECKPOINT")
        con.close()
        out["unclustered_rollup"] = await time_queries(data, policy, end_ns, args, ("year",))
    shutil.rmtree(data, ignore_errors=True)
    return out


async def time_queries(data: Path, policy: Any, end_ns: int, args: argparse.Namespace,
                       ranges: tuple[str, ...] = tuple(RANGES)) -> dict[str, Any]:
    """Time one series' envelope over each range: process CPU and wall medians, in ms."""
    from app.store.embedded import EmbeddedStore

    out: dict[str, Any] = {}
    store = EmbeddedStore(data, policy=policy, maintenance_interval_s=3600)
    await store.open()
    try:
        key = f"dev-{args.devices // 2:04d}/{FLEET_METRIC}"
        for name in ranges:
            start, end = end_ns + MINUTE_NS - RANGES[name], end_ns + MINUTE_NS
            await store.envelope(key, start, end, BUCKETS)  # warm-up
            wall, cpu = [], []
            for _ in range(args.runs):
                c0, t0 = time.process_time(), time.perf_counter()
                await store.envelope(key, start, end, BUCKETS)
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            out[name] = {"cpu_ms": round(statistics.median(cpu), 1), "wall_ms": round(statistics.median(wall), 1),
                         "wall_min_ms": round(min(wall), 1)}
    finally:
        await store.close()
    return out


def rollup_layout(args: argparse.Namespace) -> dict[str, Any]:
    """Time a one-series year read of a year-sized 1h rollup table: chunk-ordered (as appended) vs by series."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    hours = 52 * 168
    # As compaction appends them: week by week, each week's partials ordered by (sid, bucket).
    con.execute(f"CREATE TABLE appended AS SELECT s.i::INTEGER AS sid, (w.i * 168 + h.i) * 3600000000000 AS bucket, "
                "random() AS vmin, random() AS vmax, random() AS vsum, 60::BIGINT AS n, w.i::BIGINT AS chunk "
                f"FROM range(52) w(i), range({args.devices}) s(i), range(168) h(i) ORDER BY w.i, s.i, h.i")
    con.execute("CREATE TABLE clustered AS SELECT * FROM appended ORDER BY sid, bucket")
    sid = args.devices // 2
    out: dict[str, Any] = {"rows": con.execute("SELECT count(*) FROM appended").fetchone()[0], "hours": hours}
    for t in ("appended", "clustered"):
        sql = (f"SELECT bucket // 39420000000000 AS b, min(vmin), sum(vsum) / sum(n), max(vmax) FROM {t} "
               f"WHERE sid = {sid} AND bucket >= 0 AND bucket < {hours * 3600000000000} GROUP BY b")
        con.execute(sql).fetchall()
        wall, cpu = [], []
        for _ in range(args.runs):
            c0, t0 = time.process_time(), time.perf_counter()
            con.execute(sql).fetchall()
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        out[t] = {"cpu_ms": round(statistics.median(cpu), 2), "wall_ms": round(statistics.median(wall), 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--weeks", type=int, default=4)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--row-group-rows", default="16384,65536,131072")
    p.add_argument("--rollup-only", action="store_true")
    p.add_argument("--unclustered", action="store_true",
                   help="also time the year query with the 1h rollup re-ordered as compaction appends it")
    args = p.parse_args()
    result: dict[str, Any] = {"devices": args.devices, "weeks": args.weeks, "runs": args.runs,
                              "load_before": os.getloadavg()}
    if args.rollup_only:
        result["rollup"] = rollup_layout(args)
    else:
        root = Path(tempfile.mkdtemp(prefix="vigie-rowgroup-"))
        try:
            result["sizes"] = [asyncio.run(one_size(root, int(r), args)) for r in args.row_group_rows.split(",")]
        finally:
            shutil.rmtree(root, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
