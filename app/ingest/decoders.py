"""Payload decoders: bytes from a topic (or an HTTP body) to readings.

A decoder never raises on bad input: each payload, item, line or field that
cannot be used goes to the source's dead letters with its reason, and every
good reading around it is kept. Decoders are registered by a short name
(``json``, ``number``, ``line_protocol``) used in the config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from app.ingest.deadletters import DeadLetters
from app.ingest.lineprotocol import LineError, parse_line
from app.model import Quality, Reading, datetime_to_ns

MIN_TIME_NS = 946_684_800 * 10**9  # 2000-01-01: older means a wrong unit or clock
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def number_to_ns(raw: int | float, scale: int) -> int:
    """Return a timestamp given in some unit (``scale`` ns each) in ns.

    A float is rounded to the microsecond (the resolution of ISO times and
    OPC-UA): 1795600800.001 s times 1e9 in binary floating point is
    ...000999936 ns, which reads as .000 once cut to milliseconds; rounded to
    the µs it is the ...001000000 the sender wrote.
    """
    if isinstance(raw, int):
        return raw * scale
    return round(raw * (scale // 1000)) * 1000 if scale >= 1000 else round(raw * scale)


def iso_to_ns(text: str) -> int:
    """Return an ISO 8601 time with a zone in ns, exactly (raise ValueError without a zone)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"ISO timestamp {text!r} has no time zone")
    return datetime_to_ns(dt)


@dataclass(slots=True)
class Context:
    """Where a payload came from and what its topic already says."""

    source: str
    where: str
    received_ns: int
    device: str | None = None
    metric: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FieldMap:
    """How one payload field becomes a metric."""

    metric: str | None = None
    unit: str = ""


class Decoder:
    """Base class: checks common to every payload, then ``decode_text``."""

    decoder_type: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Decoder]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.decoder_type:
            Decoder._registry[cls.decoder_type] = cls

    @classmethod
    def types(cls) -> list[str]:
        """Return the registered decoder names."""
        return sorted(cls._registry)

    @classmethod
    def create(cls, decoder_type: str, **options: Any) -> Decoder:
        """Create the decoder registered as ``decoder_type``."""
        return cls._registry[decoder_type](**options)

    def __init__(self, *, max_bytes: int = 65536, max_future_s: float = 300.0) -> None:
        self.max_bytes = max_bytes
        self.max_future_ns = int(max_future_s * 1e9)

    def decode(self, payload: bytes, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        """Append the readings of ``payload`` to ``out``; dead-letter the rest."""
        if len(payload) > self.max_bytes:
            dead.add(ctx.where, "oversized", f"{len(payload)} bytes > limit {self.max_bytes}", payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            dead.add(ctx.where, "not_utf8", f"not UTF-8 at byte {exc.start}", payload)
            return
        try:
            self.decode_text(text, ctx, out, dead)
        except Exception as exc:  # a decoder bug must not stop ingest either
            dead.add(ctx.where, "decoder_error", f"{type(exc).__name__}: {exc}", payload)

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        """Decode a UTF-8 payload."""
        raise NotImplementedError

    def check_time(self, time_ns: int, ctx: Context, dead: DeadLetters, payload: str) -> bool:
        """Reject timestamps in the future or before 2000 (a wrong unit, usually)."""
        if time_ns > ctx.received_ns + self.max_future_ns:
            ahead = (time_ns - ctx.received_ns) / 1e9
            dead.add(ctx.where, "future_timestamp", f"timestamp {ahead:.0f} s in the future", payload)
            return False
        if time_ns < MIN_TIME_NS:
            dead.add(ctx.where, "bad_timestamp", f"timestamp {time_ns} ns is before 2000 (wrong unit?)",
                     payload)
            return False
        return True


def number_value(value: Any) -> float | None:
    """Return ``value`` as a float when it is a number or a bool, else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double: refused as not finite, this field only
            return math.inf
    return None


class JsonDecoder(Decoder):
    """JSON objects (or arrays of them) whose numeric fields are metrics."""

    decoder_type = "json"

    def __init__(
        self,
        *,
        timestamp_field: str | None = "ts",
        timestamp_unit: str = "ms",
        fields: Mapping[str, FieldMap | None] | None = None,
        other_fields: str = "keep",
        device_field: str | None = None,
        quality_field: str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if timestamp_unit not in (*_UNIT_NS, "iso"):
            raise ValueError(f"timestamp_unit must be one of s, ms, us, ns, iso, not {timestamp_unit!r}")
        if other_fields not in ("keep", "drop"):
            raise ValueError(f"other_fields must be 'keep' or 'drop', not {other_fields!r}")
        self.timestamp_field = timestamp_field
        self.timestamp_unit = timestamp_unit
        self.fields = dict(fields or {})
        self.keep_others = other_fields == "keep"
        self.device_field = device_field
        self.quality_field = quality_field
        self._skip = {k for k in (timestamp_field, device_field, quality_field) if k}

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            dead.add(ctx.where, "invalid_json", str(exc), text)
            return
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                dead.add(ctx.where, "wrong_type", f"expected a JSON object, got {type(item).__name__}", text)
                continue
            self._decode_item(item, ctx, out, dead, text)

    def _time(self, item: dict, ctx: Context, dead: DeadLetters, text: str) -> int | None:
        if not self.timestamp_field:
            return ctx.received_ns
        raw = item.get(self.timestamp_field)
        if raw is None:
            dead.add(ctx.where, "missing_timestamp", f"no {self.timestamp_field!r} field", text)
            return None
        try:
            if self.timestamp_unit == "iso":
                if not isinstance(raw, str):
                    raise ValueError(f"expected an ISO 8601 string, got {raw!r}")
                time_ns = iso_to_ns(raw)
            else:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    raise ValueError(f"expected a number of {self.timestamp_unit}, got {raw!r}")
                time_ns = number_to_ns(raw, _UNIT_NS[self.timestamp_unit])
        except (ValueError, OverflowError) as exc:
            dead.add(ctx.where, "bad_timestamp", str(exc), text)
            return None
        return time_ns if self.check_time(time_ns, ctx, dead, text) else None

    def _decode_item(self, item: dict, ctx: Context, out: list[Reading], dead: DeadLetters, text: str) -> None:
        time_ns = self._time(item, ctx, dead, text)
        if time_ns is None:
            return
        device = ctx.device
        if self.device_field:
            raw = item.get(self.device_field)
            device = str(raw) if isinstance(raw, str | int) and raw != "" else device
        if not device:
            dead.add(ctx.where, "no_device", "neither the topic nor the payload names a device", text)
            return
        quality = Quality.GOOD
        if self.quality_field and isinstance(item.get(self.quality_field), str):
            q = item[self.quality_field].lower()
            quality = q if q in (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD) else Quality.UNCERTAIN
        for key, fmap in self.fields.items():
            if fmap is None:
                continue
            raw = _lookup(item, key)
            if raw is _MISSING:
                continue
            self._emit(key, raw, fmap, device, time_ns, quality, ctx, out, dead, text)
        if self.keep_others:
            for key, raw in item.items():
                if key in self._skip or key in self.fields:
                    continue
                if isinstance(raw, int | float):  # strings and objects are not metrics
                    self._emit(key, raw, None, device, time_ns, quality, ctx, out, dead, text)

    def _emit(self, key: str, raw: Any, fmap: FieldMap | None, device: str, time_ns: int, quality: str,
              ctx: Context, out: list[Reading], dead: DeadLetters, text: str) -> None:
        value = number_value(raw)
        if value is None:
            dead.add(ctx.where, "wrong_type", f"field {key!r} is {type(raw).__name__}, not a number", text)
            return
        if not math.isfinite(value):
            dead.add(ctx.where, "not_finite", f"field {key!r} is {value}", text)
            return
        metric = (fmap.metric if fmap and fmap.metric else None) or key
        unit = fmap.unit if fmap else ""
        out.append(Reading(device, metric, time_ns, value, quality, unit, ctx.source, ctx.tags))


_MISSING = object()


def _lookup(item: dict, key: str) -> Any:
    """Return ``item[key]``, following dots into nested objects."""
    if key in item:
        return item[key]
    node: Any = item
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


class NumberDecoder(Decoder):
    """A plain number as the whole payload; the topic or the config names the metric."""

    decoder_type = "number"

    def __init__(self, *, metric: str | None = None, unit: str = "", **common: Any) -> None:
        super().__init__(**common)
        self.metric = metric
        self.unit = unit

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        metric = ctx.metric or self.metric
        if not ctx.device or not metric:
            dead.add(ctx.where, "no_series", "topic names no {device} and {metric} (and config none)", text)
            return
        try:
            value = float(text.strip())
        except ValueError:
            dead.add(ctx.where, "not_a_number", f"{text.strip()[:40]!r} is not a number", text)
            return
        if not math.isfinite(value):
            dead.add(ctx.where, "not_finite", f"value is {value}", text)
            return
        out.append(Reading(ctx.device, metric, ctx.received_ns, value, Quality.GOOD, self.unit, ctx.source,
                           ctx.tags))


class LineProtocolDecoder(Decoder):
    """InfluxDB line protocol: each numeric field of each line is a metric."""

    decoder_type = "line_protocol"

    def __init__(
        self,
        *,
        precision: str = "ns",
        device_tags: tuple[str, ...] | list[str] = ("device", "host"),
        metric_prefix: bool = False,
        units: Mapping[str, str] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if precision not in _UNIT_NS:
            raise ValueError(f"precision must be one of s, ms, us, ns, not {precision!r}")
        self.scale = _UNIT_NS[precision]
        self.device_tags = tuple(device_tags)
        self.metric_prefix = metric_prefix
        self.units = dict(units or {})

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        for n, raw_line in enumerate(text.splitlines(), 1):
            if not raw_line.strip() or raw_line.lstrip().startswith("#"):
                continue
            where = f"{ctx.where} line {n}"
            try:
                line = parse_line(raw_line)
            except LineError as exc:
                dead.add(where, "bad_line", str(exc), raw_line)
                continue
            self._emit(line, ctx, where, out, dead, raw_line)

    def _emit(self, line, ctx: Context, where: str, out: list[Reading], dead: DeadLetters, raw: str) -> None:
        time_ns = ctx.received_ns if line.timestamp is None else line.timestamp * self.scale
        if not self.check_time(time_ns, ctx, dead, raw):
            return
        tags = dict(ctx.tags)
        device = ctx.device
        for k, v in line.tags.items():
            if k in self.device_tags and device is None:
                device = v
            elif k not in self.device_tags:
                tags[k] = v
        if not device:
            dead.add(where, "no_device", f"no device tag ({', '.join(self.device_tags)}) and none in the topic",
                     raw)
            return
        for key, raw_value in line.fields.items():
            if isinstance(raw_value, str):
                continue  # string fields are annotations, not metrics
            value = float(raw_value)
            if not math.isfinite(value):
                dead.add(where, "not_finite", f"field {key!r} is {value}", raw)
                continue
            metric = f"{line.measurement}.{key}" if self.metric_prefix else key
            out.append(Reading(device, metric, time_ns, value, Quality.GOOD, self.units.get(metric, ""),
                               ctx.source, tags))
