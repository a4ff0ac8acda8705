"""The InfluxDB store engine: line protocol out, InfluxQL in.

One measurement holds every reading: tags ``device``, ``metric``, ``unit``
(when not empty) and the reading's own tags; fields ``value`` (float) and
``quality`` (string); nanosecond timestamps. Since InfluxDB keys a point by
measurement, tag set and time, writing the same series and timestamp again
overwrites, which is what makes the writer's spool replay idempotent.

Writes go to ``/write`` (InfluxDB 1.x, and the v1-compatible endpoint of 2.x
and 3.x) or, with ``api="v2"``, through influxdb-client's v2 write API
(``/api/v2/write``, org/bucket/token). influxdb-client cannot talk to 1.x
before 1.8 and its ``Point`` costs ~10x a formatted string, so the line
protocol is formatted here in both cases. Queries always use the
v1-compatible ``/query`` with InfluxQL.

Error mapping, which the :class:`~app.store.writer.StoreWriter` relies on:
anything that says "not now" (refused connection, timeout, 5xx, 408, 429,
and also a missing database, a missing retention policy or refused
credentials, which are the server's state, not the batch's fault) raises
:class:`StoreUnavailable` so the batch is spooled and retried; a 400 raises
:class:`InfluxWriteRejected` (a ``ValueError``), since retrying a bad batch
would never end. InfluxDB writes the good points of a batch and answers
400 "partial write ... dropped=N" for the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError

from app.model import Envelope, LatestValue, Reading, SeriesInfo
from app.store import rollup
from app.store.base import ReadingsRefused, StoreEngine, StoreUnavailable, bucket_width_ns
from app.store.history_policy import HistoryPolicy
from app.store.influx_history import InfluxHistory

log = logging.getLogger(__name__)

# Tag keys the schema owns; a reading tag with one of these names would
# clash (duplicate tag, or a tag shadowing a field) and is dropped.
RESERVED_TAGS = frozenset({"device", "metric", "unit", "value", "quality", "time"})

_TAG_ESC = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_MEAS_ESC = str.maketrans({",": "\\,", " ": "\\ "})
_STR_ESC = str.maketrans({"\\": "\\\\", '"': '\\"'})
# InfluxDB 1.x keeps backslashes in tags literally, except that a backslash
# escapes the next character: an odd run of backslashes right before a
# character we escape (or at the end, before the separator) cannot be
# written unambiguously. A newline ends the line whatever precedes it.
_TAG_UNSAFE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:[,= ]|$)|\n")
_MEAS_UNSAFE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:[, ]|$)|\n")
_DROPPED = re.compile(r"dropped=(\d+)")

_PREFIX_CACHE_MAX = 200_000


class InfluxWriteRejected(ValueError):
    """InfluxDB refused (part of) a batch; retrying it would fail again."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"InfluxDB answered {status}: {message}")
        self.status = status
        self.message = message
        match = _DROPPED.search(message)
        # How many points InfluxDB dropped, when it says (partial writes).
        self.dropped: int | None = int(match.group(1)) if match else None
        self.partial = "partial write" in message


def quote_ident(name: str) -> str:
    """Return an InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """Return an InfluxQL single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _escape_tag(text: str) -> str | None:
    """Escape a tag key or value; ``None`` when line protocol cannot carry it."""
    if ("\\" in text or "\n" in text) and _TAG_UNSAFE.search(text):
        return None
    return text.translate(_TAG_ESC)


def _split_keys(key: str) -> list[tuple[str, str]]:
    """Return every (device, metric) a series key can stand for.

    Device and metric names may contain ``/`` themselves, so ``a/b/c`` is
    either ``a`` + ``b/c`` or ``a/b`` + ``c``; querying all candidates at
    once finds the series whichever it is.
    """
    out = [(key[:i], key[i + 1 :]) for i, c in enumerate(key) if c == "/"]
    if not out:
        raise ValueError(f"{key!r} is not a series key (device/metric)")
    return out


def _redact_url(url: str) -> str:
    """Return the URL without user info (never show credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class InfluxStore(StoreEngine):
    """Readings in one InfluxDB measurement, written in line protocol over HTTP."""

    engine_type = "influx"

    def __init__(
        self,
        url: str,
        *,
        database: str = "vigie",
        measurement: str = "telemetry",
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        api: str = "v1",
        org: str | None = None,
        bucket: str | None = None,
        timeout_s: float = 10,
        create_database: bool = True,
        policy: HistoryPolicy | None = None,
        maintenance_interval_s: float = 300.0,
        clock: Any = time.time_ns,
    ) -> None:
        if api not in ("v1", "v2"):
            raise ValueError(f"api must be 'v1' or 'v2', not {api!r}")
        if not measurement or measurement.startswith("#") or _MEAS_UNSAFE.search(measurement):
            raise ValueError(f"measurement {measurement!r} cannot be written in line protocol")
        parts = urlsplit(url)
        # Credentials in the URL are taken out of it so it can be shown.
        username = username if username is not None else parts.username
        password = password if password is not None else parts.password
        self.url = _redact_url(url).rstrip("/")
        self.database = database
        self.measurement = measurement
        self.retention_policy = retention_policy or None
        self.api = api
        self.org = org
        self.bucket = bucket or (f"{database}/{retention_policy}" if retention_policy else database)
        self.timeout_s = timeout_s
        self.create_database = create_database and api == "v1"
        self._username = username
        self._password = password
        self._token = token
        if api == "v2" and not token and username:
            # InfluxDB 1.8+ accepts "user:password" as a v2 token.
            self._token = f"{username}:{password or ''}"
        self._headers: dict[str, str] = {}
        if self._token:
            self._headers["Authorization"] = f"Token {self._token}"
        self._basic = bool(username) and not self._token

        self._meas = measurement.translate(_MEAS_ESC)
        if self.retention_policy:
            self._from = ".".join(quote_ident(p) for p in (database, self.retention_policy, measurement))
        else:
            self._from = quote_ident(measurement)
        write_params = {"db": database, "precision": "ns"}
        if self.retention_policy:
            write_params["rp"] = self.retention_policy
        self._write_qs = urlencode(write_params)

        self._http: AsyncHTTPClient | None = None
        self._v2_client: Any = None
        self._v2_write: Any = None
        self._prefixes: dict[tuple, str | None] = {}
        self._qualities: dict[str, str] = {}

        self.skipped_total = 0
        self.points_written = 0
        self.reachable: bool | None = None
        self.version: str | None = None
        self.last_ping_ns: int | None = None
        self.last_ping_ok: bool | None = None
        self.last_error: str | None = None
        # Rollups and retention (None: raw only, kept forever, as before issue 16).
        self.now_ns = clock
        self.history = InfluxHistory(self, policy, maintenance_interval_s, clock) if policy else None

    # -- lifecycle ----------------------------------------------------
    async def open(self) -> None:
        """Ping and create the database; tolerate an unreachable server.

        A database down at start must not stop Vigie: the writer spools and
        retries, and a write that finds no database creates it then.
        """
        if self.api == "v2":
            self._v2_writer()  # import influxdb-client now, not on the first write
        try:
            await self.ping()
        except StoreUnavailable as exc:
            log.warning("InfluxDB at %s is unreachable at start (%s); readings will be spooled", self.url, exc)
            if self.history is not None:
                await self.history.open()
            return
        if self.create_database:
            try:
                await self._create_database()
            except (StoreUnavailable, ValueError) as exc:
                log.warning("could not create InfluxDB database %r: %s", self.database, exc)
        if self.history is not None:
            await self.history.open()

    async def maintain(self) -> dict[str, Any]:
        """Run one rollup and retention pass now; return what it did."""
        if self.history is None:
            return {}
        return await self.history.maintenance.run_once()

    async def close(self) -> None:
        """Stop the rollup task (awaiting its pass), close the HTTP clients."""
        if self.history is not None:
            await self.history.close()
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._v2_client is not None:
            client, self._v2_client, self._v2_write = self._v2_client, None, None
            await asyncio.to_thread(client.close)

    def _client(self) -> AsyncHTTPClient:
        # Created on first use, inside the running loop tornado binds it to.
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, max_clients=8)
        return self._http

    # -- HTTP ----------------------------------------------------------
    async def _fetch(self, path: str, method: str = "GET", body: bytes | str | None = None,
                     headers: dict[str, str] | None = None) -> HTTPResponse:
        """Send one request; raise StoreUnavailable when the server cannot answer."""
        request = HTTPRequest(
            f"{self.url}{path}",
            method=method,
            body=body,
            headers={**self._headers, **(headers or {})},
            auth_username=self._username if self._basic else None,
            auth_password=self._password if self._basic else None,
            connect_timeout=self.timeout_s,
            request_timeout=self.timeout_s,
            decompress_response=True,
        )
        try:
            response = await self._client().fetch(request, raise_error=False)
        except (HTTPClientError, StreamClosedError, OSError, TimeoutError) as exc:
            self._down(f"{type(exc).__name__}: {exc}")
            raise StoreUnavailable(f"InfluxDB at {self.url}: {exc}") from exc
        if response.code >= 500 or response.code in (408, 429):
            message = self._message(response)
            self._down(message)
            raise StoreUnavailable(f"InfluxDB at {self.url} answered {response.code}: {message}")
        self.reachable = True
        version = response.headers.get("X-Influxdb-Version")
        if version:
            self.version = version
        return response

    def _down(self, error: str) -> None:
        self.reachable = False
        self.last_error = error

    @staticmethod
    def _message(response: HTTPResponse) -> str:
        """Return InfluxDB's error message from a response, short."""
        text = ""
        if response.body:
            try:
                text = json.loads(response.body).get("error") or ""
            except (ValueError, AttributeError):
                text = response.body.decode("utf-8", "replace")
        text = text or response.headers.get("X-Influxdb-Error", "") or response.reason or ""
        return text.strip()[:500]

    async def ping(self) -> str | None:
        """Check the server answers; return its version. Raise StoreUnavailable if not."""
        self.last_ping_ns = time.time_ns()
        self.last_ping_ok = False
        response = await self._fetch("/ping")
        if response.code >= 300:
            message = self._message(response)
            self.last_error = message
            raise StoreUnavailable(f"InfluxDB ping answered {response.code}: {message}")
        self.last_ping_ok = True
        return self.version

    async def _create_database(self) -> None:
        await self._statement(f"CREATE DATABASE {quote_ident(self.database)}", db=False)
        log.info("InfluxDB database %r is ready", self.database)

    # -- writing -------------------------------------------------------
    def _prefix(self, r: Reading) -> str | None:
        """Build ``measurement,tags`` for a reading's series (cached)."""
        tags = {"device": r.device, "metric": r.metric}
        if r.unit:
            tags["unit"] = r.unit
        for k, v in r.tags.items():
            if k not in RESERVED_TAGS:
                tags[k] = v
        parts = [self._meas]
        for k in sorted(tags):
            v = tags[k]
            if not k or not v:
                continue  # InfluxDB has no empty tags: absent reads back as ""
            ek = _escape_tag(k)
            ev = _escape_tag(str(v))
            if ek is None or ev is None:
                return None
            parts.append(f"{ek}={ev}")
        return ",".join(parts)

    def format_lines(self, batch: Sequence[Reading]) -> tuple[str, list[tuple[Reading, str]]]:
        """Return the batch as line protocol and the readings skipped, each with the reason.

        Skipped: NaN and infinite values (InfluxDB refuses them), values that
        are not numbers, and names line protocol cannot carry (a newline, or
        an odd run of backslashes before a separator).
        """
        prefixes = self._prefixes
        qualities = self._qualities
        isfinite = math.isfinite
        lines: list[str] = []
        append = lines.append
        skipped: list[tuple[Reading, str]] = []
        for r in batch:
            try:
                value = float(r.value)
                ts = int(r.time_ns)
            except (TypeError, ValueError, OverflowError):
                skipped.append((r, "value or timestamp is not a number"))
                continue
            if not isfinite(value):
                skipped.append((r, f"InfluxDB cannot store the value {value}"))
                continue
            tags = r.tags
            key = (r.device, r.metric, r.unit, *tags.items()) if tags else (r.device, r.metric, r.unit)
            try:
                prefix = prefixes[key]
            except KeyError:
                if len(prefixes) >= _PREFIX_CACHE_MAX:
                    prefixes.clear()
                prefix = prefixes[key] = self._prefix(r)
            if prefix is None:
                skipped.append((r, "a name or tag line protocol cannot carry (newline, or a trailing backslash)"))
                continue
            quality = r.quality
            try:
                q = qualities[quality]
            except KeyError:
                q = qualities[quality] = str(quality).translate(_STR_ESC)
            append(f'{prefix} value={value!r},quality="{q}" {ts}')
        return "\n".join(lines), skipped

    async def write(self, batch: Sequence[Reading]) -> None:
        """Write a batch; same series and timestamp overwrites."""
        body, skipped = self.format_lines(batch)
        if body:
            try:
                data = body.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate: the writer isolates the reading
                raise ValueError(f"text InfluxDB cannot take: {exc}") from None
            if self.api == "v2":
                await self._write_v2(data)
            else:
                await self._write_v1(data)
            self.points_written += len(batch) - len(skipped)
            if self.history is not None:
                self.history.mark([r.time_ns for r in batch])
        if skipped:
            self.skipped_total += len(skipped)
            raise ReadingsRefused(skipped)

    async def _write_v1(self, data: bytes) -> None:
        response = await self._post_write(data)
        if response.code == 404 and "database not found" in self._message(response) and self.create_database:
            # The server came up (or was reset) after open(): create and retry once.
            log.warning("InfluxDB database %r is missing; creating it", self.database)
            try:
                await self._create_database()
            except ValueError as exc:
                raise StoreUnavailable(f"database {self.database!r} is missing and cannot be created: {exc}") from exc
            response = await self._post_write(data)
        if response.code >= 300:
            raise self._write_error(response.code, self._message(response))

    async def _post_write(self, data: bytes) -> HTTPResponse:
        return await self._fetch(f"/write?{self._write_qs}", "POST", data,
                                 {"Content-Type": "text/plain; charset=utf-8"})

    def _write_error(self, status: int, message: str) -> Exception:
        """Map a refused write to "retry later" or "this batch is bad"."""
        lowered = message.lower()
        if status in (401, 403) or (
            status == 404 and ("not found" in lowered or not message)
        ) or "retention policy not found" in lowered:
            # The server's state (credentials, database, RP), not the batch:
            # spool and retry rather than drop every reading until it is fixed.
            self.last_error = message
            return StoreUnavailable(f"InfluxDB refused writes ({status}): {message}")
        self.last_error = message
        return InfluxWriteRejected(status, message)

    def _v2_writer(self) -> Any:
        """Return influxdb-client's synchronous write API (created once)."""
        if self._v2_write is None:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            self._v2_client = InfluxDBClient(url=self.url, token=self._token, org=self.org,
                                             timeout=int(self.timeout_s * 1000), retries=False)
            self._v2_write = self._v2_client.write_api(write_options=SYNCHRONOUS)
        return self._v2_write

    async def _write_v2(self, data: bytes) -> None:
        """Write through influxdb-client's synchronous v2 API, in a thread.

        Its async API needs aiohttp, which Vigie does not ship; the blocking
        urllib3 call runs off the event loop instead. Retries stay off: the
        writer owns retrying and spooling.
        """
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        write_api = self._v2_writer()
        try:
            await asyncio.to_thread(write_api.write, self.bucket, self.org, data, "ns")
        except ApiException as exc:
            status = exc.status or 0
            message = str(getattr(exc, "message", "") or exc.reason or "")[:500]
            if status >= 500 or status in (408, 429) or status == 0:
                self._down(message)
                raise StoreUnavailable(f"InfluxDB at {self.url} answered {status}: {message}") from exc
            self.reachable = True
            raise self._write_error(status, message) from exc
        except (Urllib3Error, OSError) as exc:
            self._down(f"{type(exc).__name__}: {exc}")
            raise StoreUnavailable(f"InfluxDB at {self.url}: {exc}") from exc
        self.reachable = True

    # -- querying ------------------------------------------------------
    async def _statement(self, q: str, *, db: bool = True) -> list[dict[str, Any]]:
        """Run one InfluxQL statement; return its series (empty if none)."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = self.database
        response = await self._fetch("/query", "POST", urlencode(params),
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        if response.code >= 300:
            message = self._message(response)
            if response.code in (401, 403):
                raise StoreUnavailable(f"InfluxDB refused the query ({response.code}): {message}")
            raise ValueError(f"InfluxDB answered {response.code} to {q!r}: {message}")
        results = json.loads(response.body).get("results") or [{}]
        result = results[0]
        error = result.get("error")
        if error:
            if error.startswith("database not found"):
                return []  # nothing written yet
            raise ValueError(f"InfluxDB query {q!r} failed: {error}")
        return result.get("series") or []

    def _key_condition(self, key: str) -> str:
        return " OR ".join(
            f'("device" = {quote_literal(d)} AND "metric" = {quote_literal(m)})' for d, m in _split_keys(key)
        )

    async def _last_points(self) -> dict[tuple[str, str], LatestValue]:
        """Return the newest point of every (device, metric), with its unit and tags."""
        q = f'SELECT last("value") AS "value", "quality" FROM {self._from} GROUP BY *'
        out: dict[tuple[str, str], LatestValue] = {}
        for series in await self._statement(q):
            tags = {k: v for k, v in (series.get("tags") or {}).items() if v}
            device = tags.pop("device", "")
            metric = tags.pop("metric", "")
            unit = tags.pop("unit", "")
            cols = series["columns"]
            i_t, i_v, i_q = cols.index("time"), cols.index("value"), cols.index("quality")
            for row in series.get("values") or []:
                if row[i_v] is None:
                    continue
                lv = LatestValue(device, metric, int(row[i_t]), float(row[i_v]), row[i_q] or "", unit, tags)
                # A series whose unit or tags changed is several InfluxDB series: keep the newest.
                old = out.get((device, metric))
                if old is None or lv.time_ns >= old.time_ns:
                    out[(device, metric)] = lv
        return out

    async def latest(self) -> list[LatestValue]:
        """Return the latest value of every series."""
        points = await self._last_points()
        return [points[k] for k in sorted(points)]

    async def series(self) -> list[SeriesInfo]:
        """Return every known series with its unit and tags (as last written)."""
        points = await self._last_points()
        return [SeriesInfo(p.device, p.metric, p.unit, p.tags) for _, p in sorted(points.items())]

    async def envelope(self, key: str, start_ns: int, end_ns: int, buckets: int) -> Envelope:
        """Return ``[start, end)`` of a series as min/mean/max per bucket.

        Buckets start at ``start_ns`` (InfluxDB's GROUP BY time() is offset so
        its epoch-aligned buckets line up), so there are at most ``buckets``.
        With rollups, the coarsest resolution that fills the buckets answers
        for its whole buckets before the first dirty one, raw readings for the
        rest (see :mod:`app.store.influx_history`).
        """
        width = bucket_width_ns(start_ns, end_ns, buckets)
        env = Envelope(key, width, [], [], [], [])
        if end_ns <= start_ns:
            return env
        if self.history is None:
            return await self._raw_envelope(env, key, start_ns, end_ns)
        policy, now = self.history.policy, self.now_ns()
        res = rollup.choose([r for r in policy.rollups if self.history.worth_reading(r)], width)
        raw_ranges, rolled = [(start_ns, end_ns)], None
        if res is not None:
            first, last = -(-start_ns // res) * res, end_ns // res * res
            upto = self.history.settled_until(res, first, last) if first < last else first
            if upto > first:
                raw_ranges = [(start_ns, first), (upto, end_ns)]
                rolled = (max(first, policy.cutoff(res, now) or first), upto)
        raw_cut = policy.cutoff(None, now)
        groups = f"GROUP BY time({width}ns, {start_ns % width}ns) fill(none)"
        queries = [
            f'SELECT min("value"), max("value"), sum("value"), count("value") FROM {self._from} '
            f"WHERE ({self._key_condition(key)}) AND time >= {int(a)} AND time < {int(b)} {groups}"
            for a, b in ((max(a, raw_cut) if raw_cut is not None else a, b) for a, b in raw_ranges) if a < b]
        if rolled is not None and rolled[0] < rolled[1]:
            queries.append(
                f'SELECT min("vmin"), max("vmax"), sum("vsum"), sum("n") FROM {self.history.source(res)} '
                f"WHERE ({self._key_condition(key)}) AND time >= {int(rolled[0])} AND time < {int(rolled[1])} "
                f"{groups}")
        merged: dict[int, list[float]] = {}
        for answer in await asyncio.gather(*(self._statement(q) for q in queries)):
            for series in answer:
                for t, lo, hi, total, n in series.get("values") or []:
                    if not n:
                        continue
                    m = merged.get(t)
                    if m is None:
                        merged[t] = [lo, hi, total, n]
                    else:
                        m[0], m[1], m[2], m[3] = min(m[0], lo), max(m[1], hi), m[2] + total, m[3] + n
        for t in sorted(merged):
            lo, hi, total, n = merged[t]
            env.time_ns.append(int(t))
            env.min.append(float(lo))
            env.mean.append(float(total) / n)
            env.max.append(float(hi))
        return env

    async def _raw_envelope(self, env: Envelope, key: str, start_ns: int, end_ns: int) -> Envelope:
        """Return the envelope from raw readings with one query (no rollups configured)."""
        width = env.bucket_ns
        q = (
            f'SELECT min("value"), mean("value"), max("value") FROM {self._from} '
            f"WHERE ({self._key_condition(key)}) AND time >= {int(start_ns)} AND time < {int(end_ns)} "
            f"GROUP BY time({width}ns, {start_ns % width}ns) fill(none)"
        )
        for series in await self._statement(q):
            cols = series["columns"]
            i_t, i_min, i_mean, i_max = (cols.index(c) for c in ("time", "min", "mean", "max"))
            for row in series.get("values") or []:
                if row[i_mean] is None:
                    continue
                env.time_ns.append(int(row[i_t]))
                env.min.append(float(row[i_min]))
                env.mean.append(float(row[i_mean]))
                env.max.append(float(row[i_max]))
        return env

    def _raw_since(self, start_ns: int) -> int:
        """Return ``start_ns`` moved up to the raw horizon, if retention has one."""
        cutoff = self.history.policy.cutoff(None, self.now_ns()) if self.history else None
        return max(start_ns, cutoff) if cutoff is not None else start_ns

    async def raw(self, key: str, start_ns: int, end_ns: int) -> list[tuple[int, float, str]]:
        """Return the raw points of a range, oldest first (a rule's test on history, exports)."""
        start_ns = self._raw_since(start_ns)
        q = (f'SELECT "value", "quality" FROM {self._from} WHERE ({self._key_condition(key)}) '
             f"AND time >= {int(start_ns)} AND time < {int(end_ns)} ORDER BY time")
        out: list[tuple[int, float, str]] = []
        for series in await self._statement(q):
            cols = series["columns"]
            i_t, i_v, i_q = cols.index("time"), cols.index("value"), cols.index("quality")
            out += [(int(r[i_t]), float(r[i_v]), str(r[i_q] or "good")) for r in series.get("values") or []
                    if r[i_v] is not None]
        out.sort()
        return out

    async def count(self, key: str | None = None) -> int:
        """Return how many readings are stored (for one series, or all)."""
        conditions = [f"({self._key_condition(key)})"] if key is not None else []
        cutoff = self.history.policy.cutoff(None, self.now_ns()) if self.history else None
        if cutoff is not None:
            conditions.append(f"time >= {int(cutoff)}")
        q = f'SELECT count("value") FROM {self._from}'
        if conditions:
            q += " WHERE " + " AND ".join(conditions)
        total = 0
        for series in await self._statement(q):
            i = series["columns"].index("count")
            total += sum(int(row[i] or 0) for row in series.get("values") or [])
        return total

    # -- health --------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Return where the engine writes and what it last saw of the server."""
        return {
            "engine": self.engine_type,
            "url": self.url,
            "database": self.database,
            "measurement": self.measurement,
            "retention_policy": self.retention_policy,
            "api": self.api,
            "bucket": self.bucket if self.api == "v2" else None,
            "reachable": self.reachable,
            "version": self.version,
            "last_ping_ok": self.last_ping_ok,
            "last_ping_age_s": (
                round((time.time_ns() - self.last_ping_ns) / 1e9, 1) if self.last_ping_ns else None
            ),
            "points_written": self.points_written,
            "skipped_total": self.skipped_total,
            "last_error": self.last_error,
            **(self.history.health() if self.history else {}),
        }
