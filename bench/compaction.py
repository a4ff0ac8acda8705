"""Compaction benchmark: the embedded store's ingest rate while a compaction runs, against the quiet rate.

    .venv/bin/python bench/compaction.py [--devices 1000] [--rows 300000] [--rounds 2] [--json]

In one process, as Vigie runs it: an :class:`EmbeddedStore` in a temporary
directory (its maintenance task only runs when asked), and one ingest loop
that builds ``Reading`` objects (the Python work a decoder does per reading)
and awaits ``store.write()`` batch after batch, as the store writer does.
Readings come from ``--devices`` series at one a minute, interleaved by time
(each batch holds every device's readings of consecutive minutes), ending now.

Each round is **A**: ``--rows`` readings written with nothing else running
(the quiet rate; they fill the hot table), then **B**: a maintenance pass
(compaction of the hot table into weekly chunks, rollups, tidy, checkpoint)
started with ``store.maintain()`` while the loop goes on writing until the
pass is over (the rate during compaction). Rounds alternate A B A B, so the
machine's other load falls on both. Reported per phase: readings/s, the
slowest ``write()`` (how long the writer can be held up), the pass's own
duration, and the cores other processes used meanwhile (/proc/stat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.model import Reading  # noqa: E402
from app.store.embedded import EmbeddedStore  # noqa: E402
from bench.measure import machine, machine_ticks, percentile  # noqa: E402

MINUTE = 60 * 10**9


class Feed:
    """Readings of ``devices`` series at one a minute, interleaved by time, built batch by batch."""

    def __init__(self, devices: int, start_ns: int) -> None:
        self.devices = devices
        self.names = [f"dev-{i:04d}" for i in range(devices)]
        self.i = 0  # readings built so far
        self.start_ns = start_ns

    def batch(self, n: int) -> list[Reading]:
        out = []
        for k in range(self.i, self.i + n):
            minute, dev = divmod(k, self.devices)
            out.append(Reading(self.names[dev], "level", self.start_ns + minute * MINUTE,
                               round((k * 7919 % 10007) / 100.0, 3), unit="m"))
        self.i += n
        return out


class Phase:
    """Readings/s, write() latencies and other processes' load over one phase."""

    def __init__(self) -> None:
        self.readings = 0
        self.latencies: list[float] = []
        self.t0 = time.perf_counter()
        self.cpu0 = sum(os.times()[:4])
        self.m0 = machine_ticks()

    def done(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        b1, t1 = machine_ticks()
        busy = (b1 - self.m0[0]) / max(1, t1 - self.m0[1]) * (os.cpu_count() or 1)
        own = (sum(os.times()[:4]) - self.cpu0) / wall
        return {"readings": self.readings, "seconds": round(wall, 3),
                "readings_per_s": round(self.readings / wall) if wall else None,
                "write_ms_p50": round(1000 * (percentile(self.latencies, 50) or 0), 1),
                "write_ms_max": round(1000 * max(self.latencies, default=0), 1),
                "own_cores": round(own, 2), "other_cores": round(max(0.0, busy - own), 2)}


async def write_one(store: EmbeddedStore, feed: Feed, n: int, phase: Phase) -> None:
    batch = feed.batch(n)
    t = time.perf_counter()
    await store.write(batch)
    phase.latencies.append(time.perf_counter() - t)
    phase.readings += n


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    per_round = args.rows + args.rows // 2  # a generous bound on what one round writes
    minutes = (per_round * (args.rounds + 1)) // args.devices + 1
    feed = Feed(args.devices, time.time_ns() - minutes * MINUTE)
    store = EmbeddedStore(work / "data", compact_rows=10**12, maintenance_interval_s=10**6)
    await store.open()
    rounds: list[dict[str, Any]] = []
    try:
        # Warm up: create the series and compact once, so round 1 is a running site's.
        await write_one(store, feed, args.devices, Phase())
        await store.maintain()
        for _ in range(args.rounds):
            quiet = Phase()
            while quiet.readings < args.rows:
                await write_one(store, feed, min(args.batch, args.rows - quiet.readings), quiet)
            hot = store.health()["hot_rows"]
            during = Phase()
            task = asyncio.create_task(store.maintain())
            while not task.done():
                await write_one(store, feed, args.batch, during)
            result = await task
            b = during.done()
            b["pass"] = result
            rounds.append({"hot_rows_compacted": hot, "quiet": quiet.done(), "during_compaction": b})
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    finally:
        await store.close()
    q = [r["quiet"]["readings_per_s"] for r in rounds]
    d = [r["during_compaction"]["readings_per_s"] for r in rounds]
    return {"machine": machine(("duckdb", "pyarrow")), "config": vars(args), "rounds": rounds,
            "quiet_readings_per_s": q, "during_readings_per_s": d,
            "ratios": [round(b / a, 3) for a, b in zip(q, d, strict=True)]}


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\n{m['date']} commit {m['commit']} · {m['nproc']} cores {m['cpu']} · Python {m['python']} · "
          f"duckdb {m.get('duckdb')} · load average at start {' '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}")
    print("| round | hot rows compacted | quiet /s | during compaction /s | ratio | pass s | write() max ms "
          "quiet / during | other cores quiet / during |")
    print("|---|---|---|---|---|---|---|---|")
    for i, rd in enumerate(r["rounds"], 1):
        a, b = rd["quiet"], rd["during_compaction"]
        print(f"| {i} | {rd['hot_rows_compacted']:,} | {a['readings_per_s']:,} | {b['readings_per_s']:,} | "
              f"{b['readings_per_s'] / a['readings_per_s']:.2f} | {b['seconds']:.2f} | "
              f"{a['write_ms_max']} / {b['write_ms_max']} | {a['other_cores']} / {b['other_cores']} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--devices", type=int, default=1000, help="series, one reading a minute each")
    p.add_argument("--rows", type=int, default=300_000, help="readings written quiet per round (the hot table)")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds (quiet, then during a compaction)")
    p.add_argument("--batch", type=int, default=5000, help="readings per write()")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vigie-bench-compaction-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    if args.json:
        print(json.dumps(result, indent=2))
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
