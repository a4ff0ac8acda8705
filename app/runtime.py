"""The running platform: builds every part from the config, starts and stops them.

One :class:`Runtime` per process owns the hub, the live cache, the store
engine and its writer, and the ingest sources. It is started once on the
server's event loop (never per browser session) and stopped in a known
order: ingest first (nothing new comes in), then the writer (flushes or
spools what it holds), then the store. Every task it starts is named, kept
and awaited; a task that dies is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

from app.alarms.engine import AlarmClock, AlarmEngine
from app.alarms.journal import Journal
from app.alarms.mqtt_events import AlarmTopicPublisher
from app.alarms.rule_file import RuleEditor
from app.cameras import CameraStore
from app.config import LoadedConfig, StoreSpec
from app.hub import Hub
from app.ingest.base import Source
from app.ingest.mqtt_spec import MqttSpec
from app.ingest.source_spec import BuildContext
from app.live import LiveCache
from app.model import Reading
from app.notify.cascade import Notifier
from app.pulse import Pulse
from app.store.base import StoreEngine
from app.store.writer import StoreWriter
from app.web.accounts import AccountStore
from app.web.secret import server_secret

log = logging.getLogger(__name__)
SEED_TIMEOUT_S = 10.0  # how long start-up waits for the store's latest values


def build_store(spec: StoreSpec, loaded: LoadedConfig, base: Path) -> StoreEngine:
    """Create the configured store engine."""
    if spec.engine == "embedded":
        from app.store.embedded import EmbeddedStore

        return EmbeddedStore(base / spec.data_dir, policy=spec.policy(), compact_rows=spec.compact_rows,
                             maintenance_interval_s=spec.maintenance_interval_s)
    from app.store.influx import InfluxStore

    return InfluxStore(
        spec.url,
        database=spec.database,
        measurement=spec.measurement,
        retention_policy=spec.retention_policy,
        username=loaded.secret(spec.username_env),
        password=loaded.secret(spec.password_env),
        token=loaded.secret(spec.token_env),
        api=spec.api,
        org=spec.org,
        bucket=spec.bucket,
        policy=spec.policy(),
        maintenance_interval_s=spec.maintenance_interval_s,
    )


def build_alarm_topic(prefix: str | None, brokers: list[MqttSpec], loaded: LoadedConfig) -> AlarmTopicPublisher | None:
    """Create the publisher of alarm states on the first broker, when a topic prefix is configured."""
    if not prefix or not brokers:
        return None
    spec = brokers[0]
    tls = spec.tls.options() if spec.tls is not None else None
    client_id = (spec.client_id or f"vigie-{spec.name}").replace("{hostname}", socket.gethostname()) + "-alarms"
    return AlarmTopicPublisher(prefix, host=spec.host, port=spec.port, client_id=client_id,
                               username=loaded.secret(spec.username_env), password=loaded.secret(spec.password_env),
                               tls=tls)


class Runtime:
    """Every server-wide part of one Vigie process."""

    def __init__(self, loaded: LoadedConfig, *, base_dir: Path | None = None) -> None:
        self.loaded = loaded
        cfg = loaded.config
        base = base_dir or Path.cwd()
        self.live = LiveCache()
        self.pulse = Pulse(self.live)  # wakes live dashboards when data they show arrives
        self.cameras = CameraStore(base / cfg.cameras.directory, keep=cfg.cameras.keep,
                                   max_bytes=cfg.cameras.max_bytes)
        rules = list(cfg.alarms.rules)
        # Always there, rules or not: the rule editor can add the first rule to a running server.
        self.alarms = AlarmEngine(rules)
        self.alarms.source_intervals = {s.name: s.expected_interval_s for s in cfg.sources()
                                        if s.expected_interval_s}
        self.alarm_clock = AlarmClock(self.alarms, cfg.alarms.tick_s)
        self.journal = Journal(base / cfg.alarms.journal_file, retention_days=cfg.alarms.journal_days)
        self.rule_editor = RuleEditor(loaded.section_file("alarms", "alarms.yaml"), self.alarms, self.journal)
        self.secret = server_secret(loaded, base)  # signs login cookies, embed and acknowledgement links
        self.accounts = AccountStore(base / cfg.server.access_file, self.secret,
                                     session_s=cfg.server.session_hours * 3600)
        self.notifier = Notifier(loaded, self.alarms, self.journal, self.journal.path, secret=self.secret)
        self.alarm_topic = build_alarm_topic(cfg.alarms.mqtt_topic_prefix, cfg.mqtt, loaded)
        if self.alarm_topic is not None:
            self.alarms.subscribe(self.alarm_topic.accept)
        self.store = build_store(cfg.store, loaded, base)
        self.writer = StoreWriter(
            self.store, spool_dir=base / cfg.store.spool_dir, rejected_dir=base / cfg.store.rejected_dir,
            batch_size=cfg.store.batch_size,
            flush_interval=cfg.store.flush_interval_s,
        )
        self.hub = Hub(alarms=self.alarms, live=self.live, store=self.writer)  # alarms first: nothing delays them
        context = BuildContext(self.hub, loaded.secret, self.cameras)
        self.sources: list[Source] = [spec.build(context) for spec in cfg.sources()]
        for source in self.sources:
            self._watch_source(source)
        self.extra_sources: dict[str, Any] = {}  # e.g. the HTTP ingest API, registered by the server
        self._source_tasks: list[asyncio.Task] = []
        self._writer_task: asyncio.Task | None = None
        self._clock_task: asyncio.Task | None = None
        self._journal_task: asyncio.Task | None = None
        self._topic_task: asyncio.Task | None = None
        self._notify_task: asyncio.Task | None = None
        self.started = asyncio.Event()

    def add_source(self, source: Source) -> None:
        """Add a source before start (the HTTP API, simulators' own sources)."""
        self.sources.append(source)
        self._watch_source(source)

    def _watch_source(self, source: Source) -> None:
        """Suppress a source's alarms while it is disconnected (one outage, not twenty sensor alarms),
        and a device's while its source reports it dead (a Sparkplug DDEATH / NDEATH)."""
        engine = self.alarms

        def follow(src: Source, state: str, error: str | None) -> None:
            if state == "disconnected":
                engine.inhibit_source(src.name, True, f"source {src.name} disconnected" + (f": {error}" if error
                                                                                            else ""))
            elif state == "connected":
                engine.inhibit_source(src.name, False)

        def follow_device(src: Source, device: str, online: bool, reason: str | None) -> None:
            engine.inhibit_device(src.name, device, not online, reason or "")

        source.state_listeners.append(follow)
        source.device_listeners.append(follow_device)

    @staticmethod
    def _watch(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def _task(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._watch)
        return task

    async def start(self) -> None:
        """Open the store, start the writer, then the sources."""
        self.notifier.start_workers()  # in a thread of their own, beside everything below
        await self.store.open()
        await asyncio.to_thread(self.accounts.open)
        if not self.accounts.users:
            log.warning("no user can log in yet: create one with `vigie user add NAME --role admin "
                        "--config DIR --data-root DIR`")
        # Before the seed: alarms acknowledged before a restart stay acknowledged, not raised again.
        await asyncio.to_thread(self.journal.open)
        restored = self.journal.attach(self.alarms)
        self._journal_task = self._task(self.journal.run(), "alarm-journal")
        log.info("alarm journal %s: %d alarms restored", self.journal.path, restored)
        # Before the seed too: escalations in progress resume, and alarms raised by the seed are routed.
        await asyncio.to_thread(self.notifier.open)
        self.notifier.attach()
        self._notify_task = self._task(self.notifier.run(), "notifier")
        await self._seed_live()
        self._writer_task = self._task(self.writer.run(), "store-writer")
        self._clock_task = self._task(self.alarm_clock.run(), "alarm-clock")
        if self.alarm_topic is not None:
            self._topic_task = self._task(self.alarm_topic.run(), "alarm-topic")
        await self.notifier.ready_workers()  # started first thing above; deliveries need them from now on
        self.pulse.start()
        for source in self.sources:
            if hasattr(source, "run"):
                self._source_tasks.append(self._task(source.run(), f"source-{source.name}"))
        self.started.set()
        log.info("vigie started: %d sources, store %s", len(self.sources), self.store.engine_type)

    async def _seed_live(self) -> None:
        """Give the live cache each series' last stored value, before any source delivers.

        After a restart, tiles, status colours, the series pickers and
        "generate dashboard" then show the last known state (with its true
        age) instead of "no data" until every device has reported again. A
        store that is down or slow only delays this: pages fill as data arrives.
        """
        try:
            latest = await asyncio.wait_for(self.store.latest(), timeout=SEED_TIMEOUT_S)
        except Exception as e:  # any store failure: start anyway, and say why
            log.warning("live cache not seeded from the store (%s: %s); pages fill as data arrives",
                        type(e).__name__, e)
            return
        batch = [Reading(v.device, v.metric, v.time_ns, v.value, v.quality, v.unit, "store", dict(v.tags))
                 for v in latest]
        self.alarms.accept(batch)  # a dam above its limit when Vigie stopped is in alarm when it starts
        self.live.accept(batch)
        log.info("live cache seeded with the last stored value of %d series", len(latest))

    async def stop(self) -> None:
        """Stop waking sessions, stop ingest, flush the writer, close the store."""
        await self.pulse.stop()
        for source in self.sources:
            await source.stop()
        if self._source_tasks:
            _done, pending = await asyncio.wait(self._source_tasks, timeout=10)
            for task in pending:
                log.warning("source task %s did not stop in time; cancelling", task.get_name())
                task.cancel()
            await asyncio.gather(*self._source_tasks, return_exceptions=True)
        if self._clock_task is not None:
            await self.alarm_clock.stop()
            await asyncio.gather(self._clock_task, return_exceptions=True)
        if self._notify_task is not None:  # before the journal: it records every delivery attempt
            await self.notifier.stop()
            await asyncio.gather(self._notify_task, return_exceptions=True)
        await self.notifier.close_workers()  # started first thing in start(), even if start() failed later
        if self._journal_task is not None:
            await self.journal.stop()
            await asyncio.gather(self._journal_task, return_exceptions=True)
        if self.alarm_topic is not None and self._topic_task is not None:
            await self.alarm_topic.stop()
            await asyncio.gather(self._topic_task, return_exceptions=True)
        await self.writer.stop()
        if self._writer_task is not None:
            await asyncio.gather(self._writer_task, return_exceptions=True)
        await self.store.close()
        self.accounts.close()
        log.info("vigie stopped: %d readings written", self.writer.written)

    def health(self) -> dict[str, Any]:
        """Return the JSON health document."""
        sources = {s.name: s.health() for s in self.sources}
        ok = self.writer.available and all(h["state"] == "connected" for h in sources.values()
                                            if h["state"] != "stopped")
        return {
            "status": "ok" if ok else "degraded",
            "sources": sources,
            "store": self.writer.health(),
            "live": {**self.live.health(), "pulse": self.pulse.health()},
            "hub": {"published_total": self.hub.published},
            "cameras": self.cameras.health(),
            "alarms": {**self.alarms.health(), "journal": self.journal.health(),
                       "topic": self.alarm_topic.health() if self.alarm_topic else None},
            "notifications": self.notifier.health(),
        }
