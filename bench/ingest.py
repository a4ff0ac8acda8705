"""Ingest benchmark: MQTT → Vigie → InfluxDB, end to end, with real servers.

    .venv/bin/python bench/ingest.py [--devices 1000] [--messages 200000] [--fields 1]
                                     [--processes 1] [--publishers 2] [--json]

Starts a Mosquitto and an InfluxDB (Debian packages) on free loopback ports
in a temporary directory, writes a Vigie config directory (InfluxDB engine,
one broker, template ``bench/{site}/{device}/telemetry``, JSON with ``ts`` in
ms), starts ``vigie serve`` as subprocess(es) so their CPU and memory can be
read from /proc, waits until each reports its MQTT source connected on
``/health``, then releases paho publisher processes (bench/loadgen.py) that
send the messages at QoS 1 as fast as the broker acknowledges them. It then
waits until the readings are in InfluxDB (or stop arriving) and reports.

``--processes N`` runs N Vigie processes with distinct client ids and web
ports on one shared subscription (``shared_group: bench``): the scale-out
path of the README.

``--backlog`` measures Vigie alone: it connects (creating its persistent
session), is stopped, the messages are published while it is away (the
broker queues them), and Vigie is started again to drain the queue, with
no publisher competing for the CPU. ``--py-spy FILE`` samples the first
Vigie process with py-spy during the measured phase.

The machine is measured too (/proc/stat): CPU used by processes that are
not part of the run is reported, with a warning, since it skews every
figure; ``--wait-quiet S`` waits up to S seconds for a quiet machine first.
Exit status 1 when readings were lost, a publisher failed or a Vigie
process did not exit 0 on SIGTERM. See bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loadgen import Publishers, field_names  # noqa: E402
from bench.measure import CLK_TCK, cpu_seconds, machine, machine_busy, machine_ticks, memory_mb, wait_quiet  # noqa: E402
from tests.servers import InfluxDB, Mosquitto, free_port, wait_until  # noqa: E402

VIGIE = "python -m app.cli"  # this checkout's code, run by the interpreter running the benchmark
SOURCE = "bench"
QUIET_CORES = 0.2
CONFIG_KEYS = ("devices", "messages", "fields", "processes", "publishers", "window", "batch_size", "flush_interval",
               "backlog", "broker_inflight", "broker_queue", "protocol", "transport", "engine", "rules", "warmup",
               "ack", "receive_maximum", "vigie")
UNITS = {"level": "m", "inflow": "m3/s", "outflow": "m3/s", "rainfall": "mm", "gate_opening": "%",
         "turbidity": "NTU", "temperature": "°C", "pressure": "bar", "flow_rate": "l/s", "battery": "V"}


# -- servers -----------------------------------------------------------------
class BenchMosquitto(Mosquitto):
    """Mosquitto for floods: no persistence, queues large enough for every message."""

    def __init__(self, directory: Path, inflight: int = 1000, queued: int = 20_000_000) -> None:
        super().__init__(directory)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # Per client, beyond those in flight: Vigie may fall behind by a whole run
            # (Mosquitto's default, 1000, drops the rest: see --broker-queue).
            f"max_queued_messages {queued}\n"
            "max_queued_bytes 0\n"
            # Outgoing QoS 1 in flight per subscriber (Mosquitto's default is 20).
            f"max_inflight_messages {inflight}\n"
            "sys_interval 1\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
            "user root\n"
        )


def broker_stats(host: str, port: int, wait_s: float = 2.5) -> dict[str, str]:
    """Return Mosquitto's $SYS/broker counters (published every sys_interval)."""
    import paho.mqtt.client as mqtt

    stats: dict[str, str] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sys", protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, m: stats.__setitem__(m.topic.removeprefix("$SYS/broker/"),
                                                            m.payload.decode())
    client.connect(host, port)
    client.subscribe("$SYS/broker/#")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    return stats


def influx_count(influx: InfluxDB, measurement: str = "telemetry") -> int:
    """Return how many readings InfluxDB holds."""
    total = 0
    for row in influx.points(f'SELECT count("value") FROM "{measurement}"'):
        total += int(row.get("count") or 0)
    return total


def embedded_count(data_dir: Path) -> int:
    """Return how many readings an embedded store holds (once its process has stopped)."""
    import asyncio

    from app.store.embedded import EmbeddedStore

    async def count() -> int:
        store = EmbeddedStore(data_dir)
        await store.open()
        try:
            return await store.count()
        finally:
            await store.close()

    return asyncio.run(count())


# -- Vigie -------------------------------------------------------------------
def write_config(directory: Path, *, index: int, broker: Mosquitto, influx: InfluxDB | None, fields: int,
                 shared: bool, protocol: str, batch_size: int, flush_interval_s: float,
                 ack: str = "durable", receive_maximum: int = 1000, transport: str | None = "gmqtt",
                 rules: bool = True) -> None:
    """Write a Vigie config directory for process ``index``."""
    directory.mkdir(parents=True, exist_ok=True)
    field_map = {n: {"metric": "water_level" if n == "level" else n, "unit": UNITS.get(n, "")}
                 for n in field_names(fields)}
    mqtt: dict[str, Any] = {
        "name": SOURCE,
        "host": broker.host,
        "port": broker.port,
        "client_id": f"vigie-bench-{index}",
        "protocol": protocol,
        "ack": ack,
        "receive_maximum": receive_maximum,
        "subscriptions": [{
            "topic": "bench/{site}/{device}/telemetry",
            "decoder": "json",
            "timestamp_field": "ts",
            "timestamp_unit": "ms",
            "fields": field_map,
        }],
    }
    if transport is not None:  # None: left out, for a build from before the key (aiomqtt only)
        mqtt["transport"] = transport
    if shared:
        mqtt["shared_group"] = "bench"
    if influx is not None:
        store = {"engine": "influx", "url": influx.url, "database": influx.database, "measurement": "telemetry"}
    else:
        store = {"engine": "embedded", "data_dir": "data"}
    store.update(batch_size=batch_size, flush_interval_s=flush_interval_s, spool_dir="spool")
    doc: dict[str, Any] = {"server": {"address": "127.0.0.1"}, "store": store, "mqtt": [mqtt]}
    if rules:
        # Alarm evaluation on every reading: a threshold on each device's level (never crossed: the bench's
        # values stay below 10) and a rate of change on the second field when there is one.
        doc["alarms"] = {"journal_file": "alarms.sqlite", "rules": [
            {"name": "level high", "series": "*/water_level", "h": 1000.0, "severity": "medium"}]}
        if fields > 1:
            doc["alarms"]["rules"].append({"type": "rate_of_change", "name": "inflow jump",
                                           "series": "*/inflow", "rise": 1000.0, "window_s": 900,
                                           "severity": "high"})
    # JSON is YAML: no dependency on how a YAML dumper quotes things.
    (directory / "vigie.yaml").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


@dataclass
class VigieProcess:
    """One ``vigie serve`` subprocess with its config, data root and web port."""

    index: int
    config_dir: Path
    data_root: Path
    port: int
    log_path: Path
    command: str = str(VIGIE)
    proc: subprocess.Popen | None = None
    exit_codes: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Start ``vigie serve``."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "VIGIE_INGEST_TOKEN"}  # the HTTP API stays off
        if self.command == VIGIE or Path(self.command).is_dir():  # a checkout's code, whatever the cwd
            code = ROOT if self.command == VIGIE else Path(self.command).resolve()
            command = [sys.executable, "-m", "app.cli"]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(code), env.get("PYTHONPATH"))))
        elif os.sep in self.command:  # a path: it must not depend on the data root we run in
            command = [str(Path(self.command).resolve())]
        else:
            command = [self.command]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, "serve", "--config", str(self.config_dir), "--port", str(self.port),
                 "--data-root", str(self.data_root)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.data_root, env=env,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def health(self) -> dict[str, Any] | None:
        """Return the /health document (200 or 503), or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503: degraded, still a health document
            return json.loads(exc.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def source_state(self) -> str | None:
        """Return the MQTT source's connection state."""
        h = self.health()
        return h["sources"][SOURCE]["state"] if h else None

    def wait_connected(self, timeout: float = 60) -> None:
        """Wait until the MQTT source reports ``connected``."""
        def connected() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vigie {self.index} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.source_state() == "connected"

        wait_until(connected, timeout=timeout, interval=0.1, what=f"vigie {self.index} to connect")

    def stop(self) -> int:
        """SIGTERM and wait; return (and keep) the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
            self.exit_codes.append(rc)
            raise RuntimeError(f"vigie {self.index} did not stop within 60 s after SIGTERM") from None
        self.exit_codes.append(rc)
        self.proc = None
        return rc

    def log_tail(self, n: int = 4000) -> str:
        """Return the end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def started_at(self) -> float | None:
        """Return the wall time of the last "vigie started" log line (ms resolution).

        The runtime logs it once the store is open and the source tasks are
        created, before they first run: nothing was ingested before it.
        """
        last = None
        for m in re.finditer(r"^(\S+ \S+) INFO app\.runtime: vigie started", self.log_tail(10**7), re.MULTILINE):
            last = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return last


# -- the run -----------------------------------------------------------------
@dataclass
class Sample:
    """What the Vigie processes said at one instant."""

    t: float
    written: int
    queue: int


def health_totals(vigies: list[VigieProcess]) -> tuple[int, int, list[dict[str, Any] | None]]:
    """Return (written, queue depth) summed over processes, and each health document."""
    docs = [v.health() for v in vigies]
    written = sum(d["store"]["written_total"] for d in docs if d)
    queue = sum(d["store"]["queue_depth"] for d in docs if d)
    return written, queue, docs


def watch(vigies: list[VigieProcess], expected: int, publishers: Publishers | None, *, stall_s: float,
          timeout_s: float) -> tuple[list[Sample], float | None]:
    """Poll health until every reading is written, or writes stall; return samples and last-progress time."""
    samples: list[Sample] = []
    last_written, last_progress, started = -1, time.time(), time.time()
    progress_at: float | None = None
    while True:
        now = time.time()
        written, queue, _ = health_totals(vigies)
        samples.append(Sample(now, written, queue))
        if written != last_written:
            if written > last_written >= 0 or (last_written < 0 and written > 0):
                progress_at = now
            last_written, last_progress = written, now
        publishing = publishers is not None and not publishers.done()
        if not publishing and written >= expected:
            break
        if not publishing and now - last_progress > stall_s:
            break
        if now - started > timeout_s:
            break
        time.sleep(0.2)
    return samples, progress_at


def settle_count(influx: InfluxDB, expected: int, *, stable_polls: int = 3, interval: float = 1.0) -> int:
    """Poll InfluxDB's count until it reaches ``expected`` or stops growing."""
    last, same = -1, 0
    while True:
        n = influx_count(influx)
        if n >= expected:
            return n
        same = same + 1 if n == last else 0
        if same >= stable_polls:
            return n
        last = n
        time.sleep(interval)


def start_pyspy(pid: int, out: str, duration_s: int) -> subprocess.Popen | None:
    """Start py-spy recording a process, or return None when it is not installed.

    The format follows the file name: ``.svg`` a flame graph, ``.json``
    speedscope, anything else raw collapsed stacks (one line per stack).
    """
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy is not installed (.venv/bin/pip install py-spy); not profiling", file=sys.stderr)
        return None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(out).suffix, "raw")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", fmt, "--output", out,
                             "--rate", "200", "--duration", str(duration_s)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_pyspy(proc: subprocess.Popen | None) -> None:
    """Stop py-spy (SIGINT makes it write its output)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one benchmark configuration in ``work``; return the results."""
    expected = args.messages * args.fields
    shared = args.processes > 1 or args.shared
    (work / "mosquitto").mkdir()
    broker = BenchMosquitto(work / "mosquitto", inflight=args.broker_inflight, queued=args.broker_queue)
    influx = None
    if args.engine == "influx":
        (work / "influxdb").mkdir()
        influx = InfluxDB(work / "influxdb")
    vigies: list[VigieProcess] = []
    pyspy = None
    result: dict[str, Any] = {}
    try:
        broker.start()
        if influx is not None:
            influx.start()
        for i in range(args.processes):
            write_config(work / f"config-{i}", index=i, broker=broker, influx=influx, fields=args.fields,
                         shared=shared, protocol=args.protocol, batch_size=args.batch_size,
                         flush_interval_s=args.flush_interval, ack=args.ack, receive_maximum=args.receive_maximum,
                         transport=None if args.transport == "aiomqtt" and args.vigie != VIGIE else args.transport,
                         rules=args.rules)
            vigies.append(VigieProcess(i, work / f"config-{i}", work / f"vigie-{i}", free_port(),
                                       work / f"vigie-{i}.log", command=args.vigie))
        for v in vigies:
            v.start()
        for v in vigies:
            v.wait_connected()

        base_ms = int(time.time() * 1000) - 3_600_000 - args.messages // args.devices - 1
        pub_kwargs = dict(publishers=args.publishers, devices=args.devices, messages=args.messages,
                          fields=args.fields, base_ms=base_ms, window=args.window)
        warm = 0
        if args.warmup:
            # One message per device first, outside the measured window: the series exist (a new series
            # costs the embedded store milliseconds of its first write), as on a site already running.
            warmup = Publishers(broker.host, broker.port, **(pub_kwargs | {"messages": args.devices,
                                                                            "base_ms": base_ms - 10_000}))
            warmup.start()
            warmup.wait(timeout=args.timeout)
            warm = args.devices * args.fields
            wait_until(lambda: health_totals(vigies)[0] >= warm, timeout=args.timeout, interval=0.2,
                       what="the warm-up readings written")
        servers = {"mosquitto": broker} | ({"influxd": influx} if influx is not None else {})
        server_cpu0 = {k: cpu_seconds(v.proc.pid) for k, v in servers.items()}
        load_before = machine_busy(1.0, interrupts=False)
        load_avg_before = os.getloadavg()[0]

        def snapshot() -> tuple[float, float, float]:
            """Return machine busy CPU s, wall time, and the CPU s of our servers and Vigie processes."""
            ours = sum(cpu_seconds(v.proc.pid) for v in servers.values())
            ours += sum(cpu_seconds(v.pid) for v in vigies if v.proc is not None)
            me = resource.getrusage(resource.RUSAGE_SELF)
            ours += me.ru_utime + me.ru_stime  # this script's polling
            return machine_ticks(interrupts=False)[0] / CLK_TCK, time.time(), ours

        startup_cpu = [cpu_seconds(v.pid) for v in vigies]

        if args.backlog:
            # Vigie away: its persistent session queues everything at the broker.
            for v in vigies:
                if v.stop() != 0:
                    raise RuntimeError(f"vigie {v.index} exited with {v.exit_codes[-1]}:\n{v.log_tail()}")
            publishers = Publishers(broker.host, broker.port, **pub_kwargs)
            publishers.start()
            pub_results = publishers.wait(timeout=args.timeout)
            for v in vigies:
                v.start()
            t_vigie_start = time.time()
            cpu0 = [0.0 for _ in vigies]  # the startup is subtracted below
            wait_until(lambda: all(v.health() for v in vigies), timeout=60, interval=0.05,
                       what="vigie /health")
            if args.py_spy:
                pyspy = start_pyspy(vigies[0].pid, args.py_spy, int(args.timeout))
            snap0, pub_cpu_in_window = snapshot(), 0.0
            samples, t_last = watch(vigies, expected + warm, None, stall_s=args.stall, timeout_s=args.timeout)
            t0 = min(filter(None, (v.started_at() for v in vigies)), default=t_vigie_start)
        else:
            cpu0 = [cpu_seconds(v.pid) for v in vigies]
            if args.py_spy:
                pyspy = start_pyspy(vigies[0].pid, args.py_spy, int(args.timeout))
            snap0 = snapshot()
            publishers = Publishers(broker.host, broker.port, **pub_kwargs)
            publishers.start()
            samples, t_last = watch(vigies, expected + warm, publishers, stall_s=args.stall,
                                    timeout_s=args.timeout)
            pub_results = publishers.wait(timeout=args.timeout)
            pub_cpu_in_window = sum(r.cpu_s for r in pub_results)
            t0 = min(r.first_publish for r in pub_results)
        snap1 = snapshot()
        cpu1 = [cpu_seconds(v.pid) for v in vigies]
        server_cpu = {k: cpu_seconds(v.proc.pid) - server_cpu0[k] for k, v in servers.items()}
        stop_pyspy(pyspy)
        pyspy = None
        rss = [memory_mb(v.pid)[1] for v in vigies]
        if influx is not None:
            stored = settle_count(influx, expected + warm)
        _, _, docs = health_totals(vigies)
        bstats = broker_stats(broker.host, broker.port)
        exit_codes = [v.stop() for v in vigies]
        if influx is None:  # the embedded store's file is locked while Vigie runs: count once it has stopped
            stored = sum(embedded_count(v.data_root / "data") for v in vigies)
        stored -= warm

        errors = [r.error for r in pub_results if r.error]
        acked = sum(r.acked for r in pub_results)
        pub_span = max(r.last_ack for r in pub_results) - min(r.first_publish for r in pub_results)
        cpu = [c1 - c0 for c0, c1 in zip(cpu0, cpu1, strict=True)]
        if args.backlog:
            cpu = [c - s for c, s in zip(cpu, startup_cpu, strict=True)]
        e2e_span = (t_last - t0) if t_last else None
        per_proc = []
        for v, c, r, d in zip(vigies, cpu, rss, docs, strict=True):
            src = d["sources"][SOURCE] if d else {}
            store = d["store"] if d else {}
            per_proc.append({
                "index": v.index,
                "pid": v.pid if v.proc else None,
                "readings_received": src.get("readings_total"),
                "written": (store.get("written_total") or 0) - warm // len(vigies),
                "rejected": store.get("rejected_total"),
                "dead_letters": (src.get("dead_letters") or {}).get("total"),
                "dead_letters_by_kind": (src.get("dead_letters") or {}).get("by_kind"),
                "spool_files": store.get("spool_files"),
                "spool_readings": store.get("spool_readings"),
                "queue_depth_end": store.get("queue_depth"),
                "cpu_s": round(c, 2),
                "cpu_s_per_100k": round(c / max(1, (store.get("written_total") or 0) - warm // len(vigies))
                                        * 100_000, 2),
                "peak_rss_mb": round(r, 1),
                "exit_code": exit_codes[v.index],
            })
        total_cpu = sum(cpu)
        wall = max(1e-9, snap1[1] - snap0[1])
        busy = snap1[0] - snap0[0]
        ours = snap1[2] - snap0[2] + pub_cpu_in_window
        others = max(0.0, busy - ours) / wall
        result = {
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(("aiomqtt", "paho-mqtt", "gmqtt", "duckdb", "tornado", "panel"),
                               {"influxd": ["influxd", "version"]}),
            "config": {k: getattr(args, k) for k in CONFIG_KEYS} | {"shared_subscription": shared},
            "messages_published": acked,
            "messages_sent_unacked": sum(r.sent - r.acked for r in pub_results),
            "readings_published": acked * args.fields,
            "readings_expected": expected,
            "readings_stored": stored,
            "readings_lost": expected - stored,
            "e2e_seconds": round(e2e_span, 2) if e2e_span else None,
            "e2e_readings_per_s": round(stored / e2e_span) if e2e_span else None,
            "publish_seconds": round(pub_span, 2),
            "publish_messages_per_s": round(acked / pub_span) if pub_span > 0 else None,
            "publisher_cpu_s": round(sum(r.cpu_s for r in pub_results), 2),
            "vigie_cpu_s": round(total_cpu, 2),
            "vigie_cpu_s_per_100k_readings": round(total_cpu / max(1, stored) * 100_000, 2),
            "mosquitto_cpu_s": round(server_cpu["mosquitto"], 2),
            "influxd_cpu_s": round(server_cpu["influxd"], 2) if "influxd" in server_cpu else None,
            "vigie_cpu_s_per_100k_messages": round(total_cpu / max(1, stored // args.fields) * 100_000, 2),
            "mosquitto_cpu_s_per_100k_messages": round(server_cpu["mosquitto"] / max(1, acked) * 100_000, 2),
            "e2e_messages_per_s": round(stored / args.fields / e2e_span) if e2e_span else None,
            "loadavg_before": load_avg_before,
            "loadavg_after": os.getloadavg()[0],
            "vigie_peak_queue_depth": max((s.queue for s in samples), default=0),
            "machine_cores": os.cpu_count(),
            "machine_busy_cores": round(busy / wall, 2),
            "other_load_cores_before": round(load_before, 2),
            "other_load_cores_during": round(others, 2),
            "vigie": per_proc,
            "broker": {k: bstats.get(k) for k in ("publish/messages/received", "publish/messages/sent",
                                                  "publish/messages/dropped", "messages/received",
                                                  "messages/sent", "clients/connected")},
            "publisher_errors": errors,
        }
        return result
    except Exception:
        for v in vigies:
            if v.proc is not None:
                print(f"--- vigie {v.index} log (tail) ---\n{v.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop_pyspy(pyspy)
        for v in vigies:
            if v.proc is not None:
                with contextlib.suppress(Exception):
                    v.stop()
        if influx is not None:
            influx.stop()
        broker.stop()


# -- output ------------------------------------------------------------------
def _n(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def print_table(r: dict[str, Any]) -> None:
    """Print the results as a readable table."""
    c = r["config"]
    mode = "backlog drain (Vigie alone)" if c["backlog"] else "live (publishers and Vigie together)"
    print(f"\nVigie ingest benchmark, {r['date']}: {c['messages']:,} messages × {c['fields']} field(s) from "
          f"{c['devices']:,} devices, {c['publishers']} publisher(s), {c['processes']} Vigie process(es)"
          f"{' on a shared subscription' if c['shared_subscription'] else ''}; {mode}; MQTT {c['protocol']}, "
          f"transport {c.get('transport', 'aiomqtt')}, store {c.get('engine', 'influx')}, "
          f"alarm rules {'on' if c.get('rules', True) else 'off'}, "
          f"ack {c.get('ack', 'durable')}, receive_maximum {c.get('receive_maximum', '-')}")
    rows = [
        ("messages published (PUBACKed)", _n(r["messages_published"])),
        ("readings published", _n(r["readings_published"])),
        ("readings stored (store's own count)", _n(r["readings_stored"])),
        ("readings lost", _n(r["readings_lost"])),
        ("end to end, s (first publish → last stored)", _n(r["e2e_seconds"])),
        ("end to end, readings/s", _n(r["e2e_readings_per_s"])),
        ("end to end, messages/s", _n(r.get("e2e_messages_per_s"))),
        ("publisher rate, messages/s", _n(r["publish_messages_per_s"])),
        ("Vigie CPU s, all processes", _n(r["vigie_cpu_s"])),
        ("Vigie CPU s per 100k readings", _n(r["vigie_cpu_s_per_100k_readings"])),
        ("Vigie CPU s per 100k messages", _n(r.get("vigie_cpu_s_per_100k_messages"))),
        ("Mosquitto CPU s per 100k messages", _n(r.get("mosquitto_cpu_s_per_100k_messages"))),
        ("load average (1 min) before / after", f"{r.get('loadavg_before', 0):.2f} / {r.get('loadavg_after', 0):.2f}"),
        ("Vigie peak writer queue (readings)", _n(r["vigie_peak_queue_depth"])),
        ("machine busy, cores (of which not ours)",
         f"{_n(r['machine_busy_cores'])} ({_n(r['other_load_cores_during'])})"),
        ("Mosquitto / InfluxDB / publishers CPU s",
         f"{_n(r['mosquitto_cpu_s'])} / {_n(r['influxd_cpu_s'])} / {_n(r['publisher_cpu_s'])}"),
        ("broker: publishes received / sent / dropped",
         " / ".join(_n(r["broker"].get(k)) for k in ("publish/messages/received", "publish/messages/sent",
                                                     "publish/messages/dropped"))),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v:>14}")
    print("\n  per Vigie process: received  written  dead  spool  CPU s  CPU s/100k  peak RSS MiB  exit")
    for p in r["vigie"]:
        print(f"  #{p['index']:<17} {_n(p['readings_received']):>9} {_n(p['written']):>8} "
              f"{_n(p['dead_letters']):>5} {_n(p['spool_readings']):>6} {p['cpu_s']:>6.2f} "
              f"{p['cpu_s_per_100k']:>11.2f} {p['peak_rss_mb']:>13.1f} {p['exit_code']:>5}")
    if r["publisher_errors"]:
        print(f"  publisher errors: {r['publisher_errors']}")
    if max(r["other_load_cores_before"], r["other_load_cores_during"]) > QUIET_CORES:
        print(f"  WARNING: other processes kept {r['other_load_cores_during']:.2f} cores busy during the run "
              f"({r['other_load_cores_before']:.2f} just before): these figures understate what this machine can do")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--fields", type=int, default=1, help="numeric fields per message (readings = messages × k)")
    p.add_argument("--processes", type=int, default=1,
                   help="Vigie processes (>1: one shared subscription, $share/bench/...)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--shared", action="store_true", help="use the shared subscription even with one process")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="Vigie's MQTT protocol version")
    p.add_argument("--transport", choices=("aiomqtt", "gmqtt"), default="gmqtt",
                   help="the MQTT client library of Vigie's source (mqtt transport:)")
    p.add_argument("--engine", choices=("embedded", "influx"), default="influx",
                   help="the store: an InfluxDB 1.x started for the run, or the embedded DuckDB file")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="no warm-up (by default one message per device is stored before the measured flood)")
    p.add_argument("--no-rules", dest="rules", action="store_false",
                   help="no alarm rules (by default a threshold on every level and a rate of change on inflow)")
    p.add_argument("--ack", choices=("durable", "on_arrival"), default="durable",
                   help="when Vigie acknowledges a QoS 1 message: once its readings are durable, or on arrival")
    p.add_argument("--receive-maximum", type=int, default=1000,
                   help="Vigie's mqtt receive_maximum (MQTT 5 Receive Maximum; with 3.1.1 match --broker-inflight)")
    p.add_argument("--backlog", action="store_true",
                   help="publish while Vigie is stopped, then measure Vigie draining the broker's queue alone")
    p.add_argument("--window", type=int, default=2000, help="unacknowledged messages per publisher")
    p.add_argument("--batch-size", type=int, default=5000, help="store.batch_size")
    p.add_argument("--flush-interval", type=float, default=0.25, help="store.flush_interval_s")
    p.add_argument("--broker-inflight", type=int, default=1000, help="Mosquitto max_inflight_messages")
    p.add_argument("--broker-queue", type=int, default=20_000_000, help="Mosquitto max_queued_messages")
    p.add_argument("--stall", type=float, default=10.0, help="give up after this many seconds without progress")
    p.add_argument("--timeout", type=float, default=170.0, help="give up on a run after this many seconds")
    p.add_argument("--py-spy", metavar="FILE",
                   help="record the first Vigie process with py-spy (.svg flame graph, .json speedscope, else raw)")
    p.add_argument("--vigie", default=str(VIGIE),
                   help="the vigie executable to benchmark, or a checkout's directory (run with this Python)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help=f"first wait up to SECONDS for other processes to use less than {QUIET_CORES} core")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--output", metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    if min(args.devices, args.messages, args.fields, args.processes, args.publishers) < 1:
        p.error("counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when readings were lost or a process did not stop cleanly."""
    args = parse_args(argv)
    for binary in ("mosquitto", "influxd") if args.engine == "influx" else ("mosquitto",):
        if not (shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists()):
            print(f"{binary} is not installed (Debian: apt-get install mosquitto influxdb)", file=sys.stderr)
            return 2
    if args.wait_quiet:
        wait_quiet(args.wait_quiet, QUIET_CORES, interrupts=False)
    work = Path(tempfile.mkdtemp(prefix="vigie-bench-"))
    try:
        result = run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    clean = all(p["exit_code"] == 0 for p in result["vigie"])
    return 0 if result["readings_lost"] == 0 and clean and not result["publisher_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
