"""What authorization costs: an API call and an embed page load, anonymous versus authenticated.

One ``vigie serve`` (embedded store, a Mosquitto of its own) with
``anonymous_read: true``, so the same request can be made both ways:

- ``GET /api/v1/layouts/<name>``: anonymous, with an API token (Bearer),
  and with a login cookie;
- ``GET /embed-app?layout=<name>&widget=<id>`` (a whole Bokeh session
  built): anonymous, and with a signed embed link's ``t=``.

Requests alternate between the ways (ABAB...), so drift in the machine's
load touches each alike; each way's median and p90 are printed with the
difference to anonymous. The issue's target: within 5 %.

    .venv/bin/python bench/auth_cost.py [--calls 2000] [--pages 60] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import machine, percentile  # noqa: E402
from tests.browser import VigieServer  # noqa: E402
from tests.servers import Mosquitto  # noqa: E402

LAYOUT = ("title: Bench\nwidgets:\n- {type: value, id: v, x: 0, y: 0, w: 3, h: 2, series: b-1/level}\n"
          "- {type: timeseries, id: c, x: 3, y: 0, w: 6, h: 3, series: [b-1/level]}\n")


def timed(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    elapsed = time.perf_counter() - started
    if r.status != 200:
        raise RuntimeError(f"{path} {headers and list(headers)}: {r.status}")
    return elapsed


def run(ways: dict[str, tuple[str, dict[str, str]]], n: int, port: int) -> dict[str, list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: dict[str, list[float]] = {w: [] for w in ways}
    for path, headers in ways.values():  # warm-up
        for _ in range(3):
            timed(conn, path, headers)
    for _ in range(n):
        for name, (path, headers) in ways.items():
            times[name].append(timed(conn, path, headers))
    conn.close()
    return times


def report(title: str, times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base = statistics.median(times["anonymous"])
    out = {}
    print(f"\n{title}")
    for name, values in times.items():
        median = statistics.median(values)
        out[name] = {"median_ms": 1000 * median, "p90_ms": 1000 * percentile(values, 90),
                     "vs_anonymous_pct": 100 * (median / base - 1)}
        print(f"  {name:>10}: median {1000 * median:8.3f} ms  p90 {1000 * percentile(values, 90):8.3f} ms  "
              f"{out[name]['vs_anonymous_pct']:+6.1f} % vs anonymous  ({len(values)} requests)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="API calls per way")
    parser.add_argument("--pages", type=int, default=60, help="embed page loads per way")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mq")
        broker.directory.mkdir(exist_ok=True)
        broker.start()
        server = VigieServer(Path(tmp) / "vigie", broker.port, layouts={"bench": LAYOUT},
                             server_options={"max_sessions": 1000}, idle_session_s=2)
        try:
            server.start()
            token = server.headers("viewer")
            cookie = {"Cookie": f"vigie_session={server.session('viewer')}"}
            api = run({"anonymous": ("/api/v1/layouts/bench", {}), "token": ("/api/v1/layouts/bench", token),
                       "cookie": ("/api/v1/layouts/bench", cookie)}, args.calls, server.port)
            link = server.embed_link("bench", "v")
            signed = "&t=" + link["url"].split("t=", 1)[1]
            page = "/embed-app?layout=bench&widget=v"
            pages = run({"anonymous": (page, {}), "embed link": (page + signed, {})}, args.pages, server.port)
        finally:
            server.stop()
            broker.stop()
    result = {"machine": machine(), "api": report("GET /api/v1/layouts/bench", api),
              "embed": report("GET /embed-app (one widget, a Bokeh session built)", pages)}
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
