"""Sparkplug B decode cost: CPU per DDATA message through ``SparkplugSource.handle_message``, in process.

    python bench/sparkplug.py [--messages 50000] [--metrics 10] [--json]

An edge node and a device are born once (Tahu's helpers, as the tests'
edge nodes), then ``--messages`` DDATA payloads of ``--metrics`` aliased
Double metrics each (sequence numbers following) are decoded, their aliases
resolved and their readings made, in batches of 500 handed to a hub with
no consumer: the figure is the Sparkplug source's own (protobuf parse,
sequence check, alias lookup, Reading, the screen every source shares),
without broker, alarms or store. CPU seconds are the process's
(``time.process_time``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tahutils.tahu import sparkplug_b as tahu  # noqa: E402
from tahutils.tahu.sparkplug_b_pb2 import Payload  # noqa: E402

from app.hub import Hub  # noqa: E402
from app.ingest.sparkplug import SparkplugSource  # noqa: E402

T = tahu.MetricDataType
BATCH = 500


def payload(seq: int, metrics: list[tuple], ts_ms: int) -> bytes:
    p = Payload(timestamp=ts_ms, seq=seq)
    for name, alias, value in metrics:
        tahu.addMetric(p, name, alias, T.Double, value, ts_ms)
    return p.SerializeToString()


def run(messages: int, metrics: int) -> dict:
    source = SparkplugSource("bench", Hub(), host="127.0.0.1")
    now_ms = time.time_ns() // 10**6
    birth = [("bdSeq", None, 0.0)]
    out: list = []
    source.handle_message("spBv1.0/g/NBIRTH/n", payload(0, birth, now_ms), time.time_ns(), out)
    names = [(f"Inputs/Value {i}", i, float(i)) for i in range(metrics)]
    source.handle_message("spBv1.0/g/DBIRTH/n/d", payload(1, names, now_ms), time.time_ns(), out)
    data = [payload((2 + j) % 256, [(None, i, j + i / 10) for i in range(metrics)], now_ms + j)
            for j in range(messages)]
    size = sum(map(len, data)) / len(data)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, messages, BATCH):
        out = []
        received = time.time_ns()
        for b in data[start:start + BATCH]:
            source.handle_message("spBv1.0/g/DDATA/n/d", b, received, out)
        source.publish(out)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    readings = source.meter.total - metrics  # less the DBIRTH's readings, not measured
    assert source.dead.total == 0 and source.sequence_gaps == 0, source.health()
    return {"messages": messages, "metrics_per_message": metrics, "payload_bytes": round(size),
            "readings": readings, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "us_per_message": round(cpu / messages * 1e6, 2),
            "cpu_s_per_100k_readings": round(cpu / readings * 1e5, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.messages, args.metrics)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['messages']} DDATA of {result['metrics_per_message']} metrics ({result['payload_bytes']} bytes): "
          f"{result['us_per_message']} µs CPU per message, {result['cpu_s_per_100k_readings']} CPU s per 100k "
          f"readings ({result['readings']} readings, {result['cpu_s']} CPU s)")


if __name__ == "__main__":
    main()
