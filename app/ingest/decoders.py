"""Payload decoders: bytes from a topic (or an HTTP body) to readings.

A decoder never raises on bad input: each payload, item, line or field that
cannot be used goes to the source's dead letters with its reason, and every
good reading around it is kept. A message that yields nothing at all is a
dead letter too (``no_readings``), and two values of one payload that would
land on the same series at the same instant from different origins are
both refused (``series_collision``): no value is lost without a trace.
Decoders are registered by a short name (``json``, ``number``,
``line_protocol``) used in the config.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from app.ingest.deadletters import DeadLetters
from app.ingest.lineprotocol import Line, LineError, parse_line
from app.model import Quality, Reading, datetime_to_ns

MIN_TIME_NS = 946_684_800 * 10**9  # 2000-01-01: older means a wrong unit or clock
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
PRECISION_NS = {**_UNIT_NS, "m": 60 * 10**9, "h": 3600 * 10**9}
"""Line protocol's timestamp units (InfluxDB 1.x also takes minutes and hours)."""


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
    notes: list[str] | None = None  # when a list: what was ignored on purpose, for ``vigie decode``


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

    def check_time(self, time_ns: int, ctx: Context, dead: DeadLetters, payload: str,
                   where: str | None = None) -> bool:
        """Reject timestamps in the future or before 2000 (a wrong unit, usually)."""
        if time_ns > ctx.received_ns + self.max_future_ns:
            ahead = (time_ns - ctx.received_ns) / 1e9
            dead.add(where or ctx.where, "future_timestamp", f"timestamp {ahead:.0f} s in the future", payload)
            return False
        if time_ns < MIN_TIME_NS:
            dead.add(where or ctx.where, "bad_timestamp", f"timestamp {time_ns} ns is before 2000 (wrong unit?)",
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


class Claims:
    """The readings one payload produced, held until the payload is done to find series collisions.

    Two readings of one payload for the same series at the same instant that come from different
    origins (two measurements, two tag sets, two fields) would overwrite one another in the store:
    none is kept, each is a ``series_collision`` dead letter naming the others. An origin is any
    value compared with ``==`` (the readings of one line share one object, so the common case costs
    an identity test) and named by ``describe`` only when there is a collision to report.
    """

    __slots__ = ("describe", "items")

    def __init__(self, describe: Callable[[Any], str] = str) -> None:
        self.items: list[tuple[Reading, Any, str, str]] = []
        self.describe = describe

    def add(self, reading: Reading, origin: Any, where: str, raw: str) -> None:
        self.items.append((reading, origin, where, raw))

    def flush(self, out: list[Reading], dead: DeadLetters, hint: str = "") -> None:
        items, self.items = self.items, []
        if len(items) == 1:
            out.append(items[0][0])
            return
        first: dict[tuple[str, str, int], Any] = {}
        collided: set[tuple[str, str, int]] = set()
        for r, origin, _where, _raw in items:
            key = (r.device, r.metric, r.time_ns)
            seen = first.setdefault(key, origin)
            if seen is not origin and seen != origin:
                collided.add(key)
        if not collided:
            out.extend(item[0] for item in items)
            return
        origins: dict[tuple[str, str, int], list[str]] = {}
        for r, origin, _where, _raw in items:
            key = (r.device, r.metric, r.time_ns)
            if key in collided:
                names = origins.setdefault(key, [])
                name = self.describe(origin)
                if name not in names:
                    names.append(name)
        for r, origin, where, raw in items:
            key = (r.device, r.metric, r.time_ns)
            if key not in collided:
                out.append(r)
                continue
            name = self.describe(origin)
            others = sorted(n for n in origins[key] if n != name)
            dead.add(where, "series_collision",
                     f"{name} writes series {r.device}/{r.metric}, which {' and '.join(others)} also "
                     f"write{'s' if len(others) == 1 else ''} at the same instant: none is kept{hint}", raw)


_MISSING = object()


def lookup(item: Any, path: str) -> Any:
    """Return ``item[path]``, following dots into nested objects (``meta.time``); ``_MISSING`` when absent.

    A key that itself holds a dot (``{"a.b": 1}``) is found first, as it is written.
    """
    if not isinstance(item, dict):
        return _MISSING
    if path in item:
        return item[path]
    node: Any = item
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_lookup = lookup  # the former private name


def quality_of(raw: Any) -> str | None:
    """Return a payload's quality as good / uncertain / bad, or None when it says nothing usable.

    Strings ``good`` / ``uncertain`` / ``bad`` (any case); ``true`` / ``false`` as good / bad; an
    integer as an OPC-UA status code (its two top bits: 0 good, 1 uncertain, 2 or 3 bad). Any other
    string is uncertain.
    """
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, int):
        return (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)[(raw >> 30) & 3] if raw >= 0 else None
    if isinstance(raw, str):
        q = raw.strip().lower()
        return q if q in (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD) else Quality.UNCERTAIN
    return None


@dataclass(frozen=True, slots=True)
class Entries:
    """Name/value array mode: which key of each entry holds what (dotted paths allowed)."""

    name: str = "name"
    value: str = "value"
    quality: str | None = None
    timestamp: str | None = None
    unit: str | None = None
    error: str | None = None


def _describe(raw: Any) -> str:
    text = json.dumps(raw, default=str) if not isinstance(raw, str) else repr(raw)
    return f"{type(raw).__name__} {text[:40]}"


class JsonDecoder(Decoder):
    """JSON objects (or arrays of them) whose numeric fields, or name/value entries, are metrics.

    Every option naming a payload key takes a dotted path (``meta.time``). The values are the
    message's own keys, or those of the object at ``values``; with ``entries`` they are an array of
    ``{name, value, quality?, ts?}`` entries (the message itself, or the array at ``values``).
    """

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
        values: str | None = None,
        entries: Entries | None = None,
        tags_field: str | None = None,
        tag_keys: tuple[str, ...] | list[str] = (),
        tag_fields: Mapping[str, str] | None = None,
        unit_field: str | None = None,
        errors_field: str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if timestamp_unit not in (*_UNIT_NS, "iso"):
            raise ValueError(f"timestamp_unit must be one of s, ms, us, ns, iso, not {timestamp_unit!r}")
        if other_fields not in ("keep", "drop"):
            raise ValueError(f"other_fields must be 'keep' or 'drop', not {other_fields!r}")
        if bool(tags_field) != bool(tag_keys):
            raise ValueError("tags_field and tag_keys go together: the object, and the keys taken from it")
        self.timestamp_field = timestamp_field
        self.timestamp_unit = timestamp_unit
        self.fields = dict(fields or {})
        self.keep_others = other_fields == "keep"
        self.device_field = device_field
        self.quality_field = quality_field
        self.values = values
        self.entries = entries
        self.tags_field = tags_field
        self.tag_keys = tuple(tag_keys)
        self.tag_fields = dict(tag_fields or {})
        self.unit_field = unit_field
        self.errors_field = errors_field
        # Keys of the message that say something about the values, not values themselves.
        self._skip = {k.split(".")[0] for k in (timestamp_field, device_field, quality_field, tags_field, unit_field,
                                                errors_field, *self.tag_fields.values()) if k}
        self._field_heads = {k.split(".")[0] for k in self.fields if "." in k}  # env of a mapped env.temp

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            dead.add(ctx.where, "invalid_json", str(exc), text)
            return
        if self.entries is not None and self.values is None:
            items = [doc]  # the message is the array of entries itself (LoRaWAN, Node-RED)
        else:
            items = doc if isinstance(doc, list) else [doc]
        claims = Claims(_field_origin)
        try:
            for n, item in enumerate(items):
                where = ctx.where if len(items) == 1 else f"{ctx.where} item {n}"
                if not isinstance(item, dict) and not (self.entries is not None and self.values is None):
                    dead.add(where, "wrong_type", f"expected a JSON object, got {type(item).__name__}", text)
                    continue
                before, rejected = len(claims.items), dead.total
                self._decode_item(item, ctx, where, claims, dead, text)
                if len(claims.items) == before and dead.total == rejected:
                    dead.add(where, "no_readings", "nothing numeric in the message: no reading, nothing refused",
                             text)
        finally:
            claims.flush(out, dead)

    def _parse_time(self, raw: Any, what: str, ctx: Context, where: str, dead: DeadLetters, text: str) -> int | None:
        try:
            if self.timestamp_unit == "iso":
                if not isinstance(raw, str):
                    raise ValueError(f"{what}: expected an ISO 8601 string, got {raw!r}")
                time_ns = iso_to_ns(raw)
            else:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    raise ValueError(f"{what}: expected a number of {self.timestamp_unit}, got {raw!r}")
                time_ns = number_to_ns(raw, _UNIT_NS[self.timestamp_unit])
        except (ValueError, OverflowError) as exc:
            dead.add(where, "bad_timestamp", str(exc), text)
            return None
        return time_ns if self.check_time(time_ns, ctx, dead, text, where) else None

    def _decode_item(self, item: Any, ctx: Context, where: str, claims: Claims, dead: DeadLetters,
                     text: str) -> None:
        entry_times = self.entries is not None and self.entries.timestamp is not None
        time_ns: int | None = ctx.received_ns
        if self.timestamp_field:
            raw = lookup(item, self.timestamp_field)
            if raw is _MISSING or raw is None:
                if not entry_times:
                    dead.add(where, "missing_timestamp", f"no {self.timestamp_field!r} field", text)
                    return
                time_ns = None  # each entry must then carry its own
            else:
                time_ns = self._parse_time(raw, f"{self.timestamp_field!r}", ctx, where, dead, text)
                if time_ns is None:
                    return
        device = ctx.device
        if self.device_field:
            raw = lookup(item, self.device_field)
            if isinstance(raw, str | int) and not isinstance(raw, bool) and raw != "":
                device = str(raw)
        if not device:
            dead.add(where, "no_device", "neither the topic nor the payload names a device"
                     + (f" (no {self.device_field!r})" if self.device_field else ""), text)
            return
        tags = dict(ctx.tags)
        if self.tags_field:
            obj = lookup(item, self.tags_field)
            if isinstance(obj, dict):
                tags.update({k: _tag_text(obj[k]) for k in self.tag_keys if k in obj and obj[k] is not None})
        for tag, path in self.tag_fields.items():
            raw = lookup(item, path)
            if raw is not _MISSING and raw is not None:
                tags[tag] = _tag_text(raw)
        quality = Quality.GOOD
        if self.quality_field:
            quality = quality_of(lookup(item, self.quality_field)) or Quality.GOOD
        unit = ""
        if self.unit_field:
            raw = lookup(item, self.unit_field)
            unit = raw if isinstance(raw, str) else ""
        base = _Base(device, time_ns, quality, unit, tags)
        container = item if self.values is None else lookup(item, self.values)
        if container is _MISSING:
            dead.add(where, "missing_values", f"no {self.values!r} in the message", text)
            return
        if self.entries is not None:
            if not isinstance(container, list):
                dead.add(where, "wrong_type", f"expected an array of entries{self._at()}, got "
                         f"{type(container).__name__}", text)
                return
            for i, entry in enumerate(container):
                self._entry(i, entry, base, ctx, where, claims, dead, text)
        else:
            if not isinstance(container, dict):
                dead.add(where, "wrong_type", f"expected an object of values{self._at()}, got "
                         f"{type(container).__name__}", text)
                return
            self._object(container, base, ctx, where, claims, dead, text)
        if self.errors_field:
            errors = lookup(item, self.errors_field)
            if isinstance(errors, dict):
                for key, code in errors.items():
                    if self.fields.get(key, _MISSING) is None:
                        continue
                    dead.add(where, "device_error", f"field {key!r}: the gateway reports error {_describe(code)}",
                             text)

    def _at(self) -> str:
        return f" at {self.values!r}" if self.values else ""

    def _object(self, container: dict, base: _Base, ctx: Context, where: str, claims: Claims, dead: DeadLetters,
                text: str) -> None:
        root = self.values is None
        for key, fmap in self.fields.items():
            if fmap is None:
                continue
            raw = lookup(container, key)
            if raw is _MISSING:
                continue
            self._emit(key, raw, fmap, base, base.time_ns, base.quality, "", ctx, where, claims, dead, text)
        if not self.keep_others:
            return
        for key, raw in container.items():
            if key in self.fields or key in self._field_heads or (root and key in self._skip):
                continue  # a mapped dotted field's parent (env of env.temp) is not a value of its own
            if isinstance(raw, int | float):
                self._emit(key, raw, None, base, base.time_ns, base.quality, "", ctx, where, claims, dead, text)
            elif not root:  # everything in a values object is meant to be a value
                dead.add(where, "wrong_type", f"field {key!r} is {_describe(raw)}, not a number", text)
            elif ctx.notes is not None:
                ctx.notes.append(f"{where}: field {key!r} ({type(raw).__name__}) is not a value: ignored")

    def _entry(self, i: int, entry: Any, base: _Base, ctx: Context, where: str, claims: Claims,
               dead: DeadLetters, text: str) -> None:
        spec = self.entries
        assert spec is not None
        if not isinstance(entry, dict):
            dead.add(where, "wrong_type", f"entry {i} is {_describe(entry)}, not an object", text)
            return
        name = lookup(entry, spec.name)
        if not isinstance(name, str | int) or isinstance(name, bool) or name == "":
            dead.add(where, "no_name", f"entry {i} has no {spec.name!r} (the value's name)", text)
            return
        name = str(name)
        fmap = self.fields.get(name, _MISSING)
        if fmap is None or (fmap is _MISSING and not self.keep_others):
            if ctx.notes is not None:
                ctx.notes.append(f"{where}: entry {name!r} dropped by the config")
            return
        raw = lookup(entry, spec.value)
        if raw is _MISSING or raw is None:
            error = lookup(entry, spec.error) if spec.error else _MISSING
            if error is not _MISSING and error is not None:
                dead.add(where, "device_error", f"field {name!r}: the gateway reports error {_describe(error)}",
                         text)
            else:
                dead.add(where, "missing_value", f"field {name!r}: entry {i} has no {spec.value!r}", text)
            return
        time_ns = base.time_ns
        if spec.timestamp:
            raw_time = lookup(entry, spec.timestamp)
            if raw_time is not _MISSING and raw_time is not None:
                time_ns = self._parse_time(raw_time, f"field {name!r}: {spec.timestamp!r}", ctx, where, dead, text)
                if time_ns is None:
                    return
        if time_ns is None:
            dead.add(where, "missing_timestamp", f"field {name!r}: no {spec.timestamp!r} in the entry and no "
                     f"{self.timestamp_field!r} in the message", text)
            return
        quality = base.quality
        if spec.quality:
            quality = quality_of(lookup(entry, spec.quality)) or quality
        unit = ""
        if spec.unit:
            raw_unit = lookup(entry, spec.unit)
            unit = raw_unit if isinstance(raw_unit, str) else ""
        self._emit(name, raw, fmap if isinstance(fmap, FieldMap) else None, base, time_ns, quality, unit, ctx,
                   where, claims, dead, text)

    def _emit(self, key: str, raw: Any, fmap: FieldMap | None, base: _Base, time_ns: int, quality: str,
              unit: str, ctx: Context, where: str, claims: Claims, dead: DeadLetters, text: str) -> None:
        value = number_value(raw)
        if value is None:
            dead.add(where, "wrong_type", f"field {key!r} is {_describe(raw)}, not a number", text)
            return
        if not math.isfinite(value):
            dead.add(where, "not_finite", f"field {key!r} is {value}", text)
            return
        metric = (fmap.metric if fmap and fmap.metric else None) or key
        unit = (fmap.unit if fmap and fmap.unit else "") or unit or base.unit
        claims.add(Reading(base.device, metric, time_ns, value, quality, unit, ctx.source, base.tags),
                   key, where, text)


@dataclass(frozen=True, slots=True)
class _Base:
    """What a message says of all its values."""

    device: str
    time_ns: int | None
    quality: str
    unit: str
    tags: dict[str, str]


def _field_origin(key: Any) -> str:
    return f"field {key!r}"


def _line_origin(origin: Any) -> str:
    measurement, tags = origin
    return f"measurement {measurement!r}" + (
        f" tags {','.join(f'{k}={v}' for k, v in sorted(tags.items()))}" if tags else "")


def _tag_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw, default=str)


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


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class MetricTemplate:
    """How a line protocol field is named: ``{measurement}.{field}`` by default.

    ``{measurement}`` and ``{field}`` are the line's; any other ``{name}`` is the value of that
    tag. A tag the line does not carry is left out together with the text just before it
    (``{measurement}.{cpu}.{field}`` names ``mem used`` ``mem.used``), so one template serves every
    measurement a gateway sends.
    """

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal before, placeholder or None)

    @classmethod
    def parse(cls, text: str) -> MetricTemplate:
        """Parse a template; raise ValueError with the reason."""
        parts: list[tuple[str, str | None]] = []
        pos = 0
        names = []
        for m in _PLACEHOLDER.finditer(text):
            name = m.group(1)
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"metric template {text!r}: {{{name}}} is not a placeholder name")
            parts.append((text[pos:m.start()], name))
            names.append(name)
            pos = m.end()
        tail = text[pos:]
        if "{" in tail or "}" in tail or any("{" in lit or "}" in lit for lit, _ in parts):
            raise ValueError(f"metric template {text!r} has an unmatched brace")
        parts.append((tail, None))
        if "field" not in names:
            raise ValueError(f"metric template {text!r} has no {{field}}: every field of a line would be one series")
        if len(set(names)) != len(names):
            raise ValueError(f"metric template {text!r} names a placeholder twice")
        return cls(text, tuple(parts))

    @property
    def tags(self) -> list[str]:
        """Return the tag names the template uses."""
        return [n for _, n in self.parts if n and n not in ("measurement", "field")]

    @property
    def keeps_measurement(self) -> bool:
        """Return whether the measurement is part of every name."""
        return any(n == "measurement" for _, n in self.parts)

    def prefix(self, measurement: str, tags: Mapping[str, str]) -> tuple[str, str]:
        """Return the name's text before and after ``{field}`` for one line."""
        before: list[str] = []
        after: list[str] = []
        side = before
        for literal, name in self.parts:
            if name is None:
                side.append(literal)
            elif name == "field":
                side.append(literal)
                side = after
            elif name == "measurement":
                side.extend((literal, measurement))
            elif name in tags:
                side.extend((literal, tags[name]))
        return "".join(before), "".join(after)

    def pattern(self) -> list[tuple[str, ...]]:
        """Return the glob patterns (``*`` for a placeholder) the names can match, a missing tag left out or not."""
        variants: list[list[str]] = [[]]
        for literal, name in self.parts:
            if name is None:
                variants = [v + list(literal) for v in variants]
            elif name in ("field", "measurement"):
                variants = [[*v, *literal, "*"] for v in variants]
            else:
                variants = [w for v in variants for w in ([*v, *literal, "*"], v)]
        return [tuple(v) for v in variants]


DEFAULT_METRIC_TEMPLATE = "{measurement}.{field}"


class LineProtocolDecoder(Decoder):
    """InfluxDB line protocol: each numeric field of each line is a metric named by ``metric_template``.

    The device is the topic's ``{device}``, else the first of ``device_tags`` the line carries; the
    other tags become the reading's tags (the measurement too, as ``measurement_tag`` when set).
    String fields are annotations, not values; a line with no numeric field is a ``no_readings``
    dead letter. Two lines of one payload mapping different measurements or tag sets onto one
    series at one instant are both ``series_collision`` dead letters.
    """

    decoder_type = "line_protocol"

    def __init__(
        self,
        *,
        precision: str = "ns",
        device_tags: tuple[str, ...] | list[str] = ("device", "host"),
        metric_template: str = DEFAULT_METRIC_TEMPLATE,
        measurement_tag: str | None = None,
        units: Mapping[str, str] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if precision not in PRECISION_NS:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_NS)}, not {precision!r}")
        self.scale = PRECISION_NS[precision]
        self.device_tags = tuple(device_tags)
        self.template = MetricTemplate.parse(metric_template)
        self.measurement_tag = measurement_tag
        self.units = dict(units or {})
        self._by_measurement: dict[str, tuple[str, str]] | None = None if self.template.tags else {}
        self._hint = (f" (metric_template {metric_template!r}: add the tag that tells them apart, "
                      + ("or {measurement}" if not self.template.keeps_measurement else "e.g. {measurement}.{cpu}."
                         "{field}") + ")")

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        claims = Claims(_line_origin)
        try:
            for n, raw_line in enumerate(text.splitlines(), 1):
                if not raw_line.strip() or raw_line.lstrip().startswith("#"):
                    continue
                where = f"{ctx.where} line {n}"
                try:
                    line = parse_line(raw_line)
                except LineError as exc:
                    dead.add(where, "bad_line", str(exc), raw_line)
                    continue
                self._emit(line, ctx, where, claims, dead, raw_line)
        finally:
            claims.flush(out, dead, self._hint)

    def _emit(self, line: Line, ctx: Context, where: str, claims: Claims, dead: DeadLetters, raw: str) -> None:
        time_ns = ctx.received_ns if line.timestamp is None else line.timestamp * self.scale
        if not self.check_time(time_ns, ctx, dead, raw, where):
            return
        tags = dict(ctx.tags)
        device = ctx.device
        for k, v in line.tags.items():
            if k not in self.device_tags:
                tags[k] = v
        if device is None:
            for k in self.device_tags:  # the first listed wins, whatever the line's order
                if k in line.tags:
                    device = line.tags[k]
                    break
        if not device:
            dead.add(where, "no_device", f"no device tag ({', '.join(self.device_tags)}) and none in the topic",
                     raw)
            return
        if self.measurement_tag:
            tags[self.measurement_tag] = line.measurement
        if self._by_measurement is not None:  # the name depends on the measurement alone: computed once for each
            names = self._by_measurement.get(line.measurement)
            if names is None:
                if len(self._by_measurement) > 10_000:
                    self._by_measurement.clear()
                names = self._by_measurement[line.measurement] = self.template.prefix(line.measurement, {})
            before, after = names
        else:
            before, after = self.template.prefix(line.measurement, line.tags)
        origin = (line.measurement, line.tags)  # compared (dicts: in any order) only when a series meets another
        numeric = False
        for key, raw_value in line.fields.items():
            if isinstance(raw_value, str):
                if ctx.notes is not None:
                    ctx.notes.append(f"{where}: string field {key!r} is an annotation, not a value: ignored")
                continue
            numeric = True
            value = float(raw_value)
            if not math.isfinite(value):
                dead.add(where, "not_finite", f"field {key!r} is {value}", raw)
                continue
            metric = before + key + after
            claims.add(Reading(device, metric, time_ns, value, Quality.GOOD, self.units.get(metric, ""), ctx.source,
                               tags), origin, where, raw)
        if not numeric:
            dead.add(where, "no_readings", f"measurement {line.measurement!r} has only string fields: nothing numeric",
                     raw)
