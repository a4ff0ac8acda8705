"""Load generator for the ingest benchmark: paho-mqtt publishers in their own processes.

Each publisher process owns one paho client (MQTT 3.1.1, QoS 1) and sends
its share of the messages as fast as the broker acknowledges them. It keeps
a window of unacknowledged messages of its own and waits for every PUBACK
before it reports, so a message it counts as published is one the broker
has taken responsibility for.

Why not paho's own in-flight limit: with ``max_inflight_messages > 0``,
paho walks every outstanding message on each PUBACK (``_update_inflight``),
which costs O(window) per message; with 0 (unlimited) it skips that walk,
and the window here bounds memory instead. Why no ``loop_start()`` thread:
in threaded mode every ``publish()`` wakes the network thread through a
socket pair; here ``publish()`` writes inline and ``loop()`` reads the
PUBACKs between bursts, one thread, no wake-ups.

Message ``j`` (0 ≤ j < messages) goes to device ``j % devices`` with that
device's sequence number ``j // devices``, so timestamps are unique per
device (InfluxDB would overwrite a point with the same series and time).
Publisher ``p`` of ``P`` sends the ``j`` with ``j % P == p``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource
import time
from dataclasses import asdict, dataclass

import paho.mqtt.client as mqtt

# Fields of a dam / PLC payload, in order; ``--fields k`` takes the first k.
FIELD_NAMES = ("level", "inflow", "outflow", "rainfall", "gate_opening", "turbidity", "temperature",
               "pressure", "flow_rate", "battery")


def field_names(k: int) -> list[str]:
    """Return the names of ``k`` numeric fields."""
    return [FIELD_NAMES[i] if i < len(FIELD_NAMES) else f"f{i}" for i in range(k)]


def device_name(i: int) -> tuple[str, str]:
    """Return (site, device) of device number ``i``."""
    return f"site{i % 10:02d}", f"dev{i:05d}"


def topic_of(i: int) -> str:
    """Return the telemetry topic of device number ``i``."""
    site, device = device_name(i)
    return f"bench/{site}/{device}/telemetry"


def payload(ts_ms: int, names: list[str], seq: int) -> bytes:
    """Return one JSON message: the timestamp and one number per field."""
    values = ",".join(f'"{n}":{(seq % 1000) * 0.01 + k:.2f}' for k, n in enumerate(names))
    return f'{{"ts":{ts_ms},{values}}}'.encode()


@dataclass
class PublisherResult:
    """What one publisher process did."""

    index: int
    sent: int = 0
    acked: int = 0
    first_publish: float = 0.0  # time.time()
    last_ack: float = 0.0
    cpu_s: float = 0.0
    error: str | None = None

    @property
    def rate(self) -> float:
        """Return acknowledged messages per second."""
        span = self.last_ack - self.first_publish
        return self.acked / span if span > 0 else 0.0


def publish_share(index: int, publishers: int, host: str, port: int, *, devices: int, messages: int,
                  fields: int, base_ms: int, window: int, ready: mp.Queue, go: mp.Event,
                  results: mp.Queue) -> None:
    """Publish this process's share of the messages; put a PublisherResult on ``results``."""
    res = PublisherResult(index)
    try:
        _publish(res, index, publishers, host, port, devices, messages, fields, base_ms, window, ready, go)
    except Exception as exc:  # reported to the parent, which fails the run
        res.error = f"{type(exc).__name__}: {exc}"
        if not res.first_publish:
            ready.put(index)  # failed before publishing: do not keep the others waiting
    usage = resource.getrusage(resource.RUSAGE_SELF)
    res.cpu_s = usage.ru_utime + usage.ru_stime
    results.put(asdict(res))


def _publish(res: PublisherResult, index: int, publishers: int, host: str, port: int, devices: int,
             messages: int, fields: int, base_ms: int, window: int, ready: mp.Queue, go: mp.Event) -> None:
    names = field_names(fields)
    topics = [topic_of(i) for i in range(devices)]

    def on_publish(_client, _userdata, _mid, _reason_code, _properties) -> None:
        res.acked += 1

    def pump(timeout: float) -> None:
        rc = client.loop(timeout)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"connection lost: {mqtt.error_string(rc)}")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.max_inflight_messages_set(0)  # unlimited in paho: our window bounds it (see module doc)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port, keepalive=60)
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError("no CONNACK from the broker within 10 s")
        pump(0.05)
    ready.put(index)
    go.wait()
    res.first_publish = time.time()
    for j in range(index, messages, publishers):
        seq = j // devices
        info = client.publish(topics[j % devices], payload(base_ms + seq, names, seq), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
        res.sent += 1
        if res.sent - res.acked >= window:
            while res.sent - res.acked > window // 2:  # read PUBACKs until half the window is free
                pump(0.05)
        elif res.sent % 64 == 0:
            pump(0)
    deadline = time.monotonic() + 60
    while res.acked < res.sent and time.monotonic() < deadline:
        pump(0.05)
    res.last_ack = time.time()
    client.disconnect()


class Publishers:
    """The publisher processes of one run: start them, release them together, collect their results."""

    def __init__(self, host: str, port: int, *, publishers: int, devices: int, messages: int, fields: int,
                 base_ms: int, window: int = 2000) -> None:
        ctx = mp.get_context("fork")
        self._go = ctx.Event()
        self._ready = ctx.Queue()
        self._results = ctx.Queue()
        self._collected: list[PublisherResult] = []
        self.procs = [
            ctx.Process(target=publish_share, name=f"bench-pub-{i}", args=(i, publishers, host, port),
                        kwargs=dict(devices=devices, messages=messages, fields=fields, base_ms=base_ms,
                                    window=window, ready=self._ready, go=self._go, results=self._results))
            for i in range(publishers)
        ]

    def start(self) -> None:
        """Start the processes; release them once every one has its CONNACK."""
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self._ready.get(timeout=30)
        self._go.set()

    def _collect(self, timeout: float | None) -> None:
        while len(self._collected) < len(self.procs):
            try:
                raw = self._results.get(timeout=timeout) if timeout else self._results.get_nowait()
            except queue.Empty:
                return
            self._collected.append(PublisherResult(**raw))

    def done(self) -> bool:
        """Return whether every publisher has reported (all its messages acknowledged)."""
        self._collect(None)
        return len(self._collected) == len(self.procs)

    def wait(self, timeout: float = 300) -> list[PublisherResult]:
        """Wait for every publisher's result; return them in order."""
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"publishers did not finish within {timeout} s")
            self._collect(0.5)
        for p in self.procs:
            p.join(10)
        return sorted(self._collected, key=lambda r: r.index)
