"""Page-load bursts against a server under ingest: how many concurrent page loads it takes.

For each level N (``--levels 25,50,100,200``): a fresh Mosquitto and ``vigie
serve`` (embedded store, tests/servers.py and tests/browser.py), a publisher
sending 1,000 readings/s at QoS 1 (50 devices), then N clients opening a
dashboard at the same moment, each honouring the busy page's Retry-After
until ``--seconds`` have passed (the same clients as tests/test_page_load.py,
in a process of their own). ``/health`` is polled 20 times a second meanwhile.

Per level it reports: pages opened and busy answers, ``/health`` p50/p99/max,
ingest lag (readings published but not yet counted by the MQTT source,
in seconds at 1,000/s: p99 and max), whether the MQTT source ever left
"connected", Vigie's RSS before, at peak and after the sessions expired, and
how busy the machine was (bench/measure.py). A level passes when /health
p99 < 200 ms, lag max < 1 s and MQTT stayed connected.

    .venv/bin/python bench/pageload.py                     # 25, 50, 100, 200
    .venv/bin/python bench/pageload.py --levels 50 --builds 2 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import machine, machine_ticks, memory_mb, percentile  # noqa: E402
from tests.browser import VigieServer  # noqa: E402
from tests.servers import Mosquitto, wait_until  # noqa: E402
from tests.test_page_load import LAYOUT, HealthProbe, Publisher, fetch, health, page_clients  # noqa: E402


def run_level(clients: int, seconds: float, builds: int, max_sessions: int) -> dict[str, Any]:
    """Run one burst of ``clients`` page loads; return its figures."""
    tmp = Path(tempfile.mkdtemp(prefix="pageload-"))
    broker = Mosquitto(tmp / "mosquitto")
    broker.directory.mkdir(exist_ok=True)
    broker.start()
    server = VigieServer(tmp / "vigie", broker.port, layouts={"load": LAYOUT}, idle_session_s=3,
                         server_options={"max_sessions": max_sessions, "max_concurrent_page_builds": builds})
    try:
        server.start()
        pid = server.proc.pid
        path = "/dashboard?name=load"
        fetch(server.base + path)  # warm-up: the first build imports the plotting modules, once per process
        wait_until(lambda: health(server.base).get("pages", {"sessions": 0})["sessions"] == 0, timeout=30,
                   interval=0.2, what="warm-up session expired")
        rss_start = memory_mb(pid)[0]
        publisher = Publisher(broker.host, broker.port)
        publisher.start()
        probe = HealthProbe(server.base, publisher)
        probe.start()
        busy0, total0 = machine_ticks()
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        proc = ctx.Process(target=page_clients, args=(server.port, path, clients, seconds, out))
        proc.start()
        results = out.get(timeout=seconds + 180)
        proc.join(10)
        probe.halt.set()
        probe.join()
        rss_peak = memory_mb(pid)[1]
        busy1, total1 = machine_ticks()
        published = publisher.finish()
        wait_until(lambda: health(server.base)["sources"]["m"]["readings_total"] >= published, timeout=60,
                   interval=0.2, what="every reading ingested")
        wait_until(lambda: health(server.base)["pages"]["sessions"] == 0, timeout=60, interval=0.2,
                   what="sessions expired")
        deadline = time.monotonic() + 20
        while memory_mb(pid)[0] > 1.2 * rss_start and time.monotonic() < deadline:
            time.sleep(0.5)
        rss_end = memory_mb(pid)[0]
        log = server.log.read_text()
        lat = [1000 * x for x in probe.latencies]
        statuses = [s for s, _ in results]
        res = {
            "clients": clients, "builds": builds, "max_sessions": max_sessions, "seconds": seconds,
            "opened": statuses.count(200), "still_busy": statuses.count(503),
            "errors": len(statuses) - statuses.count(200) - statuses.count(503),
            "busy_answers": sum(b for _, b in results),
            "health_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat), "n": len(lat)},
            "lag_s": {"p99": percentile(probe.lags, 99), "max": max(probe.lags)},
            "mqtt_connected_throughout": set(probe.states) == {"connected"} and log.count("mqtt m: ") == 1,
            "published": published,
            "rss_mb": {"start": rss_start, "peak": rss_peak, "after": rss_end},
            "machine_busy_cores": (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0),
        }
        res["ok"] = (res["health_ms"]["p99"] < 200 and res["lag_s"]["max"] < 1.0
                     and res["mqtt_connected_throughout"])
        return res
    finally:
        server.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="25,50,100,200", help="concurrent page loads per burst (comma-separated)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long clients retry a busy page")
    ap.add_argument("--builds", type=int, default=1, help="server.max_concurrent_page_builds")
    ap.add_argument("--max-sessions", type=int, default=200, help="server.max_sessions")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [run_level(int(n), args.seconds, args.builds, args.max_sessions) for n in args.levels.split(",")]
    if args.json:
        print(json.dumps({"machine": machine(), "levels": rows}, indent=2, default=str))
        return 0
    print("| clients | opened / busy answers | /health p50 / p99 / max | lag p99 / max | MQTT "
          "| RSS start / peak / after | machine busy | ok |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, lag, rss = r["health_ms"], r["lag_s"], r["rss_mb"]
        print(f"| {r['clients']} | {r['opened']} / {r['busy_answers']} | {h['p50']:.0f} / {h['p99']:.0f} / "
              f"{h['max']:.0f} ms | {lag['p99']:.2f} / {lag['max']:.2f} s | "
              f"{'connected' if r['mqtt_connected_throughout'] else 'LEFT connected'} | "
              f"{rss['start']:.0f} / {rss['peak']:.0f} / {rss['after']:.0f} MB | "
              f"{r['machine_busy_cores']:.2f} / {os.cpu_count()} | {'yes' if r['ok'] else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
