"""InfluxDB line protocol, both ways: parse incoming lines, format outgoing points.

Parsing is shared by the MQTT decoder and the HTTP ``/write`` endpoint;
formatting by the InfluxDB store engine. The common case (no escapes, no
quoted strings) takes a fast path of plain ``str.split`` calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FieldValue = float | int | bool | str


class LineError(ValueError):
    """A line that is not valid line protocol; the message says why."""


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed line: measurement, tags, fields and an optional timestamp."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    timestamp: int | None


def _split(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split on ``sep`` outside backslash escapes (and double quotes)."""
    parts: list[str] = []
    start = 0
    i = 0
    in_quotes = False
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quotes and c == '"':
            in_quotes = not in_quotes
        elif c == sep and not in_quotes:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise LineError("unterminated string field")
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ' ,="\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _field_value(raw: str, key: str) -> FieldValue:
    if not raw:
        raise LineError(f"field {key!r} has no value")
    if raw[0] == '"':
        if len(raw) < 2 or raw[-1] != '"':
            raise LineError(f"field {key!r} has an unterminated string")
        return _unescape(raw[1:-1])
    last = raw[-1]
    if last in "iu":
        try:
            return int(raw[:-1])
        except ValueError:
            raise LineError(f"field {key!r}: {raw!r} is not an integer") from None
    low = raw.lower()
    if low in ("t", "true"):
        return True
    if low in ("f", "false"):
        return False
    try:
        value = float(raw)
    except ValueError:
        raise LineError(f"field {key!r}: {raw!r} is not a number") from None
    return value


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        kv = _split(item, "=", quotes=what == "field")
        if len(kv) != 2 or not kv[0]:
            raise LineError(f"{what} {item!r} is not key=value")
        out.append((kv[0], kv[1]))
    return out


def parse_line(line: str) -> Line:
    """Parse one line of line protocol; raise :class:`LineError` with the reason."""
    line = line.strip()
    if "\\" not in line and '"' not in line:
        sections = line.split(" ")
    else:
        sections = _split(line, " ", quotes=True)
    sections = [s for s in sections if s != ""]
    if len(sections) < 2:
        raise LineError("expected 'measurement[,tags] fields [timestamp]'")
    if len(sections) > 3:
        raise LineError("too many space-separated sections (unescaped space?)")
    head = _split(sections[0], ",")
    measurement = _unescape(head[0])
    if not measurement:
        raise LineError("empty measurement")
    tags = {_unescape(k): _unescape(v) for k, v in _pairs(head[1:], "tag")}
    fields = {
        _unescape(k): _field_value(v, k) for k, v in _pairs(_split(sections[1], ",", quotes=True), "field")
    }
    if not fields:
        raise LineError("no fields")
    timestamp = None
    if len(sections) == 3:
        try:
            timestamp = int(sections[2])
        except ValueError:
            raise LineError(f"timestamp {sections[2]!r} is not an integer") from None
    return Line(measurement, tags, fields, timestamp)


# -- formatting ---------------------------------------------------------
_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})


def escape_measurement(text: str) -> str:
    """Escape a measurement name."""
    return text.translate(_MEAS)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_KEY)


def escape_string_field(text: str) -> str:
    """Quote and escape a string field value."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_finite_number(value: object) -> bool:
    """Return whether ``value`` is a real, finite number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
