"""What a new series costs the embedded store: a fleet's first messages, then the same series again.

    python bench/new_series.py [--series 20000] [--batch 5000]

Writes ``--series`` readings of series never seen (batches of ``--batch``,
as the store writer hands them over), then one more reading of each, and
prints CPU milliseconds per new series and per reading of a known series,
and the wall time of the first pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.model import Reading
from app.store.embedded import EmbeddedStore
from bench.measure import machine


async def run(n: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="new-series-") as d:
        store = EmbeddedStore(d)
        await store.open()
        try:
            t0 = time.time_ns()
            out = {}
            for label, offset in (("new", 0), ("known", 1000)):
                cpu, wall = time.process_time(), time.perf_counter()
                for start in range(0, n, batch):
                    await store.write([Reading(f"dev-{i}", "level", t0 + offset, float(i), unit="m",
                                               tags={"site": f"s{i % 50}"})
                                       for i in range(start, min(n, start + batch))])
                out[label] = {"cpu_ms_per_reading": round((time.process_time() - cpu) / n * 1000, 4),
                              "wall_s": round(time.perf_counter() - wall, 2)}
            return {"series": n, "batch": batch, **out}
        finally:
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5_000)
    args = ap.parse_args()
    print(json.dumps({"machine": machine(("duckdb",)), **asyncio.run(run(args.series, args.batch))}, indent=2))


if __name__ == "__main__":
    main()
