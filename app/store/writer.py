"""The store writer: batches readings, retries, spools, replays.

The hub calls :meth:`StoreWriter.accept` with each batch; the writer task
groups readings into batches by size and by time and writes them to the
engine. When the engine says it is unavailable the batch goes to the disk
spool and the writer keeps spooling (memory stays bounded) while it probes
the database with capped back-off; once a write succeeds, the spool is
replayed oldest first. On stop, what is still in memory is written if the
database takes it and spooled otherwise, so a restart loses nothing.

A batch the engine refuses is never dropped: the writer splits it in
halves until the refused readings are found (a few dozen writes for one
bad reading among 5,000), writes the rest, and dead-letters each refused
reading with the engine's reason, in memory for the pages and on disk
(:class:`~app.store.rejected.RejectedLog`) so each one can be found again.

Durability watermark: readings leave the writer in the order they came, so
two counts say what is safe. :meth:`StoreWriter.accept` returns a *ticket*,
the count of readings accepted so far; ``durable`` counts readings written,
spooled to disk or refused by the store (dead-lettered: handled, never to be
retried). A batch is durable once ``durable >= ticket``. Sources that must
not acknowledge before that (MQTT's PUBACK, HTTP's 2xx) await
:meth:`wait_durable` or listen with :meth:`add_durable_listener`, and call
:meth:`flush_soon` when somebody waits, so a write need not wait for the
flush interval.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

from app.ingest.deadletters import DeadLetters
from app.model import Reading
from app.store.base import ReadingsRefused, StoreEngine, StoreUnavailable
from app.store.rejected import RejectedLog
from app.store.spool import Spool
from app.tasks import Backoff

log = logging.getLogger(__name__)

WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the write-duration histogram on ``/metrics``: 1 ms (embedded store) to 10 s (a slow InfluxDB)."""


class StoreWriter:
    """Consumer of the hub that feeds a :class:`StoreEngine` in batches."""

    def __init__(
        self,
        engine: StoreEngine,
        *,
        spool_dir: Path | None = None,
        rejected_dir: Path | None = None,
        batch_size: int = 5000,
        flush_interval: float = 0.25,
        retry_cap: float = 5.0,
    ) -> None:
        self.engine = engine
        self.spool = Spool(spool_dir) if spool_dir else None
        self.rejected_log = RejectedLog(rejected_dir) if rejected_dir else None
        self.dead = DeadLetters("store")  # what the engine refused, by reason, for the pages
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._pending: list[Reading] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._drain_lock = asyncio.Lock()  # flush() from outside must not replay a file twice
        self._backoff = Backoff(initial=0.2, cap=retry_cap)
        self._retry_at = 0.0
        self.available = True
        self.written = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.last_flush_s = 0.0
        # Each write's duration, counted per bucket of WRITE_BUCKETS_S (+Inf last): once per batch, not per reading.
        self.write_buckets = [0] * (len(WRITE_BUCKETS_S) + 1)
        self.write_seconds_sum = 0.0
        self.accepted = 0  # readings accepted so far: the ticket of the last batch
        self.durable = 0  # readings written, spooled or refused so far, oldest first
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap of (ticket, seq, future)
        self._waiter_seq = count()
        self._listeners: list[Callable[[int], None]] = []

    # -- the hub side -------------------------------------------------
    def accept(self, batch: Sequence[Reading]) -> int:
        """Queue a batch for writing; never blocks, never drops. Return its durability ticket."""
        self._pending.extend(batch)
        self.accepted += len(batch)
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        return self.accepted

    # -- durability ---------------------------------------------------
    def flush_soon(self) -> None:
        """Wake the writer now: somebody waits for durability (an MQTT ack, an HTTP answer)."""
        if self._pending:
            self._wake.set()

    async def wait_durable(self, ticket: int) -> None:
        """Return once every reading up to ``ticket`` is written, spooled or refused."""
        if self.durable >= ticket:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (ticket, next(self._waiter_seq), future))
        await future

    def add_durable_listener(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(durable)`` whenever the durable count grows; return a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _settle(self) -> None:
        """Advance the durable count: everything that left the queue and did not come back.

        Called with no batch in hand (after a drain, after the final flush): a
        batch is then written, refused, spooled, or back at the head of the
        queue (no spool, or the disk refused it), so what has left the queue
        for good is durable, and it left oldest first.
        """
        durable = self.accepted - len(self._pending)
        if durable <= self.durable:
            return
        self.durable = durable
        while self._waiters and self._waiters[0][0] <= durable:
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                future.set_result(None)
        for callback in list(self._listeners):
            try:
                callback(durable)
            except Exception:
                log.exception("durability listener %r failed", callback)

    @property
    def queue_depth(self) -> int:
        """Return how many readings wait in memory."""
        return len(self._pending)

    # -- the task side ------------------------------------------------
    async def run(self) -> None:
        """Write until stopped, then flush or spool what is left."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._drain()
        await self._final_flush()

    async def stop(self) -> None:
        """Ask the writer to flush and return."""
        self._stopping.set()
        self._wake.set()

    async def flush(self) -> None:
        """Write everything pending now (tests and shutdown)."""
        await self._drain()

    def _take(self) -> list[Reading]:
        batch = self._pending[: self.batch_size]
        del self._pending[: self.batch_size]
        return batch

    async def _drain(self) -> None:
        """Write pending batches; spool them while the engine is down."""
        async with self._drain_lock:
            await self._drain_locked()
            self._settle()  # not on cancellation: a batch may be in hand, neither written nor back in the queue

    async def _drain_locked(self) -> None:
        if not self.available and time.monotonic() < self._retry_at:
            self._spool_pending()
            return
        if self.spool and len(self.spool) and not await self._replay():
            self._spool_pending()
            return
        # Only what was pending when the drain started: readings keep arriving during each
        # write, and chasing them turned one write per tick into one per few dozen readings
        # (7,714 HTTP writes for 200k readings in bench/ingest.py, 76 with this bound).
        todo = len(self._pending)
        while todo > 0 and self._pending:
            batch = self._take()
            todo -= len(batch)
            left = await self._write(batch)
            if left:
                self._spool_batch(left)
                self._spool_pending()
                return

    async def _write(self, batch: list[Reading]) -> list[Reading]:
        """Write one batch; return what is left unwritten because the engine became unavailable.

        A refused batch is split in halves until the refused readings are
        found: those are dead-lettered, every other reading is written.
        """
        pieces = [batch]  # a stack: the first half is on top, so readings are written in order
        isolating = False
        while pieces:
            piece = pieces.pop()
            t0 = time.perf_counter()
            try:
                await self.engine.write(piece)
            except StoreUnavailable as exc:
                self._mark_down(str(exc))
                return [r for p in (piece, *reversed(pieces)) for r in p]
            except ReadingsRefused as exc:  # the engine wrote the rest and says which it refused
                self._written(len(piece) - len(exc.refused), t0)
                await self._reject(exc.refused)
                continue
            except Exception as exc:
                if len(piece) == 1:
                    await self._reject([(piece[0], f"{type(exc).__name__}: {exc}")])
                    continue
                if not isolating:
                    isolating = True
                    log.warning("store refused a batch of %d readings (%s: %s); isolating the refused ones",
                                len(piece), type(exc).__name__, exc)
                mid = len(piece) // 2
                pieces += [piece[mid:], piece[:mid]]
                continue
            self._written(len(piece), t0)
        return []

    def _written(self, n: int, t0: float) -> None:
        elapsed = self.last_flush_s = time.perf_counter() - t0
        self.write_buckets[bisect.bisect_left(WRITE_BUCKETS_S, elapsed)] += 1
        self.write_seconds_sum += elapsed
        self.written += n
        if not self.available:
            log.info("store %s is reachable again", self.engine.engine_type)
        self.available = True
        self._backoff.reset()

    async def _reject(self, refused: list[tuple[Reading, str]]) -> None:
        """Dead-letter readings the engine can never store: counted, shown, and kept on disk."""
        self.rejected += len(refused)
        for r, reason in refused:
            self.last_error = reason
            self.dead.add(f"store {r.device!a}/{r.metric!a}", "refused_by_store", reason, ascii(r))
        if self.rejected_log is not None:  # an fsync: off the loop that ingest and the pages share
            await asyncio.to_thread(self.rejected_log.put, refused)

    async def _replay(self) -> bool:
        """Replay spooled batches oldest first; return False if the engine went down."""
        assert self.spool is not None
        for path in self.spool.resync():
            batch = self.spool.read(path)
            if batch and await self._write(batch):
                return False  # the file stays: replayed whole later (the store overwrites what it has)
            self.spool.remove(path, len(batch))
            log.info("replayed %d spooled readings from %s", len(batch), path.name)
        return True

    def _mark_down(self, error: str) -> None:
        if self.available:
            log.warning("store %s unavailable: %s; spooling", self.engine.engine_type, error)
        self.available = False
        self.last_error = error
        self._retry_at = time.monotonic() + self._backoff.next()

    def _spool_batch(self, batch: list[Reading]) -> bool:
        """Put a batch on disk; without a spool (or a full disk) keep it in memory."""
        if self.spool is not None:
            try:
                self.spool.put(batch)
                return True
            except OSError as exc:
                self.last_error = f"spool: {exc}"
                log.error("cannot spool %d readings (%s); keeping them in memory", len(batch), exc)
        self._pending[:0] = batch
        return False

    def _spool_pending(self) -> None:
        while self.spool is not None and self._pending:
            if not self._spool_batch(self._take()):
                return

    async def _final_flush(self) -> None:
        """On stop: one attempt to write, spool whatever is left."""
        self._retry_at = 0.0
        await self._drain()
        async with self._drain_lock:  # a flush() from outside may hold a batch: settle with none in hand
            self._spool_pending()
            self._settle()
        if self._pending:
            log.error("store writer stopped with %d unwritten readings and no spool", len(self._pending))

    def health(self) -> dict[str, Any]:
        """Return queue depth, spool size and availability."""
        return {
            "engine": self.engine.health(),
            "available": self.available,
            "queue_depth": self.queue_depth,
            "awaiting_durability": self.accepted - self.durable,
            "written_total": self.written,
            "rejected_total": self.rejected,
            "rejected": self.dead.health(),
            "spool_files": len(self.spool) if self.spool else 0,
            "spool_readings": self.spool.readings if self.spool else 0,
            "last_error": self.last_error,
            "last_flush_ms": round(self.last_flush_s * 1000, 2),
        }
