"""The notifier: alarm events in, escalation cascades out, every delivery attempt journaled.

The engine hands events to :meth:`Notifier.accept`, which only appends to a
queue. :meth:`Notifier.run` drives a pipeline of small stages on the clock
it was given (``clock``, seconds since the epoch, injected in tests):

- **route**: a raised alarm of a rule with a policy (not shadow, not held)
  enters the group of its site (or device);
- **group**: alarms of one group raised within ``group_window_s`` start ONE
  cascade, so ten alarms of a station make one message per person;
- **escalate**: each cascade runs its policy's steps, ``wait_s`` apart,
  then reminds the last step, repeats, or stops; an acknowledgement of its
  alarms (by anyone, from anywhere), a shelve, a suppression or (when the
  policy says so) a return to normal takes the alarm out; a cascade with no
  alarm left stops. Quiet rules defer a step until their window opens;
- **deliver**: per contact and channel, in a bounded thread pool (apprise
  blocks), each attempt under a timeout, retried with back-off, then the
  channel's fallback; deliveries are tasks of their own, so a slow channel
  delays nothing else;
- **record**: every attempt in the journal (category ``notification``).

Cascades are kept in the journal's SQLite file (table ``notify_cascades``),
written when a step is dispatched and before its messages leave: a restart
resumes each cascade at its next step and deadline and never sends a step
twice. Used acknowledgement links are kept there too (``notify_used_links``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import secrets
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from app.model import AlarmEvent, AlarmState
from app.notify.channels import Channel, DeliveryError, redact, warm_up
from app.notify.links import LinkSigner
from app.notify.messages import AlarmFacts, compose
from app.notify.rota import quiet_until, resolve
from app.notify.specs import ContactSpec, PolicySpec

if TYPE_CHECKING:
    from app.alarms.engine import AlarmEngine
    from app.alarms.journal import Journal
    from app.config import LoadedConfig

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_cascades (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_used_links (nonce TEXT PRIMARY KEY, used_ns INTEGER, contact TEXT, alarm_ids TEXT);
"""
_HELD = (AlarmState.ACKNOWLEDGED, AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE,
         AlarmState.NORMAL)
_NEVER = 1e18  # a due time that never comes, as JSON can hold it
_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass
class Cascade:
    """One escalation in progress: its alarms, where it is, who was told."""

    id: str
    policy: str
    alarms: dict[str, AlarmFacts]
    step: int = 0  # the step that runs at ``due``
    due: float = 0.0
    rounds: int = 0  # steps dispatched so far
    started: float = 0.0
    told: list[dict[str, Any]] = field(default_factory=list)  # {step, contact, channel, at, outcome}
    held_by_quiet: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "policy": self.policy, "alarms": {k: v.as_dict() for k, v in self.alarms.items()},
                "step": self.step, "due": self.due, "rounds": self.rounds, "started": self.started,
                "told": self.told[-200:], "held_by_quiet": self.held_by_quiet}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Cascade:
        alarms = {k: AlarmFacts(**v) for k, v in doc["alarms"].items()}
        due = float("inf") if doc["due"] >= _NEVER else doc["due"]  # a stopped policy waits for an ack only
        return cls(doc["id"], doc["policy"], alarms, doc["step"], due, doc["rounds"], doc["started"],
                   doc["told"], doc.get("held_by_quiet", False))

    def severity(self) -> str:
        return max((a.severity for a in self.alarms.values()), key=lambda s: _SEVERITY_RANK.get(s, 2))


@dataclass
class _Group:
    policy: str
    closes: float
    alarms: dict[str, AlarmFacts]


def _facts(e: AlarmEvent) -> AlarmFacts:
    return AlarmFacts(e.alarm_id, e.device, e.metric, e.site, e.severity, e.value, e.unit, e.limit,
                      e.raised_ns or e.time_ns, e.message)


class Notifier:
    """Escalation cascades for the engine's alarms; a long-running actor (run / stop)."""

    def __init__(self, loaded: LoadedConfig, engine: AlarmEngine, journal: Journal, db_path: Path, *,
                 clock: Callable[[], float] = time.time, secret: bytes | None = None) -> None:
        cfg = loaded.config
        self.loaded = loaded
        self.contacts = cfg.contacts
        self.spec = cfg.escalation
        self.policies: dict[str, PolicySpec] = {p.name: p for p in self.spec.policies}
        self.tz = ZoneInfo(cfg.server.timezone)
        self.engine = engine
        self.journal = journal
        self.db_path = Path(db_path)
        self.clock = clock
        if secret is None:
            secret_text = loaded.secret(cfg.server.secret_env)
            if secret_text:
                secret = secret_text.encode()
            else:
                if self.policies:
                    log.warning("server.secret_env is not set: acknowledgement links are signed with a random secret "
                                "and stop working when Vigie restarts")
                secret = secrets.token_bytes(32)
        self.signer = LinkSigner(secret)
        host = cfg.server.address if cfg.server.address not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.public_url = (self.spec.public_url or f"http://{host}:{cfg.server.port}").rstrip("/")
        self.channels: dict[str, Channel] = {}
        self._events: deque[AlarmEvent] = deque()
        self._groups: dict[tuple[str, str], _Group] = {}
        self.cascades: dict[str, Cascade] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pool: Executor | None = None
        self._pool_task: asyncio.Future[Executor] | None = None
        self._deliveries: set[asyncio.Task] = set()
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (channel, "sent" / "failed") attempts, for /metrics

    # -- life ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the tables in the journal's file and take back the cascades in progress."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=10)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        self._con = con
        for (doc,) in con.execute("SELECT doc FROM notify_cascades"):
            c = Cascade.from_doc(json.loads(doc))
            self.cascades[c.id] = c
        if self.cascades:
            log.info("notifier: %d escalation(s) in progress taken back", len(self.cascades))

    def _start_pool(self) -> Executor:
        """Start the delivery workers, apprise's plugins loaded, before any alarm needs them.

        The first ``notify`` of a scheme imports its plugin: about a second of
        holding the interpreter, which delayed alarm evaluation by 800 ms when
        it happened mid-cascade. Worker processes also keep deliveries away
        from the ingest's interpreter lock: with threads, mail during a burst
        of readings took seconds (bench/alarms.py --only notify).
        """
        urls = ["mailto://warm@localhost", "json://localhost", "form://localhost",
                *(u.split("://")[0] + "://localhost" for c in self.contacts.people for u in c.apprise)]
        n = self.spec.workers
        if self.spec.isolation == "thread" or not self.policies:
            warm_up(urls)
            return ThreadPoolExecutor(max_workers=n, thread_name_prefix="vigie-notify")
        pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=warm_up, initargs=(urls,))
        for f in [pool.submit(time.sleep, 0.2) for _ in range(n)]:  # start every worker now, not mid-cascade
            f.result(timeout=60)
        return pool

    def attach(self) -> None:
        """Follow the engine's events."""
        self.engine.subscribe(self.accept)

    def accept(self, event: AlarmEvent) -> None:
        """Take one event (an engine subscriber: appends, never blocks)."""
        if event.shadow or not event.policy:
            return
        self._events.append(event)
        self._wake.set()

    def start_workers(self) -> asyncio.Future[Executor]:
        """Start the delivery workers in a thread, once; the first delivery waits for them, nothing else does.

        Starting them (processes importing apprise) took 1.5 s, 3.8 s on a busy
        machine, and held up Vigie's start-up that long when it was done in
        :meth:`open`. The runtime calls this first thing, so the workers come
        up while the store and the journal open, and waits for them
        (:meth:`ready_workers`) before it says it has started: a step due at
        a restart leaves as soon as Vigie answers again.
        """
        if self._pool_task is None:
            self._pool_task = asyncio.ensure_future(asyncio.to_thread(self._start_pool))
        return self._pool_task

    async def close_workers(self) -> None:
        """Stop the delivery workers (after :meth:`run`, or when the runtime stops before it ran)."""
        task, self._pool_task, self._pool = self._pool_task, None, None
        if task is None:
            return
        try:
            pool = await task
        except Exception:  # they never started: each delivery said why
            log.exception("notification workers did not start")
        else:
            pool.shutdown(wait=False, cancel_futures=True)

    async def ready_workers(self) -> Executor:
        if self._pool is None:
            self._pool = await asyncio.shield(self.start_workers())
        return self._pool

    async def run(self) -> None:
        """Run the pipeline until stopped."""
        if self._con is None:
            await asyncio.to_thread(self.open)
        self.start_workers()
        while not self._stopping.is_set():
            self.process(self.clock())
            timeout = self._next_wake(self.clock())
            self._wake.clear()
            if self._events:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=5)
        await self.close_workers()
        if self._con is not None:
            self._con.close()
            self._con = None

    async def stop(self) -> None:
        """Ask :meth:`run` to return (deliveries in flight get a few seconds)."""
        self._stopping.set()
        self._wake.set()

    def _next_wake(self, now: float) -> float:
        dues = [g.closes for g in self._groups.values()]
        dues += [c.due for c in self.cascades.values()]
        return max(0.0, min(dues) - now) if dues else 3600.0

    # -- route, group, escalate ---------------------------------------------------------------------------
    def process(self, now: float) -> None:
        """Route queued events, close groups whose window ended, dispatch every step that is due."""
        while self._events:
            self._route(self._events.popleft(), now)
        for key, group in list(self._groups.items()):
            if group.closes <= now:
                del self._groups[key]
                self._start(group, now)
        for c in list(self.cascades.values()):
            if c.due <= now:
                self._dispatch(c, now)

    def _route(self, e: AlarmEvent, now: float) -> None:
        if e.kind in ("raised", "escalated") and e.state == AlarmState.UNACKNOWLEDGED and e.policy:
            if e.policy not in self.policies:
                log.warning("alarm %s names unknown policy %s: nobody is notified", e.alarm_id, e.policy)
                return
            if any(e.alarm_id in c.alarms for c in self.cascades.values()):
                if e.kind == "raised":
                    return
                # Worse than when its cascade started (H -> HH): step 1 hears of it now, with the new severity
                # (whose quiet rules may differ), instead of when the old cascade's timer says.
                self._drop(e.alarm_id, f"escalated to {e.severity}: the escalation starts again", now)
            else:
                for group in self._groups.values():  # still grouping: tell the worse severity when it closes
                    if e.alarm_id in group.alarms:
                        group.alarms[e.alarm_id] = _facts(e)
                        return
            key = (e.policy, e.site or e.device)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(e.policy, now + self.spec.group_window_s, {})
            group.alarms[e.alarm_id] = _facts(e)
            return
        policy = self.policies.get(e.policy or "")
        stops = e.state in _HELD or (e.state == AlarmState.RETURNED_UNACKNOWLEDGED and policy is not None
                                     and policy.stop_when_normal)
        if stops:
            self._drop(e.alarm_id, f"{e.kind} ({e.state})" + (f" by {e.user}" if e.user else ""), now)

    def _drop(self, alarm_id: str, why: str, now: float) -> None:
        """Take an alarm out of its group or cascade; a cascade with no alarm left stops."""
        for group in self._groups.values():
            group.alarms.pop(alarm_id, None)
        for c in list(self.cascades.values()):
            if c.alarms.pop(alarm_id, None) is not None and not c.alarms:
                self._end(c, f"escalation stopped: {why}", alarm_id)

    def _end(self, c: Cascade, why: str, alarm_id: str | None = None) -> None:
        self.cascades.pop(c.id, None)
        self._delete(c.id)
        rule, _, key = (alarm_id or c.id.rpartition("@")[0]).partition("|")
        self.journal.note("escalation_stopped", user="", comment=why, rule=rule, key=key,
                          device=key.rpartition("/")[0], category="notification")
        log.info("cascade %s: %s", c.id, why)

    def _start(self, group: _Group, now: float) -> None:
        alarms = {k: v for k, v in group.alarms.items() if self._needs_telling(k, group.policy)}
        if not alarms:
            return
        first = next(iter(alarms))
        c = Cascade(f"{first}@{now:.3f}", group.policy, alarms, 0, now, 0, now)
        self.cascades[c.id] = c
        self._dispatch(c, now)

    def _needs_telling(self, alarm_id: str, policy_name: str) -> bool:
        alarm = self.engine.alarm(alarm_id)
        if alarm is None or alarm.rule.mode != "enabled":
            return False
        policy = self.policies.get(policy_name)
        if alarm.state == AlarmState.UNACKNOWLEDGED:
            return True
        return alarm.state == AlarmState.RETURNED_UNACKNOWLEDGED and policy is not None and not policy.stop_when_normal

    def _dispatch(self, c: Cascade, now: float) -> None:
        """Run the cascade's due step: whom the rota names now, by its channels; then set the next deadline."""
        policy = self.policies.get(c.policy)
        for alarm_id in [a for a in c.alarms if not self._needs_telling(a, c.policy)]:
            del c.alarms[alarm_id]
        if policy is None or not c.alarms:
            self._end(c, "escalation stopped: no alarm left to tell" if policy else "policy removed")
            return
        at = datetime.fromtimestamp(now, UTC)
        held = quiet_until(policy.quiet, c.severity(), at, self.tz)
        if held is not None:
            c.due, c.held_by_quiet = held.timestamp(), True
            self._save(c)
            return
        c.held_by_quiet = False
        index = c.step
        step = policy.steps[index]
        contacts = resolve(self.contacts, step.whom, at, self.tz)
        if index + 1 < len(policy.steps):
            c.step, c.due = index + 1, now + step.wait_s
        elif policy.then == "repeat":
            c.step, c.due = 0, now + step.wait_s
        elif policy.then == "remind":
            c.due = now + (step.wait_s if c.rounds < len(policy.steps) else policy.remind_s)
        else:
            c.due = float("inf")
        c.rounds += 1
        for contact in contacts:
            c.told.append({"step": index + 1, "contact": contact.name, "channels": list(step.channels), "at": now})
        if not contacts:
            log.warning("cascade %s step %d names nobody at this time (on-call gap?)", c.id, index + 1)
            c.told.append({"step": index + 1, "contact": "", "channels": [], "at": now})
        self._save(c)  # before anything leaves: a restart now never sends this step again
        alarms = list(c.alarms.values())
        for contact in contacts:
            self._spawn(self._deliver(contact, list(step.channels), alarms, index, c.policy, c.id, now))

    # -- deliver and record ------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="notify-delivery")
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification delivery failed", exc_info=task.exception())

    def message_for(self, contact: ContactSpec, alarms: list[AlarmFacts], step: int, policy: str, now: float,
                    test: bool = False) -> tuple[str, str, dict[str, str]]:
        """Return (title, body, extra) for one contact, with a fresh acknowledgement link."""
        token = self.signer.make([a.alarm_id for a in alarms], contact.name, now + self.spec.link_ttl_s)
        ack_url = f"{self.public_url}/ack/{token}"
        title, body = compose(alarms, contact.language, self.tz, step=step, policy=policy, ack_url=ack_url,
                              test=test)
        spoken = body.replace(ack_url, "").rsplit("\n", 1)[0]
        return title, body, {"ack_url": ack_url, "callback_url": f"{self.public_url}/api/v1/notify/reply",
                             "spoken": spoken}

    async def _deliver(self, contact: ContactSpec, channels: list[str], alarms: list[AlarmFacts], step: int,
                       policy: str, cascade_id: str, now: float, test: bool = False) -> None:
        """Deliver one step's message to one contact: each channel, its retries, then its fallback."""
        title, body, extra = self.message_for(contact, alarms, step, policy, now, test)
        tried: set[str] = set()
        for name in channels:
            while name and name not in tried:
                tried.add(name)
                if await self._attempts(name, contact, title, body, extra, alarms, step, cascade_id):
                    break
                name = self.spec.fallback.get(name, "")

    def _channel(self, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel.create(name, self.spec, self.loaded.secret)
        return ch

    async def _attempts(self, name: str, contact: ContactSpec, title: str, body: str, extra: dict[str, str],
                        alarms: list[AlarmFacts], step: int, cascade_id: str) -> bool:
        """Try one channel up to ``attempts`` times with back-off; return whether it was sent."""
        channel = self._channel(name)
        address = channel.address(contact)
        if not address:
            self._record(alarms, name, contact, "", step, 0, "failed", f"{contact.name} has no {name} address")
            return False
        loop = asyncio.get_running_loop()
        delay = self.spec.retry_s
        for attempt in range(1, self.spec.attempts + 1):
            try:
                job, args = channel.prepare(contact, title, body, extra)
                pool = await self.ready_workers()
                await asyncio.wait_for(loop.run_in_executor(pool, job, *args), self.spec.timeout_s)
            except DeliveryError as e:
                reason, retry = e.reason, e.retry
            except TimeoutError:
                reason, retry = f"no answer within {self.spec.timeout_s:g} s", True
            except Exception as e:  # a channel's bug must not end the cascade
                reason, retry = f"{type(e).__name__}: {e}"[:300], False
            else:
                self.sent += 1
                self.outcomes[(name, "sent")] += 1
                self._record(alarms, name, contact, address, step, attempt, "sent", "")
                return True
            self.failed += 1
            self.outcomes[(name, "failed")] += 1
            self._record(alarms, name, contact, address, step, attempt, "failed", reason)
            if not retry or attempt == self.spec.attempts:
                return False
            await asyncio.sleep(delay)
            delay *= 2
        return False

    def _record(self, alarms: list[AlarmFacts], channel: str, contact: ContactSpec, address: str, step: int,
                attempt: int, outcome: str, reason: str) -> None:
        to = redact(address) if address else ""
        text = f"{channel} to {contact.name} ({to}), step {step + 1}, attempt {attempt}: {outcome}" + (
            f": {reason}" if reason else "")
        log.info("notification %s", text)
        for a in alarms:
            rule, _, key = a.alarm_id.partition("|")
            self.journal.record(AlarmEvent(f"notification_{outcome}", outcome, "", rule, key, a.device, a.metric,
                                           time.time_ns(), a.severity, text, site=a.site, user=contact.name,
                                           comment=reason), category="notification")

    # -- acknowledgement from a link or a gateway --------------------------------------------------------
    def use_link(self, token: str) -> tuple[str, str, list[str]]:
        """Acknowledge from a link: return (acknowledged / already / forged / expired / reused, contact, ids)."""
        now = self.clock()
        claim, why = self.signer.check(token, now)
        if claim is None or why:
            return why or "forged", claim.contact if claim else "", []
        assert self._con is not None
        try:
            with self._lock:
                self._con.execute("INSERT INTO notify_used_links VALUES (?, ?, ?, ?)",
                                  (claim.nonce, int(now * 1e9), claim.contact, json.dumps(claim.alarm_ids)))
        except sqlite3.IntegrityError:
            return "reused", claim.contact, []
        ids = [i for i in claim.alarm_ids if self.engine.alarm(i) is not None]
        events = self.engine.acknowledge(ids, claim.contact, "acknowledged from the link of a notification")
        self.journal.note("ack_link_used", user=claim.contact, comment=f"{len(events)} alarm(s) acknowledged",
                          category="notification")
        self._wake.set()
        return "acknowledged" if events else "already", claim.contact, [e.alarm_id for e in events]

    def acknowledge_from_phone(self, phone: str) -> tuple[str, list[str]]:
        """Acknowledge every cascade's alarms told to the contact with this phone (an SMS reply)."""
        contact = next((c for c in self.contacts.people if c.phone and c.phone == phone), None)
        if contact is None:
            return "", []
        ids = sorted({a for c in self.cascades.values() if any(t["contact"] == contact.name for t in c.told)
                      for a in c.alarms})
        events = self.engine.acknowledge([i for i in ids if self.engine.alarm(i)], contact.name,
                                         "acknowledged by a reply to a notification")
        self._wake.set()
        return contact.name, [e.alarm_id for e in events]

    # -- test, views ---------------------------------------------------------------------------------------
    def send_test(self, policy_name: str) -> list[dict[str, Any]]:
        """Send a test message to a policy's step 1 as the rota names it now; return whom, by what."""
        policy = self.policies[policy_name]
        now = self.clock()
        step = policy.steps[0]
        contacts = resolve(self.contacts, step.whom, datetime.fromtimestamp(now, UTC), self.tz)
        facts = AlarmFacts(f"test|{policy_name}", "test", "notification", None, "low", None, "", None,
                           int(now * 1e9), f"test of policy {policy_name}")
        for contact in contacts:
            self._spawn(self._deliver(contact, list(step.channels), [facts], 0, policy_name, "test", now, test=True))
        return [{"contact": c.name, "channels": list(step.channels)} for c in contacts]

    def cascade_view(self, alarm_id: str | None = None) -> list[dict[str, Any]]:
        """Return each cascade (or the one of an alarm): alarms, who was told, who is next and when."""
        out = []
        for c in list(self.cascades.values()):  # pages may ask from their own thread: a copy, taken at once
            if alarm_id and alarm_id not in c.alarms:
                continue
            policy = self.policies.get(c.policy)
            nxt: dict[str, Any] = {}
            if policy is not None and c.due != float("inf"):
                at = datetime.fromtimestamp(c.due, UTC)
                step = policy.steps[c.step]
                nxt = {"step": c.step + 1, "at": c.due, "whom": [p.name for p in resolve(self.contacts, step.whom,
                                                                                          at, self.tz)],
                       "channels": list(step.channels), "quiet": c.held_by_quiet}
            out.append({"id": c.id, "policy": c.policy, "alarms": sorted(c.alarms), "told": list(c.told),
                        "next": nxt, "started": c.started})
        return out

    def health(self) -> dict[str, Any]:
        return {"cascades": len(self.cascades), "grouping": sum(len(g.alarms) for g in self._groups.values()),
                "sent_total": self.sent, "failed_total": self.failed, "deliveries_in_flight": len(self._deliveries)}

    # -- kept across restarts --------------------------------------------------------------------------
    def _save(self, c: Cascade) -> None:
        if self._con is None:
            return
        doc = c.to_doc()
        if doc["due"] == float("inf"):
            doc["due"] = _NEVER
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO notify_cascades VALUES (?, ?)", (c.id, json.dumps(doc)))

    def _delete(self, cascade_id: str) -> None:
        if self._con is None:
            return
        with self._lock:
            self._con.execute("DELETE FROM notify_cascades WHERE id = ?", (cascade_id,))
