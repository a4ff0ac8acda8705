"""Light embeds benchmark: how many portal viewers of a value tile one Vigie process serves.

Starts ``vigie demo`` (simulators every second) like ``bench/sessions.py``,
then ``--clients`` threads each fetch ``/api/v1/fragments/<layout>/<widget>``
over a keep-alive connection as fast as the server answers, for
``--duration`` seconds. A light embed fetches once per period (2 s by
default), so viewers held per core = requests/s per core × period.

Reports requests/s, latency p50/p95/p99, the server's CPU (from /proc) per
1,000 requests, and the viewers that rate would hold. The clients share
the machine's cores with the server (their CPU is reported too).

    .venv/bin/python bench/embeds.py
    .venv/bin/python bench/embeds.py --clients 8 --duration 20 --widget dams-status
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import CLK_TCK, cpu_ticks, percentile
from bench.sessions import Demo


def client(port: int, path: str, deadline: float, latencies: list[float], errors: list[str]) -> None:
    """Fetch ``path`` until ``deadline``; record each request's latency (s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            errors.append(str(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append(time.perf_counter() - t0)
        if response.status != 200 or b"vigie-" not in body:
            errors.append(f"HTTP {response.status}: {body[:80]!r}")
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--layout", default="flood-dams")
    parser.add_argument("--widget", default="dam-1-level", help="a value or status_grid widget of the layout")
    parser.add_argument("--period", type=float, default=2.0, help="a light embed's fetch period (s)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vigie-embeds-") as tmp:
        demo = Demo(Path(tmp), 1.0)
        demo.start()
        try:
            path = f"/api/v1/fragments/{args.layout}/{args.widget}?lang=fr"
            latencies: list[float] = []
            errors: list[str] = []
            client(demo.port, path, time.monotonic() + 2, [], errors)  # warm-up: the view is built once
            pid = demo.pid
            cpu0, own0, t0 = cpu_ticks(pid), time.process_time(), time.monotonic()
            deadline = t0 + args.duration
            threads = [threading.Thread(target=client, args=(demo.port, path, deadline, latencies, errors))
                       for _ in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            elapsed = time.monotonic() - t0
            server_cpu = (cpu_ticks(pid) - cpu0) / CLK_TCK
            clients_cpu = time.process_time() - own0
        finally:
            code = demo.stop()
    n = len(latencies)
    rate = n / elapsed
    per_core = rate / max(server_cpu / elapsed, 1e-9)
    print(f"{args.layout}/{args.widget}: {n:,} requests in {elapsed:.1f} s by {args.clients} clients, "
          f"{len(errors)} errors{' (' + errors[0] + ')' if errors else ''}")
    p50, p95, p99 = ((percentile(latencies, q) or float("nan")) * 1000 for q in (50, 95, 99))
    print(f"  {rate:,.0f} requests/s; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
    print(f"  server CPU {server_cpu / elapsed * 100:.0f} % of a core ({server_cpu / n * 1e6:.0f} µs per request); "
          f"clients {clients_cpu / elapsed * 100:.0f} %")
    print(f"  at one fetch per {args.period:g} s: {rate * args.period:,.0f} viewers at this rate, "
          f"~{per_core * args.period:,.0f} viewers per core of server CPU; demo exit code {code}")
    return 1 if errors or code not in (0, None) else 0


if __name__ == "__main__":
    sys.exit(main())
