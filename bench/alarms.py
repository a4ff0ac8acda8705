"""Alarm benchmarks: event latency over a real broker, engine cost with 1,000 rules, a one-year backtest.

    python bench/alarms.py                 # all three
    python bench/alarms.py --only engine   # or latency, backtest, notify

- **latency**: a real Mosquitto and an in-process Vigie runtime (embedded
  store, a threshold rule). A publisher process sends probes (alternately
  over and under the limit, timestamped in ns at publish); each probe's
  AlarmEvent reaches a subscriber of the engine, which records now minus
  the probe's timestamp. Measured at idle and while a burst of 100,000
  readings is handed to the hub (in batches of 1,000, as ingest does) and
  queued for storage, the writer busy writing them.
- **engine**: 1,000 rules of mixed kinds (threshold, rate of change, no
  data, time to threshold) over 10,000 series (1,000 devices x 10
  metrics); CPU seconds per 100,000 readings through ``AlarmEngine.accept``
  in batches of 500, after a warm-up that matched every series once.
- **backtest**: one series, a year at 1 minute (525,600 readings),
  replayed through each rule kind (``app/alarms/backtest.py``).
- **notify** (issue 12): the same runtime with an escalation policy and a
  local aiosmtpd: from the publish of an over-limit reading (its timestamp)
  to the mail accepted by the SMTP server, at idle and during a burst of
  100,000 readings waiting for the store (handed to the hub as ingest does,
  then the probes while the writer works through them; ``--burst-via
  broker``: published ahead of the probes on the broker instead, the ingest
  backlog) (group window 0, so the figure is the pipeline's own; the
  default 5 s group window adds itself by design); and from a step's
  deadline to the next step's mail accepted (20 alarms, wait_s 1 s).

Targets (issue 11, 2-core machine): event latency < 10 ms median at idle,
< 50 ms during the burst; < 0.5 CPU s per 100,000 readings; a one-year
backtest < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.measure import machine, percentile, wait_quiet  # noqa: E402

S = 1_000_000_000

PROBE = textwrap.dedent("""\
    import json, sys, time
    import paho.mqtt.client as mqtt
    port, n, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alarm-probe")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in range(n):
        t = time.time_ns()
        c.publish("probe/site/probe-1/telemetry", json.dumps({"ts": t, "level": 100.0 if i % 2 == 0 else 0.0}),
                  qos=1).wait_for_publish(5)
        time.sleep(gap)
    c.loop_stop()
""")


def config(directory: Path, port: int) -> Path:
    cfg = directory / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "vigie.yaml").write_text(textwrap.dedent(f"""\
        store: {{engine: embedded, data_dir: data, spool_dir: spool, flush_interval_s: 0.25}}
        mqtt:
          - name: m
            port: {port}
            client_id: bench-alarms
            protocol: "3.1.1"
            subscriptions:
              - topic: probe/{{site}}/{{device}}/telemetry
                timestamp_unit: ns
                fields: {{level: {{unit: m}}}}
                other_fields: drop
              - topic: bench/{{site}}/{{device}}/telemetry
        alarms:
          journal_file: alarms.sqlite
          rules:
            - {{name: probe, series: probe-1/level, h: 50}}
        """))
    return cfg


async def latency(n_idle: int, n_burst: int, burst: int) -> dict[str, Any]:
    """Return event latency (ms) percentiles at idle and during a burst of ``burst`` readings."""
    from app.config import load_config
    from app.runtime import Runtime
    from bench.ingest import BenchMosquitto
    from tests.servers import wait_until

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = BenchMosquitto(work / "mosquitto")
        broker.directory.mkdir(exist_ok=True)
        broker.start()
        runtime = Runtime(load_config(config(work, broker.port), env={}), base_dir=work)
        seen: list[float] = []
        runtime.alarms.subscribe(lambda e: seen.append((time.time_ns() - e.time_ns) / 1e6)
                                 if e.kind in ("raised", "cleared") else None)
        await runtime.start()
        try:
            await asyncio.to_thread(wait_until, lambda: runtime.sources[0].state == "connected", 10)

            async def probes(n: int) -> list[float]:
                start = len(seen)
                proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PROBE, str(broker.port), str(n),
                                                            "0.02")
                await proc.wait()
                await asyncio.to_thread(wait_until, lambda: len(seen) - start >= n, 30)
                return seen[start:]

            idle = await probes(n_idle)
            queued_peak = 0

            async def flood() -> None:
                nonlocal queued_peak
                from app.model import Reading

                t0 = time.time_ns() - 3600 * S
                for start in range(0, burst, 1000):
                    runtime.hub.publish([Reading(f"bulk-{i % 1000}", "value", t0 + i * 1000, float(i % 97))
                                         for i in range(start, start + 1000)])
                    queued_peak = max(queued_peak, runtime.writer.queue_depth)
                    await asyncio.sleep(0.005)

            flooding = asyncio.create_task(flood())
            during = await probes(n_burst)
            await flooding
        finally:
            await runtime.stop()
            broker.stop()
    return {"idle": summary(idle), "burst": summary(during), "burst_readings": burst,
            "writer_queue_peak": queued_peak}


NOTIFY_PROBE = textwrap.dedent("""\
    import json, sys, time
    import paho.mqtt.client as mqtt
    port, n, gap, first = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="notify-probe")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in range(first, first + n):  # each probe its own device and site: its own alarm, its own cascade
        c.publish(f"probe/p{i}/probe-{i}/telemetry", json.dumps({"ts": time.time_ns(), "level": 100.0}),
                  qos=1).wait_for_publish(5)
        time.sleep(gap)
    c.loop_stop()
""")

SMTP_PROCESS = textwrap.dedent("""\
    import asyncio, json, sys, time
    from aiosmtpd.controller import Controller
    port, path = int(sys.argv[1]), sys.argv[2]
    out = open(path, "a", buffering=1)
    class Box:
        async def handle_DATA(self, server, session, envelope):
            t = time.time_ns()
            out.write(json.dumps({"rcpt": envelope.rcpt_tos, "body": envelope.content.decode("utf-8", "replace"),
                                  "t": t}) + "\\n")
            return "250 OK"
    c = Controller(Box(), hostname="127.0.0.1", port=port)
    c.start()
    import signal
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    c.stop()
""")

NOTIFY_CONFIG = """\
contacts:
  people: [{{name: ops, mail: ops@example.org}}, {{name: ops2, mail: ops2@example.org}}]
escalation:
  mail_url: "mailto://127.0.0.1:{smtp}?mode=insecure&from=vigie@example.org"
  group_window_s: 0
  policies:
    - {{name: probe, steps: [{{whom: [ops], channels: [mail], wait_s: 600}}]}}
    - name: steps
      then: stop
      steps: [{{whom: [ops], channels: [mail], wait_s: 1}}, {{whom: [ops2], channels: [mail], wait_s: 600}}]
"""


async def notify_latency(n_idle: int, n_burst: int, burst: int, n_steps: int = 20,
                         burst_via: str = "store") -> dict[str, Any]:
    """Return publish-to-mail-accepted (ms) at idle and during a burst, and step deadline to next step's mail."""
    import re

    import paho.mqtt.publish as mqtt_publish

    from app.config import load_config
    from app.runtime import Runtime
    from bench.ingest import BenchMosquitto
    from bench.loadgen import Publishers
    from tests.servers import free_port, port_open, wait_until

    accepted: list[tuple[list[str], str, int]] = []

    def read_mail(path: Path) -> list[tuple[list[str], str, int]]:
        """Return what the SMTP process accepted so far (it writes one JSON line per mail)."""
        if not path.exists():
            return accepted
        lines = path.read_text().splitlines()
        for line in lines[len(accepted):]:
            if line.endswith("}"):
                doc = json.loads(line)
                accepted.append((doc["rcpt"], doc["body"], doc["t"]))
        return accepted

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = BenchMosquitto(work / "mosquitto")
        broker.directory.mkdir(exist_ok=True)
        broker.start()
        # The SMTP server in a process of its own, as a real one would be: in the same process, its thread
        # would compete with the runtime for the interpreter and charge the runtime's burst to the mail.
        mail_log, smtp_port = work / "mail.jsonl", free_port()
        smtp = await asyncio.create_subprocess_exec(sys.executable, "-c", SMTP_PROCESS, str(smtp_port), str(mail_log))
        await asyncio.to_thread(wait_until, lambda: port_open(smtp_port), 10)
        cfg = config(work, broker.port)
        text = (cfg / "vigie.yaml").read_text().replace("probe-1/level, h: 50}", "probe-*/level, h: 50, policy: probe}")
        text += "    - {name: steps, series: step-*/level, h: 50, policy: steps}\n"
        (cfg / "vigie.yaml").write_text(text + NOTIFY_CONFIG.format(smtp=smtp_port))
        runtime = Runtime(load_config(cfg, env={}), base_dir=work)
        raised: dict[str, int] = {}
        runtime.alarms.subscribe(lambda e: raised.__setitem__(e.device, e.time_ns) if e.kind == "raised" else None)
        planned: dict[str, float] = {}
        dispatch = runtime.notifier._dispatch

        def spy(c, now):  # the deadline each step 2 was due at
            if c.policy == "steps" and c.step == 1:
                planned[next(iter(c.alarms))] = c.due
            dispatch(c, now)

        runtime.notifier._dispatch = spy
        await runtime.start()

        def mail_latencies(start: int) -> list[float]:
            out = []
            for _rcpt, body, t in accepted[start:]:
                m = re.search(r"(probe-[0-9]+) level", body)
                if m and m.group(1) in raised:
                    out.append((t - raised[m.group(1)]) / 1e6)
            return out

        try:
            await asyncio.to_thread(wait_until, lambda: runtime.sources[0].state == "connected", 10)

            async def probes(n: int, first: int) -> list[float]:
                start = len(accepted)
                proc = await asyncio.create_subprocess_exec(sys.executable, "-c", NOTIFY_PROBE, str(broker.port),
                                                            str(n), "0.05", str(first))
                await proc.wait()
                await asyncio.to_thread(wait_until, lambda: len(read_mail(mail_log)) - start >= n, 60)
                return mail_latencies(start)

            idle = await probes(n_idle, 0)
            queued_peak = queued_at_probes = queued_after_probes = 0
            if burst_via == "broker":  # the burst ahead of the probes on the broker: the ingest backlog
                pubs = Publishers("127.0.0.1", broker.port, publishers=1, devices=1000, messages=burst, fields=1,
                                  base_ms=int(time.time() * 1000))
                await asyncio.to_thread(pubs.start)
                during = await probes(n_burst, 100_000)
                await asyncio.to_thread(pubs.wait, 300)
            else:  # the burst: readings taken in (as ingest hands them over) and waiting for the store
                from app.model import Reading

                async def flood() -> None:
                    nonlocal queued_peak
                    t0 = time.time_ns() - 3600 * S
                    for start in range(0, burst, 1000):
                        runtime.hub.publish([Reading(f"bulk-{i % 1000}", "value", t0 + i * 1000, float(i % 97))
                                             for i in range(start, start + 1000)])
                        queued_peak = max(queued_peak, runtime.writer.queue_depth)
                        await asyncio.sleep(0)

                await flood()  # taken in (engine, live cache) before the probes: now they wait for the store
                queued_at_probes = runtime.writer.queue_depth
                during = await probes(n_burst, 100_000)
                queued_after_probes = runtime.writer.queue_depth
            # Step timing: n alarms on their own devices; nobody acknowledges; step 2 is due 1 s after step 1.
            start = len(accepted)
            now_ms = int(time.time() * 1000)
            await asyncio.to_thread(mqtt_publish.multiple, [
                {"topic": f"probe/s{i}/step-{i}/telemetry", "payload": json.dumps({"ts": now_ms * 1_000_000,
                                                                                   "level": 99}), "qos": 1}
                for i in range(n_steps)], hostname="127.0.0.1", port=broker.port)
            await asyncio.to_thread(wait_until, lambda: sum("ops2@" in r[0][0] for r in read_mail(mail_log)[start:])
                                    >= n_steps, 60)
            step = []
            for rcpt, body, t in accepted[start:]:
                m = re.search(r"(step-[0-9]+) level", body)
                if rcpt == ["ops2@example.org"] and m and f"steps|{m.group(1)}/level" in planned:
                    step.append((t / 1e9 - planned[f"steps|{m.group(1)}/level"]) * 1000)
        finally:
            await runtime.stop()
            smtp.terminate()
            await smtp.wait()
            broker.stop()
    return {"publish_to_mail_idle": summary(idle), "publish_to_mail_burst": summary(during),
            "burst_readings": burst, "burst_via": burst_via, "writer_queue_peak": queued_peak,
            "writer_queue_at_probes": queued_at_probes, "writer_queue_after_probes": queued_after_probes,
            "step_deadline_to_mail": summary(step)}


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": round(percentile(values, 50) or 0, 2),
            "p99_ms": round(percentile(values, 99) or 0, 2), "max_ms": round(max(values, default=0), 2)}


def engine_cost(readings: int = 200_000) -> dict[str, Any]:
    """Return CPU seconds per 100,000 readings with 1,000 rules of mixed kinds over 10,000 series."""
    from app.alarms.engine import AlarmEngine
    from app.alarms.rules import rule_from_spec
    from app.model import Reading

    rules = []
    for i in range(1000):
        devices = f"dev{i % 100:03d}*"  # ten devices each (dev0000-dev0999 in groups)
        metric = f"m{i % 10}"
        kind = i % 10
        common = {"name": f"r{i}", "series": f"{devices}/{metric}"}
        if kind < 4:
            rules.append(rule_from_spec({**common, "type": "threshold", "h": 90, "l": 5, "deadband": 1}))
        elif kind < 7:
            rules.append(rule_from_spec({**common, "type": "rate_of_change", "rise": 30, "window_s": 300}))
        elif kind < 9:
            rules.append(rule_from_spec({**common, "type": "no_data", "timeout_s": 600}))
        else:
            rules.append(rule_from_spec({**common, "type": "time_to_threshold", "limit": 95, "window_s": 300,
                                         "horizon_s": 600}))
    t0 = 1_790_000_000 * S
    clock = [t0]
    engine = AlarmEngine(rules, clock=lambda: clock[0], log_events=False)
    series = [(f"dev{d:04d}", f"m{m}") for d in range(1000) for m in range(10)]

    def batches(n: int, start: int):
        batch = []
        for i in range(start, start + n):
            device, metric = series[i % len(series)]
            # Mostly normal values, with an excursion now and then (an alarm system is quiet most of the time).
            value = 50 + 30 * math.sin(i / 7919) + (50 if i % 10_007 == 0 else 0)
            batch.append(Reading(device, metric, t0 + i * 10_000_000, value))
            if len(batch) == 500:
                yield batch
                batch = []

    for b in batches(len(series), 0):  # warm-up: every series matched against the rules once
        engine.accept(b)
    measured = list(batches(readings, len(series)))  # made before the clock starts: the engine's cost only
    cpu0 = time.process_time()
    for b in measured:
        engine.accept(b)
    cpu = time.process_time() - cpu0
    matched = sum(len(engine.rules_for(f"{d}/{m}")) for d, m in series)
    return {"rules": len(rules), "series": len(series), "rules_per_series": round(matched / len(series), 2),
            "readings": readings, "cpu_s_per_100k": round(cpu / readings * 100_000, 3),
            "events": engine.raised_total}


def backtest() -> dict[str, Any]:
    """Return seconds to replay one year at 1 minute through each rule kind."""
    from app.alarms.backtest import replay
    from app.alarms.rules import rule_from_spec
    from app.model import Reading

    t0 = 1_700_000_000 * S
    readings = [Reading("dam-1", "level", t0 + i * 60 * S, 10 + 5 * math.sin(i / 500)) for i in range(525_600)]
    out = {}
    for spec in ({"type": "threshold", "name": "r", "h": 14, "deadband": 0.2},
                 {"type": "rate_of_change", "name": "r", "rise": 0.5, "window_s": 900},
                 {"type": "no_data", "name": "r", "timeout_s": 300},
                 {"type": "time_to_threshold", "name": "r", "limit": 14.5, "window_s": 900}):
        t = time.perf_counter()
        events = replay(rule_from_spec(spec), readings)
        out[spec["type"]] = {"seconds": round(time.perf_counter() - t, 2), "events": len(events)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["latency", "engine", "backtest", "notify"])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--burst-via", choices=["store", "broker"], default="store",
                        help="notify: the burst waits for the store (the issue's case), or is ahead of the probes "
                             "on the broker (the ingest backlog)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": machine(("panel", "aiomqtt", "paho-mqtt")),
                              "busy_before": round(wait_quiet(20), 2)}
    if args.only in (None, "engine"):
        result["engine"] = engine_cost()
    if args.only in (None, "backtest"):
        result["backtest_one_year"] = backtest()
    if args.only in (None, "latency"):
        result["latency"] = asyncio.run(latency(args.probes, args.probes, args.burst))
    if args.only in (None, "notify"):
        result["notify"] = asyncio.run(notify_latency(args.probes // 2, args.probes // 2, args.burst,
                                                          burst_via=args.burst_via))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
