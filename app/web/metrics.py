"""``GET /metrics``: the Prometheus exposition of the counters Vigie already keeps.

Why a custom collector rather than prometheus-client's ``Counter``/``Gauge``
objects: the sources, the store writer, the alarm engine, the notifier and
the page gate already count what an operator needs (``/health`` shows the
same numbers as JSON). Mirroring them into prometheus objects would put a
second increment, behind a lock, on the ingest path for every batch; reading
them when Prometheus asks, every 15 s or so, costs nothing between scrapes.
So :class:`VigieCollector` builds its metric families at scrape time from
those attributes. What was added for it is small and off the per-reading
path: the event-loop lag monitor (:class:`LoopLag`, one timer every
0.5 s), the store writer's write-duration histogram (two increments per
store write, :mod:`app.store.writer`), and two ``Counter``s keyed by label
value, the alarm engine's events by kind (one increment per event) and the
notifier's attempts by channel and outcome (one per delivery attempt).

Every value is read on the event loop's thread, the one that changes them,
so a scrape sees consistent numbers without locks; that is also why the
handler calls :func:`prometheus_client.generate_latest` directly on the loop
instead of in a thread (one scrape costs about a millisecond, see
bench/README.md).

The registry is private (not prometheus-client's global ``REGISTRY``), so
tests and several runtimes in one process never see each other's metrics;
it also carries the standard process metrics (RSS, CPU, open files) and the
garbage collector's, which matter for a server whose pages free memory in
bursts (app/pagegate.py).

The endpoint holds no secrets (counts, states, source names) and answers
everyone for now; :class:`MetricsHandler` is a plain ``RequestHandler`` so
the login check can be put in front of it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import tornado.web
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from app.alarms.rules import SEVERITIES
from app.ingest.base import ConnectionState
from app.model import AlarmState
from app.store.writer import WRITE_BUCKETS_S

if TYPE_CHECKING:
    from app.notify.cascade import Notifier
    from app.pagegate import PageGate
    from app.runtime import Runtime

LAG_INTERVAL_S = 0.5
SHOWN_STATES = tuple(s.value for s in AlarmState if s is not AlarmState.NORMAL)
"""Alarm states counted, each with every severity, zero included: a dashboard's sum never says "no data"."""
EVENT_KINDS = ("raised", "cleared", "acknowledged")
"""Alarm event kinds always exposed (from zero), so ``increase()`` sees the first one; others appear when they occur."""


class LoopLag:
    """How late the event loop runs timers: a task sleeping ``interval_s`` and measuring how late it woke.

    Ingest, alarms, the writer and every page session share one loop; a page
    build, a long garbage collection or a slow handler on it delays all of
    them. The lateness of a periodic timer measures exactly that delay. It
    keeps the last figure and the largest since the last scrape (a 2 s stall
    between two 15 s scrapes is seen, not averaged away). Started and
    stopped by :func:`app.server.run_server`, awaited on stop.
    """

    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last_s = 0.0
        self.samples = 0
        self._peak_s: float | None = None  # the largest lag since the last take_peak(); None: none measured
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop measuring and wait until the task has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def running(self) -> bool:
        """Return whether the monitor task runs."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.record(loop.time() - due)

    def record(self, lag_s: float) -> None:
        """Take one measurement (asyncio may wake a timer up to its clock resolution early: never below 0)."""
        lag_s = max(0.0, lag_s)
        self.last_s = lag_s
        self.samples += 1
        if self._peak_s is None or lag_s > self._peak_s:
            self._peak_s = lag_s

    def take_peak(self) -> float:
        """Return the largest lag since the previous call (the last one if none since) and start again."""
        peak = self._peak_s if self._peak_s is not None else self.last_s
        self._peak_s = None
        return peak


class VigieCollector:
    """Builds the ``vigie_*`` metric families from a runtime's counters at each scrape."""

    def __init__(self, runtime: Runtime, gate: PageGate | None = None, lag: LoopLag | None = None) -> None:
        self.runtime = runtime
        self.gate = gate
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        """Yield every family; called by the registry on each scrape, on the event loop."""
        yield from self._sources()
        yield from self._store()
        yield from self._alarms()
        yield from self._notifications()
        if self.gate is not None:
            yield from self._pages()
        if self.lag is not None:
            yield from self._loop()

    def _sources(self) -> Iterator[Metric]:
        received = CounterMetricFamily("vigie_readings_received_total",
                                       "Readings a source handed to the hub (screened, not rejected).",
                                       labels=["source"])
        dead = CounterMetricFamily("vigie_dead_letters_total",
                                   "Inputs a source rejected (bad payloads, fields or readings), kept as dead letters.",
                                   labels=["source"])
        connected = GaugeMetricFamily("vigie_source_connected",
                                      "1 when the source is connected to its broker or server (HTTP: enabled).",
                                      labels=["source"])
        for source in self.runtime.sources:
            received.add_metric([source.name], source.meter.total)
            dead.add_metric([source.name], source.dead.total)
            connected.add_metric([source.name], 1.0 if source.state == ConnectionState.CONNECTED else 0.0)
        yield from (received, dead, connected)

    def _store(self) -> Iterator[Metric]:
        writer = self.runtime.writer
        yield CounterMetricFamily("vigie_readings_written_total", "Readings the store engine accepted.",
                                  value=writer.written)
        yield CounterMetricFamily("vigie_store_readings_refused_total",
                                  "Readings the store engine refused for good (dead-lettered, kept in the rejected "
                                  "log).", value=writer.rejected)
        yield GaugeMetricFamily("vigie_store_queue_depth", "Readings waiting in the writer's memory queue.",
                                value=writer.queue_depth)
        yield GaugeMetricFamily("vigie_store_awaiting_durability",
                                "Readings accepted but not yet written, spooled or refused (MQTT acks and HTTP "
                                "answers wait for them).", value=writer.accepted - writer.durable)
        spool = writer.spool
        yield GaugeMetricFamily("vigie_store_spool_files", "Batches spooled to disk while the store was down.",
                                value=len(spool) if spool else 0)
        yield GaugeMetricFamily("vigie_store_spool_readings", "Readings spooled to disk, waiting for replay.",
                                value=spool.readings if spool else 0)
        yield GaugeMetricFamily("vigie_store_available", "1 when the last write reached the store, 0 while it spools.",
                                value=1.0 if writer.available else 0.0)
        yield GaugeMetricFamily("vigie_store_last_flush_seconds", "Duration of the last successful store write.",
                                value=writer.last_flush_s)
        cumulative, buckets = 0, []
        for bound, n in zip((*WRITE_BUCKETS_S, float("inf")), writer.write_buckets, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily("vigie_store_write_duration_seconds",
                                    "Duration of each write to the store engine (a batch, or a piece of one being "
                                    "split around refused readings).", buckets=buckets,
                                    sum_value=writer.write_seconds_sum)

    def _alarms(self) -> Iterator[Metric]:
        engine = self.runtime.alarms
        counts: Counter[tuple[str, str]] = Counter({(s, v): 0 for s in SHOWN_STATES for v in SEVERITIES})
        for alarm in engine.alarms():  # shadow-mode rules are trials: their alarms page nobody, not counted
            counts[(str(alarm.state), alarm.severity)] += 1
        alarms = GaugeMetricFamily("vigie_alarms", "Alarms an operator sees, by ISA-18.2 state and severity.",
                                   labels=["state", "severity"])
        for (state, severity), n in sorted(counts.items()):
            alarms.add_metric([state, severity], n)
        yield alarms
        events = CounterMetricFamily("vigie_alarm_events_total",
                                     "Alarm events by kind (raised, cleared, acknowledged, shelved...), shadow rules "
                                     "included.", labels=["kind"])
        kinds = Counter(dict.fromkeys(EVENT_KINDS, 0)) + engine.event_counts
        for kind in sorted(set(EVENT_KINDS) | set(kinds)):
            events.add_metric([kind], kinds[kind])
        yield events
        yield GaugeMetricFamily("vigie_alarm_rules", "Alarm rules loaded.", value=len(engine.rules))

    def _notifications(self) -> Iterator[Metric]:
        notifier = self.runtime.notifier
        sent = CounterMetricFamily("vigie_notifications_total",
                                   "Notification delivery attempts by channel and outcome (sent, failed).",
                                   labels=["channel", "outcome"])
        outcomes = Counter({(c, o): 0 for c in _configured_channels(notifier) for o in ("sent", "failed")})
        outcomes.update(notifier.outcomes)
        for (channel, outcome), n in sorted(outcomes.items()):
            sent.add_metric([channel, outcome], n)
        yield sent
        yield GaugeMetricFamily("vigie_notifications_in_flight", "Deliveries running now (retries included).",
                                value=notifier.health()["deliveries_in_flight"])

    def _pages(self) -> Iterator[Metric]:
        gate = self.gate
        assert gate is not None
        yield GaugeMetricFamily("vigie_page_sessions", "Page sessions open (or closed and not yet discarded).",
                                value=gate.sessions)
        yield GaugeMetricFamily("vigie_page_builds_in_progress", "Page documents being built now.",
                                value=gate.building)
        yield CounterMetricFamily("vigie_page_builds_total", "Page sessions built.", value=gate.built)
        yield CounterMetricFamily("vigie_page_busy_total",
                                  "Page requests answered 'busy, retrying' (too many builds or sessions).",
                                  value=gate.refused)

    def _loop(self) -> Iterator[Metric]:
        lag = self.lag
        assert lag is not None
        yield GaugeMetricFamily("vigie_event_loop_lag_seconds",
                                f"How late the event loop ran the last {lag.interval_s:g} s timer.", value=lag.last_s)
        yield GaugeMetricFamily("vigie_event_loop_lag_max_seconds",
                                "The largest event-loop lag measured since the previous scrape.",
                                value=lag.take_peak())


def _configured_channels(notifier: Notifier) -> set[str]:
    """Return the channels the policies use, their fallbacks included: their counters exist from zero."""
    names = {ch for policy in notifier.policies.values() for step in policy.steps for ch in step.channels}
    todo = list(names)
    while todo:
        fallback = notifier.spec.fallback.get(todo.pop())
        if fallback and fallback not in names:
            names.add(fallback)
            todo.append(fallback)
    return names


def build_registry(runtime: Runtime, gate: PageGate | None = None, lag: LoopLag | None = None) -> CollectorRegistry:
    """Return a private registry with Vigie's collector, the process metrics and the garbage collector's.

    Cheap enough to build per scrape (a few objects, one read of /proc/stat):
    the handler then keeps no state and can be wrapped or subclassed freely.
    """
    registry = CollectorRegistry()
    registry.register(VigieCollector(runtime, gate, lag))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: the Prometheus text exposition (no secrets: counts, states, source names).

    For a client on this machine (a local agent), an admin, or an API token with the ``metrics`` scope
    (Prometheus's ``authorization: {credentials: vgt_...}``); anyone else gets 401/403.
    """

    def prepare(self) -> None:
        ok, identity = self.settings["vigie_auth"].probe_or_allowed(self, "metrics:read")
        if not ok:
            self.set_status(401 if identity is None else 403)
            self.set_header("WWW-Authenticate", 'Bearer realm="vigie"')
            self.finish({"error": "metrics need an API token with the metrics scope"})

    def initialize(self, runtime: Runtime, gate: PageGate | None = None, lag: LoopLag | None = None) -> None:
        self.runtime = runtime
        self.gate = gate
        self.lag = lag

    def get(self) -> None:
        body = generate_latest(build_registry(self.runtime, self.gate, self.lag))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)
