"""What one ``GET /metrics`` scrape costs the event loop: ``build_registry`` + ``generate_latest``, as served.

    python bench/metrics_scrape.py            # two scenarios, a table
    python bench/metrics_scrape.py --json

A scrape runs on the event loop that ingest, alarms and pages share (its
values are read there, without locks: app/web/metrics.py), so its cost is a
stall of everything else for that long, once per scrape interval. The
runtime is built in-process (embedded store, not started) and loaded
through its sources, so the hub, the live cache, the alarm engine and the
writer hold real state:

- **typical**: 1,000 live series from 3 sources, 100 active alarms;
- **wide**: 10,000 live series from 300 sources (about 1,000 exposed
  samples), 1,000 active alarms.

Reported per scenario: exposed samples and bytes, then the milliseconds of
a whole scrape (median, p99, max over ``--scrapes``) and of Vigie's own
collector alone (the rest is the process and garbage-collector metrics and
the text encoding).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.measure import machine, percentile  # noqa: E402

SCENARIOS = {"typical": (1_000, 3, 100), "wide": (10_000, 300, 1_000)}  # live series, sources, active alarms


def build_runtime(base: Path, series: int, sources: int, alarms: int) -> Any:
    """Return a runtime (not started) whose sources handed it ``series`` series, ``alarms`` of them over a limit."""
    from app.config import load_config
    from app.ingest.base import Source
    from app.model import Reading
    from app.runtime import Runtime

    config = base / "config"
    config.mkdir()
    (config / "vigie.yaml").write_text(
        "store: {engine: embedded, data_dir: data, spool_dir: spool}\n"
        "alarms:\n  rules:\n    - {name: high, series: dev-*/level, above: 10, severity: high}\n")
    runtime = Runtime(load_config(config, env={}), base_dir=base)
    feeds = []
    for i in range(sources):
        source = Source(f"src-{i}", runtime.hub)
        runtime.add_source(source)
        feeds.append(source)
    now = time.time_ns()
    for i in range(series):
        feeds[i % sources].publish([Reading(f"dev-{i}", "level", now, 20.0 if i < alarms else 5.0)])
    feeds[0].publish([Reading("dev-0", "level", now + 1, float("nan"))])  # one dead letter
    return runtime


def timed(fn: Any, scrapes: int) -> list[float]:
    """Return the milliseconds of ``scrapes`` calls of ``fn`` (after a warm-up of 10)."""
    for _ in range(10):
        fn()
    out = []
    for _ in range(scrapes):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def scenario(name: str, scrapes: int) -> dict[str, Any]:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from app.web.metrics import LoopLag, VigieCollector, build_registry

    series, sources, alarms = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as tmp:
        runtime = build_runtime(Path(tmp), series, sources, alarms)
        assert len(runtime.alarms.alarms()) == alarms and len(runtime.live.keys()) == series
        lag = LoopLag()
        body = generate_latest(build_registry(runtime, None, lag))
        samples = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
        whole = timed(lambda: generate_latest(build_registry(runtime, None, lag)), scrapes)
        collector = VigieCollector(runtime, None, lag)
        own = timed(lambda: list(collector.collect()), scrapes)
    return {"scenario": name, "live_series": series, "sources": sources, "active_alarms": alarms,
            "samples": samples, "bytes": len(body),
            "scrape_ms": {"median": percentile(whole, 50), "p99": percentile(whole, 99), "max": max(whole)},
            "collector_ms": {"median": percentile(own, 50), "p99": percentile(own, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # 1,000 alarms raised: not 1,000 log lines
    rows = [asyncio.run(scenario(name, args.scrapes)) for name in SCENARIOS]
    if args.json:
        print(json.dumps({"machine": machine(("prometheus-client",)), "scenarios": rows}, indent=2, default=str))
        return
    print(f"{'scenario':<9} {'series':>7} {'sources':>7} {'alarms':>6} {'samples':>7} {'bytes':>7} "
          f"{'scrape ms median / p99 / max':>29} {'collector ms median / p99':>26}")
    for r in rows:
        s, c = r["scrape_ms"], r["collector_ms"]
        print(f"{r['scenario']:<9} {r['live_series']:>7} {r['sources']:>7} {r['active_alarms']:>6} {r['samples']:>7} "
              f"{r['bytes']:>7} {s['median']:>12.2f} / {s['p99']:>5.2f} / {s['max']:>6.2f} "
              f"{c['median']:>17.2f} / {c['p99']:>5.2f}")


if __name__ == "__main__":
    main()
