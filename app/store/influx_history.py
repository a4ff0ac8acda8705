"""Rollups and retention for the InfluxDB store: Vigie's own rollup writer, the same for every InfluxDB.

Why not continuous queries: they exist in InfluxDB 1.x only (2.x has tasks
in Flux, 3.x neither), they run for the *last* interval only, so late data
and a replayed spool never fix their bucket, and they cannot be backfilled
or checked from Vigie. The rollup writer instead runs where the readings
come from: every write marks the buckets it touches *dirty*; a background
pass (owned by :meth:`InfluxStore.open`/``close``) recomputes each dirty
bucket from the raw readings with one InfluxQL ``GROUP BY time(R), *`` query
per slice and writes the results (fields ``vmin``, ``vmax``, ``vsum``, ``n``,
same tags) into the measurement ``<measurement>_<R>`` (``telemetry_1h``).
Points are keyed by series and time, so a recomputed bucket overwrites the
old one: late data fixes its bucket, a replayed point is counted once. It
needs only ``/query`` and the write endpoint Vigie already uses, so it works
on 1.x, 2.x (v1 compatibility or v2 writes) and 3.x alike.

Queries use a rollup only before the first dirty bucket in their range
(raw readings after it), so an answer never mixes a stale rollup with the
readings that made it stale. The dirty set lives in memory: at open the last
:data:`CATCH_UP_NS` are marked dirty (what a crash may have written without
rolling up; the spool's replay marks its own), and a resolution whose
measurement does not exist yet is backfilled from the first raw reading.

Retention: each pass deletes, per resolution, what is past its horizon
(InfluxQL ``DELETE ... WHERE time < cutoff`` on 1.x, ``/api/v2/delete`` with
the v2 API), and queries never return anything past it.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.store import rollup
from app.store.history_policy import HistoryPolicy, duration_label
from app.store.maintenance import Maintenance

if TYPE_CHECKING:
    from app.store.influx import InfluxStore

log = logging.getLogger(__name__)

CATCH_UP_NS = 86_400 * 10**9
"""At open, this much recent history is rolled up again (it may have been written just before a crash)."""

EXPIRE_EVERY_NS = 3600 * 10**9
"""Retention deletes run at most this often (an InfluxDB DELETE scans every shard, even with nothing to delete)."""

SLICE_BUCKETS = 1440
"""Buckets recomputed per query: a day of 1-minute buckets, 60 days of hourly ones."""


class Intervals:
    """Disjoint, sorted ``[lo, hi)`` integer intervals, merged as they are added."""

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Add ``[lo, hi)``, merging what it overlaps or touches."""
        i = bisect.bisect_left(self.hi, lo)  # first interval ending at or after lo
        j = bisect.bisect_right(self.lo, hi)  # intervals starting at or before hi
        if i < j:
            lo, hi = min(lo, self.lo[i]), max(hi, self.hi[j - 1])
        self.lo[i:j] = [lo]
        self.hi[i:j] = [hi]

    def first_in(self, a: int, b: int) -> int | None:
        """Return the first point of ``[a, b)`` covered by an interval, or None."""
        i = bisect.bisect_right(self.hi, a)
        if i < len(self.lo) and self.lo[i] < b:
            return max(a, self.lo[i])
        return None

    def items(self) -> list[tuple[int, int]]:
        return list(zip(self.lo, self.hi, strict=True))

    def __bool__(self) -> bool:
        return bool(self.lo)


class InfluxHistory:
    """The dirty buckets, the rollup pass and retention of one :class:`InfluxStore`."""

    def __init__(self, store: InfluxStore, policy: HistoryPolicy, interval_s: float,
                 clock: Callable[[], int]) -> None:
        self.store = store
        self.policy = policy
        self.now_ns = clock
        self.dirty: dict[int, Intervals] = {r: Intervals() for r in policy.rollups}
        self._working: dict[int, Intervals] = {r: Intervals() for r in policy.rollups}
        self.maintenance = Maintenance(self.run_pass, interval_s, name="influx-store-maintenance")
        self.rolled_points = 0
        self.disk_bytes: int | None = None
        self._expired_at: int | None = None
        self._density: dict[int, tuple[int, int]] = {}  # resolution -> (readings, buckets) rolled last pass

    def measurement(self, resolution: int) -> str:
        """Return the rollup measurement of a resolution: ``telemetry_1h``."""
        return f"{self.store.measurement}_{duration_label(resolution)}"

    def source(self, resolution: int) -> str:
        """Return the rollup measurement as an InfluxQL FROM clause (in the store's retention policy)."""
        from app.store.influx import quote_ident

        name = self.measurement(resolution)
        if self.store.retention_policy:
            return ".".join(quote_ident(p) for p in (self.store.database, self.store.retention_policy, name))
        return quote_ident(name)

    # -- dirty buckets -----------------------------------------------------
    def mark(self, times: list[int]) -> None:
        """Mark the buckets of these reading times dirty at every resolution."""
        if not times or not self.dirty:
            return
        finest = min(self.dirty)
        starts = sorted({t // finest * finest for t in times})
        for res, dirty in self.dirty.items():
            run_lo = run_hi = None
            for b in starts:
                lo = b // res * res
                if run_hi is not None and lo <= run_hi:
                    run_hi = max(run_hi, lo + res)
                    continue
                if run_lo is not None:
                    dirty.add(run_lo, run_hi)
                run_lo, run_hi = lo, lo + res
            if run_lo is not None:
                dirty.add(run_lo, run_hi)

    def worth_reading(self, resolution: int) -> bool:
        """Return whether queries should read this rollup rather than raw readings.

        Not when its last pass rolled up fewer than 2 readings per bucket (a
        1-minute rollup of 1-minute data: as many points, four fields each;
        measured 101 ms against 43 ms for raw), unless raw readings expire
        before it.
        """
        if rollup.store_all(self.policy, resolution):
            return True
        readings, buckets = self._density.get(resolution, (0, 0))
        return not buckets or readings >= rollup.MIN_READINGS_PER_BUCKET * buckets

    def settled_until(self, resolution: int, a: int, b: int) -> int:
        """Return the end of the part of ``[a, b)`` the rollup answers for (before its first dirty bucket)."""
        firsts = [x for x in (self.dirty[resolution].first_in(a, b), self._working[resolution].first_in(a, b))
                  if x is not None]
        return min(firsts) // resolution * resolution if firsts else b

    # -- life cycle ------------------------------------------------------------
    async def open(self) -> None:
        """Mark what must be rolled up again (the recent past; all of it for a new resolution), start the task."""
        if self.dirty:
            now = self.now_ns()
            try:
                existing = {row[0] for s in await self.store._statement("SHOW MEASUREMENTS")
                            for row in s.get("values") or []}
                first = None
                if self.store.measurement in existing and any(self.measurement(r) not in existing for r in self.dirty):
                    for s in await self.store._statement(f'SELECT first("value") FROM {self.store._from}'):
                        first = min([int(row[0]) for row in s.get("values") or []] + ([first] if first else []))
                for res, dirty in self.dirty.items():
                    since = first if first is not None and self.measurement(res) not in existing else now - CATCH_UP_NS
                    dirty.add(since // res * res, (now // res + 1) * res)
            except Exception as exc:  # the server down at start: roll up the recent past once it is back
                log.warning("InfluxDB rollups: cannot look at the server at start (%s)", exc)
                for res, dirty in self.dirty.items():
                    dirty.add((now - CATCH_UP_NS) // res * res, (now // res + 1) * res)
        self.maintenance.start()

    async def close(self) -> None:
        await self.maintenance.stop()

    # -- the pass ------------------------------------------------------------------
    async def run_pass(self) -> dict[str, Any]:
        """Recompute every dirty bucket (oldest first), then enforce retention."""
        done: dict[str, Any] = {}
        for res in sorted(self.dirty):
            todo, self.dirty[res] = self.dirty[res], Intervals()
            if todo:
                self._density[res] = (0, 0)
            self._working[res] = todo
            written = 0
            try:
                for lo, hi in todo.items():
                    a = lo
                    while a < hi:
                        b = min(hi, a + SLICE_BUCKETS * res)
                        written += await self._roll(res, a, b)
                        a = b
            except BaseException:
                for lo, hi in todo.items():  # redo it all next time (recomputing is idempotent)
                    self.dirty[res].add(lo, hi)
                raise
            finally:
                self._working[res] = Intervals()
            done[duration_label(res)] = written
            self.rolled_points += written
        now = self.now_ns()
        if self._expired_at is None or now - self._expired_at >= EXPIRE_EVERY_NS:
            done["expired"] = await self._expire()
            self._expired_at = now
            await self._measure_disk()
        return done

    async def _measure_disk(self) -> None:
        """Note the database's bytes on disk (InfluxDB 1.x ``SHOW STATS``; unknown elsewhere)."""
        try:
            shards = await self.store._statement("SHOW STATS FOR 'shard'", db=False)
        except ValueError:
            self.disk_bytes = None
            return
        total = 0
        for s in shards:
            if (s.get("tags") or {}).get("database") == self.store.database and "diskBytes" in s["columns"]:
                i = s["columns"].index("diskBytes")
                total += sum(int(row[i] or 0) for row in s.get("values") or [])
        self.disk_bytes = total

    async def _roll(self, res: int, a: int, b: int) -> int:
        """Recompute the buckets of ``[a, b)`` at ``res`` from raw readings; return the points written."""
        from app.store.influx import _escape_tag

        series = await self.store._statement(
            f'SELECT min("value"), max("value"), sum("value"), count("value") FROM {self.store._from} '
            f"WHERE time >= {int(a)} AND time < {int(b)} GROUP BY time({int(res)}ns), * fill(none)")
        meas = self.measurement(res)
        lines: list[str] = []
        for s in series:
            tags = [f"{_escape_tag(k)}={_escape_tag(v)}" for k, v in sorted((s.get("tags") or {}).items())
                    if v and _escape_tag(k) is not None and _escape_tag(v) is not None]
            prefix = ",".join([meas, *tags])
            for t, lo, hi, total, n in s.get("values") or []:
                if n:
                    readings, buckets = self._density.get(res, (0, 0))
                    self._density[res] = (readings + int(n), buckets + 1)
                    lines.append(f"{prefix} vmin={float(lo)!r},vmax={float(hi)!r},vsum={float(total)!r},n={int(n)}i "
                                 f"{int(t)}")
        for i in range(0, len(lines), 5000):
            data = "\n".join(lines[i:i + 5000]).encode()
            if self.store.api == "v2":
                await self.store._write_v2(data)
            else:
                await self.store._write_v1(data)
        return len(lines)

    async def _expire(self) -> int:
        """Delete what is past its horizon at each resolution; return how many resolutions were trimmed."""
        now = self.now_ns()
        trimmed = 0
        for res, name in [(None, self.store.measurement)] + [(r, self.measurement(r)) for r in self.policy.rollups]:
            cutoff = self.policy.cutoff(res, now)
            if cutoff is None:
                continue
            if self.store.api == "v2":
                body = json.dumps({"start": "1970-01-01T00:00:00Z", "stop": _rfc3339(cutoff),
                                   "predicate": f'_measurement="{name}"'})
                from urllib.parse import urlencode

                qs = urlencode({"org": self.store.org or "", "bucket": self.store.bucket})
                response = await self.store._fetch(f"/api/v2/delete?{qs}", "POST", body,
                                                   {"Content-Type": "application/json"})
                if response.code >= 300:
                    raise ValueError(f"InfluxDB refused the delete ({response.code}): "
                                     f"{self.store._message(response)}")
            else:
                from app.store.influx import quote_ident

                await self.store._statement(f"DELETE FROM {quote_ident(name)} WHERE time < {int(cutoff)}")
            trimmed += 1
        return trimmed

    def health(self) -> dict[str, Any]:
        return {
            "retention": " · ".join(f"{k} {v}" for k, v in self.policy.describe().items()),
            "rollups": {duration_label(r): (f"{len(d.lo)} dirty spans" if d else "up to date")
                        for r, d in self.dirty.items()},
            "rolled_points": self.rolled_points,
            "database_bytes_on_disk": self.disk_bytes,
            "maintenance": self.maintenance.health(),
        }


def _rfc3339(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
