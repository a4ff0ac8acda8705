"""The HTTP ingestion API: JSON readings and InfluxDB line protocol, with a bearer token.

``POST /api/v1/readings`` takes a JSON array (or one object) of readings
``{"device", "metric", "value", "ts"?, "unit"?, "quality"?, "tags"?}``;
``POST /api/v1/write`` takes line protocol (``?precision=ns|us|ms|s``), the
device from the ``device`` or ``host`` tag, the metric named by
``http.line_protocol.metric_template`` (``{measurement}.{field}``). InfluxDB's
own write API is spoken beside it, so Telegraf and influxdb-client write here
unchanged: ``POST /write?db=&precision=`` (1.x) and ``POST
/api/v2/write?org=&bucket=&precision=`` (2.x), with gzip bodies, 204 on
success and InfluxDB's error bodies. Good readings are always kept:
the answer is 200 when all were good, and 400 listing each bad item or line
with its reason otherwise. Rejections also feed the source's dead letters.

An answer with readings accepted comes only once they are durable: written
to the store, spooled to disk while it is down, or refused by it (the store
writer's watermark). If that takes longer than ``durable_timeout_s`` (no
spool and the store down) the answer is 503: send again, a reading sent
twice is stored once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

import param

from app.cameras import check_camera
from app.ingest.base import ConnectionState, Source
from app.ingest.deadletters import DeadLetters
from app.ingest.decoders import (
    _UNIT_NS,
    MIN_TIME_NS,
    Context,
    LineProtocolDecoder,
    iso_to_ns,
    number_to_ns,
)
from app.model import Quality, Reading, now_ns
from app.spec import Spec
from app.web.limits import MAX_DEPTH, LimitedBodyHandler, load_json, short
from app.web.openapi import Op

_QUALITIES = {q.value for q in Quality}
MAX_ITEM_ERRORS = 1000
"""Most refused items listed in a reply (each with its place and a bounded reason); ``rejected`` counts all."""


class HttpSource(Source):
    """The HTTP API as a source: it has no connection, it is up while the server is."""

    source_type = "http"

    def __init__(self, name: str, hub, *, token: str | None, token_allows: Callable[[str], bool] | None = None,
                 max_body_bytes: int = 10_000_000,
                 max_image_bytes: int = 5_000_000, max_json_depth: int = MAX_DEPTH,
                 timestamp_unit: str = "ms", max_future_s: float = 300.0, durable_timeout_s: float = 30.0,
                 line_protocol: dict[str, Any] | None = None) -> None:
        super().__init__(name, hub)
        self.token = token
        self.token_allows = token_allows  # an API token with the ``ingest`` scope (app/web/accounts.py)
        self.max_body_bytes = max_body_bytes
        self.max_image_bytes = max_image_bytes
        self.max_json_depth = max_json_depth
        self.timestamp_unit = timestamp_unit
        self.max_future_ns = int(max_future_s * 1e9)
        self.durable_timeout_s = durable_timeout_s
        self.state = ConnectionState.CONNECTED if self.enabled else ConnectionState.STOPPED
        self.max_future_s = max_future_s
        self.line_protocol = dict(line_protocol or {})  # LineProtocolSpec.options(): metric_template, device_tags...
        self._lp: dict[str, LineProtocolDecoder] = {}

    async def run(self) -> None:
        """Nothing to run: requests arrive through the web server. Wait for stop."""
        await self._stopping.wait()
        self.set_state(ConnectionState.STOPPED)

    @property
    def enabled(self) -> bool:
        """Whether any token could be accepted: the shared one from the config, or API tokens."""
        return bool(self.token) or self.token_allows is not None

    def authorized(self, header: str | None) -> bool:
        """Check a ``Bearer`` token: the shared one (in constant time), else an API token with ``ingest``."""
        if not header or not header.startswith("Bearer "):
            return False
        return self.token_ok(header[7:].strip())

    def token_ok(self, offered: str) -> bool:
        """Return whether ``offered`` is the shared ingest token (compared in constant time) or an ``ingest`` one."""
        if not offered:
            return False
        if self.token and hmac.compare_digest(offered.encode(), self.token.encode()):
            return True
        return self.token_allows is not None and self.token_allows(offered)

    def lp_decoder(self, precision: str) -> LineProtocolDecoder:
        """Return the line protocol decoder of a precision (s, ms, us, ns, and InfluxDB 1.x's m, h)."""
        decoder = self._lp.get(precision)
        if decoder is None:
            decoder = self._lp[precision] = LineProtocolDecoder(
                precision=precision, max_bytes=self.max_body_bytes, max_future_s=self.max_future_s,
                **self.line_protocol)
        return decoder

    def ticket(self) -> int | None:
        """Return the durability ticket of what was published so far (None without a store writer)."""
        durability = self.hub.durability
        return durability.accepted if durability is not None else None

    async def durable(self, ticket: int | None) -> bool:
        """Wait until everything up to ``ticket`` is durable; return False after ``durable_timeout_s``."""
        durability = self.hub.durability
        if ticket is None or durability is None or durability.durable >= ticket:
            return True
        durability.flush_soon()  # a client waits: do not wait for the flush tick
        try:
            await asyncio.wait_for(durability.wait_durable(ticket), self.durable_timeout_s)
        except TimeoutError:
            return False
        return True

    # -- line protocol ------------------------------------------------
    def ingest_lines(self, body: bytes, precision: str, where: str = "http /api/v1/write",
                     ) -> tuple[int, list[dict[str, Any]]]:
        """Store the good lines; return (accepted, errors)."""
        dead = DeadLetters(self.name, keep=10_000, quiet=True)
        out: list[Reading] = []
        self.lp_decoder(precision).decode(body, Context(self.name, where, now_ns()), out, dead)
        out = self.screened(out, dead)  # refused readings reach the caller's answer, not only the dead letters
        self.hand_over(out)
        return len(out), self._report(dead)

    # -- JSON ---------------------------------------------------------
    def ingest_json(self, body: bytes) -> tuple[int, list[dict[str, Any]]]:
        """Store the good readings of a JSON body; return (accepted, errors)."""
        dead = DeadLetters(self.name, keep=10_000, quiet=True)
        out: list[Reading] = []
        received = now_ns()
        doc, problem = load_json(body, self.max_json_depth)
        if problem is not None:
            dead.add("body", "invalid_json", problem, body[:200])
            return 0, self._report(dead)
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items):
            reading = self._reading(item, f"item {i}", received, dead)
            if reading is not None:
                out.append(reading)
        self.hand_over(out)  # each item was screened with its place (_reading)
        return len(out), self._report(dead)

    def _reading(self, item: Any, where: str, received: int, dead: DeadLetters) -> Reading | None:
        text = json.dumps(item, default=str)[:200]
        if not isinstance(item, dict):
            dead.add(where, "wrong_type", "expected an object", text)
            return None
        device, metric, value = item.get("device"), item.get("metric"), item.get("value")
        if not isinstance(device, str) or not device or not isinstance(metric, str) or not metric:
            dead.add(where, "no_series", "'device' and 'metric' must be non-empty strings", text)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            dead.add(where, "wrong_type", f"'value' must be a number, got {str(value)[:40]!r}", text)
            return None
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            dead.add(where, "not_finite", f"'value' is {str(value)[:40]}", text)
            return None
        time_ns = self._time(item.get("ts"), received)
        if isinstance(time_ns, str):
            dead.add(where, "bad_timestamp", time_ns, text)
            return None
        if time_ns > received + self.max_future_ns:
            dead.add(where, "future_timestamp", "timestamp is in the future", text)
            return None
        quality = item.get("quality", Quality.GOOD)
        tags = item.get("tags") or {}
        if quality not in _QUALITIES or not isinstance(tags, dict):
            dead.add(where, "wrong_type", "'quality' must be good/uncertain/bad and 'tags' an object", text)
            return None
        unit = item.get("unit") or ""
        reading = Reading(device, metric, time_ns, number, quality, str(unit), self.name,
                          {str(k): str(v) for k, v in tags.items()})
        problem = self.screen.problem(reading)  # the same edge check as every source's, with this item's place
        if problem is not None:
            dead.add(where, "invalid_reading", problem, text)
            return None
        return reading

    def _time(self, raw: Any, received: int) -> int | str:
        """Return ns, or a reason string when the timestamp is unusable."""
        if raw is None:
            return received
        try:
            if isinstance(raw, str):
                t = iso_to_ns(raw)
            elif isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
                t = number_to_ns(raw, _UNIT_NS[self.timestamp_unit if self.timestamp_unit != "iso" else "ms"])
            else:
                return f"'ts' must be a number of {self.timestamp_unit} or an ISO 8601 string, got {raw!r}"
        except (ValueError, OverflowError) as exc:
            return str(exc)
        return t if t >= MIN_TIME_NS else f"timestamp {raw!r} is before 2000 (wrong unit?)"

    def _report(self, dead: DeadLetters) -> list[dict[str, Any]]:
        for d in dead.recent:
            self.dead.add(d.where, d.kind, d.reason, d.preview)
        return [{"where": d.where, "kind": d.kind, "reason": d.reason} for d in dead.recent]


class _IngestHandler(LimitedBodyHandler):
    """Common checks, before the body is read: the token, then the size."""

    def initialize(self, source: HttpSource) -> None:
        self.source = source

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies, no XSRF."""

    def body_limit(self) -> int:
        return self.source.max_body_bytes

    def authorize(self) -> bool:
        if not self.source.enabled:
            self.refuse(404, {"error": "HTTP ingestion is disabled (no token configured)"})
            return False
        if not self.source.authorized(self.request.headers.get("Authorization")):
            self.set_header("WWW-Authenticate", 'Bearer realm="vigie"')
            self.refuse(401, {"error": "missing or wrong bearer token"})
            return False
        return True

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc))

    async def _durable_result(self, accepted: int, errors: list[dict[str, Any]]) -> None:
        """Answer once the accepted readings are durable (read the ticket before any await)."""
        if accepted and not await self.source.durable(self.source.ticket()):
            self._answer(503, {"error": "readings accepted but not yet stored or spooled; send them again",
                               "accepted": accepted})
            return
        self._result(accepted, errors)

    def _result(self, accepted: int, errors: list[dict[str, Any]]) -> None:
        if errors:
            doc: dict[str, Any] = {"error": f"{len(errors)} item(s) refused, {accepted} reading(s) kept: "
                                            f"{errors[0].get('reason', '')}"[:500],
                                   "accepted": accepted, "rejected": len(errors), "errors": errors[:MAX_ITEM_ERRORS]}
            if len(errors) > MAX_ITEM_ERRORS:
                doc["errors_shown"] = MAX_ITEM_ERRORS
            self._answer(400, doc)
        else:
            self._answer(200, {"accepted": accepted, "rejected": 0})


READING_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["device", "metric", "value"],
    "properties": {"device": {"type": "string"}, "metric": {"type": "string"},
                   "value": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
                   "ts": {"oneOf": [{"type": "number"}, {"type": "string"}],
                          "description": "epoch in http.timestamp_unit, or ISO 8601 (default: arrival)"},
                   "unit": {"type": "string"}, "quality": {"type": "string", "enum": ["good", "uncertain", "bad"]},
                   "tags": {"type": "object", "additionalProperties": {"type": "string"}}}}
"""What one JSON reading may hold: the decoder's rules (app/ingest/decoders.py) in the OpenAPI document."""


class ReadingsHandler(_IngestHandler):
    """``POST /api/v1/readings``: JSON readings."""

    actions: ClassVar[dict[str, str]] = {"POST": "ingest"}
    api: ClassVar[dict[str, Op]] = {"POST": Op(
        "Send readings as JSON (an array, or one object); good ones are kept even when others are refused (400 "
        "lists each); the answer comes once they are durable", also=(503,),
        body={"oneOf": [{"type": "array", "items": READING_SCHEMA}, READING_SCHEMA]})}

    async def post(self) -> None:
        await self._durable_result(*self.source.ingest_json(self.body))


class LineQuery(Spec):
    """Line protocol's time unit."""

    precision = param.Selector(default="ns", objects=list(_UNIT_NS))


class LineProtocolHandler(_IngestHandler):
    """``POST /api/v1/write``: line protocol."""

    actions: ClassVar[dict[str, str]] = {"POST": "ingest"}
    api: ClassVar[dict[str, Op]] = {"POST": Op(
        "Send readings as InfluxDB line protocol (the device from the device or host tag, the metric "
        "{measurement}.{field} by default: http.line_protocol)", query=LineQuery,
        body={"type": "string"}, body_type="text/plain", also=(503,))}

    async def post(self) -> None:
        precision = self.get_query_argument("precision", "ns")
        if precision not in _UNIT_NS:
            self._answer(400, {"error": f"precision must be one of {', '.join(_UNIT_NS)}"})
            return
        await self._durable_result(*self.source.ingest_lines(self.body, precision))


_INFLUX_PRECISION = {"n": "ns", "ns": "ns", "u": "us", "us": "us", "µ": "us", "ms": "ms", "s": "s", "m": "m",
                     "h": "h"}
"""InfluxDB's precision names (1.x: n, u, ms, s, m, h; 2.x: ns, us, ms, s) to the decoder's."""
_V2_CODES = {400: "invalid", 401: "unauthorized", 404: "not found", 413: "request too large", 503: "unavailable"}


class InfluxV1Query(Spec):
    """InfluxDB 1.x ``/write`` query: the database (required, as InfluxDB asks), precision, credentials."""

    db = param.String(default=None, allow_None=True, doc="Database (required; not part of a series name).")
    rp = param.String(default=None, allow_None=True, doc="Retention policy (ignored).")
    precision = param.Selector(default="ns", objects=["n", "ns", "u", "us", "ms", "s", "m", "h"])
    u = param.String(default=None, allow_None=True, doc="User name (ignored: the password is the token).")
    p = param.String(default=None, allow_None=True, doc="The ingest token, as InfluxDB's password.")
    required = ("db",)


class InfluxV2Query(Spec):
    """InfluxDB 2.x ``/api/v2/write`` query: org, bucket (required, as InfluxDB asks), precision."""

    org = param.String(default=None, allow_None=True, doc="Organisation (not part of a series name).")
    orgID = param.String(default=None, allow_None=True, doc="Organisation id (ignored).")
    bucket = param.String(default=None, allow_None=True, doc="Bucket (required; not part of a series name).")
    precision = param.Selector(default="ns", objects=["ns", "us", "ms", "s"])
    required = ("bucket",)


class _InfluxWriteHandler(_IngestHandler):
    """InfluxDB's write API: the same source, token rules and answers after durability, InfluxDB's replies."""

    version: ClassVar[int] = 1
    target: ClassVar[str] = "db"

    def _error(self, status: int, message: str) -> dict[str, Any]:
        if self.version == 1:
            return {"error": message}
        return {"code": _V2_CODES.get(status, "internal error"), "message": message, "error": message}

    def refuse(self, status: int, doc: dict[str, Any]) -> None:
        super().refuse(status, self._error(status, str(doc.get("error", ""))))

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        if status >= 400:
            doc = {**doc, **self._error(status, str(doc.get("error", "")))}
            self.set_header("X-Influxdb-Error", str(doc.get("error", ""))[:200].encode("ascii", "replace").decode())
        super()._answer(status, doc)

    def offered_token(self) -> str | None:
        """Return the token the client offers: ``Token``/``Bearer`` header, basic auth's or ``p``'s password."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer"):
            return value.strip()
        if self.version == 1:
            if scheme.lower() == "basic":
                try:
                    return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
                except (binascii.Error, UnicodeDecodeError):
                    return None
            return self.get_query_argument("p", None)
        return None

    def authorize(self) -> bool:
        if not self.source.enabled:
            self.refuse(404, {"error": "HTTP ingestion is disabled (no token configured)"})
            return False
        offered = self.offered_token()
        if not offered or not self.source.token_ok(offered):
            self.refuse(401, {"error": "authorization failed" if self.version == 1 else "unauthorized access"})
            return False
        return True

    def _body(self) -> bytes | None:
        """Return the body, gunzipped (and bounded) when it says it is gzip; answer and return None when not."""
        body = self.body
        encoding = self.request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            self._answer(400, {"error": f"Content-Encoding {encoding!r} is not supported (gzip or identity)"})
            return None
        limit = self.source.max_body_bytes
        parts: list[bytes] = []
        size = 0
        rest = body
        while True:  # a gzip stream may hold several members, one after the other (RFC 1952): all count
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = inflater.decompress(rest, limit + 1 - size)
            except zlib.error as exc:
                self._answer(400, {"error": f"the body is not gzip: {exc}"})
                return None
            size += len(out)
            if size > limit or inflater.unconsumed_tail:
                self._answer(413, {"error": f"gzip body over the limit of {limit} bytes once inflated"})
                return None
            if not inflater.eof:
                self._answer(400, {"error": "the gzip body is cut short"})
                return None
            parts.append(out)
            rest = inflater.unused_data
            if not rest.strip(b"\0"):  # what follows the last member may be zero padding
                return b"".join(parts)

    async def post(self) -> None:
        target = self.get_query_argument(self.target, None)
        if not target:
            self._answer(400, {"error": "database is required" if self.version == 1 else "bucket is required"})
            return
        raw = self.get_query_argument("precision", "ns")
        precision = _INFLUX_PRECISION.get(raw)
        if precision is None or (self.version == 2 and raw not in ("ns", "us", "ms", "s")):
            self._answer(400, {"error": f"invalid precision {raw!r}"})
            return
        body = self._body()
        if body is None:
            return
        path = self.request.path
        accepted, errors = self.source.ingest_lines(body, precision, where=f"http {path}")
        if accepted and not await self.source.durable(self.source.ticket()):
            self._answer(503, {"error": f"{accepted} point(s) accepted but not yet stored or spooled; send them again"})
            return
        if errors:
            first = errors[0]
            self._answer(400, {"error": f"partial write: {first['where']}: {first['reason']}"[:500]
                                        + f" ({len(errors)} refused, {accepted} kept)",
                               "accepted": accepted, "rejected": len(errors), "errors": errors[:MAX_ITEM_ERRORS]})
            return
        self.set_status(204)
        self.finish()


class InfluxV1WriteHandler(_InfluxWriteHandler):
    """``POST /write``: InfluxDB 1.x's write API (``?db=&precision=``, ``u``/``p`` or basic auth, gzip)."""

    version = 1
    target = "db"
    actions: ClassVar[dict[str, str]] = {"POST": "ingest"}
    api: ClassVar[dict[str, Op]] = {"POST": Op(
        "InfluxDB 1.x write API: line protocol as in /api/v1/write, the token as Authorization Token/Bearer, basic "
        "auth's password or p; Content-Encoding gzip; 204 when every point is kept", query=InfluxV1Query,
        body={"type": "string"}, body_type="text/plain", ok=204, also=(503,))}


class InfluxV2WriteHandler(_InfluxWriteHandler):
    """``POST /api/v2/write``: InfluxDB 2.x's write API (``?org=&bucket=&precision=``, ``Authorization: Token``)."""

    version = 2
    target = "bucket"
    actions: ClassVar[dict[str, str]] = {"POST": "ingest"}
    api: ClassVar[dict[str, Op]] = {"POST": Op(
        "InfluxDB 2.x write API: line protocol as in /api/v1/write, the token as Authorization Token; "
        "Content-Encoding gzip; 204 when every point is kept", query=InfluxV2Query,
        body={"type": "string"}, body_type="text/plain", ok=204, also=(503,))}


class CameraUploadHandler(_IngestHandler):
    """``POST /api/v1/cameras/<camera>``: a JPEG or PNG image, kept with its arrival time."""

    def initialize(self, source: HttpSource, cameras: Any = None) -> None:  # type: ignore[override]
        super().initialize(source)
        self.cameras = cameras

    def body_limit(self) -> int:
        return self.source.max_image_bytes

    async def post(self, camera: str) -> None:
        if self.cameras is None:
            self._answer(404, {"error": "no camera store configured"})
            return
        try:
            check_camera(camera)
        except ValueError as exc:
            self._answer(400, {"error": short(exc)})
            return
        body = self.body
        received = now_ns()
        try:
            self.cameras.put(camera, received, body, self.request.headers.get("Content-Type"))
        except ValueError as exc:
            self.source.dead.add(f"http camera {camera}", "not_an_image", str(exc), body[:64])
            self._answer(400, {"error": short(exc)})
            return
        self.source.publish([Reading(camera, "image_bytes", received, float(len(body)),
                                     Quality.GOOD, "B", self.source.name, {})])
        if not await self.source.durable(self.source.ticket()):
            self._answer(503, {"error": "image kept, its reading not yet stored or spooled; send it again"})
            return
        self._answer(200, {"camera": camera, "time_ns": received, "bytes": len(body)})
