"""The vocabulary every part of Vigie speaks: readings, series and quality.

A reading is one value of one metric of one device at one instant. Ingest
sources produce them, the hub fans them out, the store, the live cache and
the alarm engine consume them. They are frozen and slotted because tens of
thousands are created per second on the ingest path.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

MAX_NAME_CHARS = 200
"""Longest device, metric, site or tag name: longer is a wrong field, not a name."""
MAX_TEXT_CHARS = 1000
"""Longest unit, source or tag value."""
MIN_READING_NS = 0
"""Readings before 1970 are refused: a wrong unit or an OPC-UA null time (1601), never a measurement."""
MAX_READING_NS = 7_258_118_400 * 10**9
"""2200-01-01: beyond it a timestamp is a wrong unit; both stores hold int64 ns up to 2262."""
_QUALITIES = frozenset({"good", "uncertain", "bad"})
_REFUSED_IN_TEXT = frozenset({"Cc", "Cs"})  # control characters (NUL, newline...) and lone surrogates
_REFUSED_IN_NAMES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})  # + bidi / zero-width format marks, line breaks
_PATH_CHARACTERS = frozenset("/\\")


class Quality(StrEnum):
    """OPC-UA style quality of a reading, reduced to its three classes."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


def series_key(device: str, metric: str) -> str:
    """Return the key that names one series across the platform."""
    return f"{device}/{metric}"


def now_ns() -> int:
    """Return the current UTC time in nanoseconds since the epoch."""
    return time.time_ns()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def datetime_to_ns(dt: datetime) -> int:
    """Return a datetime (naive means UTC) in ns since the epoch, exactly (integer arithmetic, to the µs)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICROSECOND * 1000


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric of one device at one instant (UTC, ns)."""

    device: str
    metric: str
    time_ns: int
    value: float
    quality: str = Quality.GOOD
    unit: str = ""
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series known to the store: identity, unit and descriptive tags."""

    device: str
    metric: str
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The last value a store or the live cache holds for a series."""

    device: str
    metric: str
    time_ns: int
    value: float
    quality: str = Quality.GOOD
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the series key (``device/metric``)."""
        return f"{self.device}/{self.metric}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A range of a series reduced to buckets: min, mean and max per bucket.

    ``time_ns`` holds each bucket's start; empty buckets are left out.
    """

    key: str
    bucket_ns: int
    time_ns: list[int]
    min: list[float]
    mean: list[float]
    max: list[float]

    def __len__(self) -> int:
        return len(self.time_ns)


def name_problem(name: object, what: str = "name") -> str | None:
    """Return why ``name`` cannot name a device, metric, site, tag or layout, or None when it can.

    One rule for every name a user or a device gives, checked on the whole
    text (a trailing newline is not forgiven as ``re.match(...$)`` does): a
    non-empty string of at most :data:`MAX_NAME_CHARS` characters, no path
    separator, no control, format (bidi, zero-width) or surrogate character,
    no leading or trailing space, and not ``.`` or ``..``. The stores, file
    names and pages can then hold and show it as it is.
    """
    if not isinstance(name, str):
        return f"{what} must be a string, got {type(name).__name__}"
    if not name:
        return f"{what} is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"{what} is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    if name in (".", "..") or name != name.strip():
        return f"{what} {_show(name)} has leading or trailing space, or is . or .."
    for c in name:
        if c in _PATH_CHARACTERS:
            return f"{what} {_show(name)} contains {c!r} (no path separators in names)"
        if unicodedata.category(c) in _REFUSED_IN_NAMES:
            return f"{what} {_show(name)} contains the control or format character U+{ord(c):04X}"
    return None


def series_problem(key: object) -> str | None:
    """Return why ``key`` cannot name a series (``device/metric``, each a name), or None when it can."""
    if not isinstance(key, str) or "/" not in key:
        return f"series {_show(str(key))} must be device/metric"
    device, _, metric = key.partition("/")
    return name_problem(device, "device") or name_problem(metric, "metric")


def text_problem(text: object, what: str = "text") -> str | None:
    """Return why ``text`` cannot be kept as a unit, source or tag value, or None when it can."""
    if not isinstance(text, str):
        return f"{what} must be a string, got {type(text).__name__}"
    if len(text) > MAX_TEXT_CHARS:
        return f"{what} is {len(text)} characters long (at most {MAX_TEXT_CHARS})"
    for c in text:
        if unicodedata.category(c) in _REFUSED_IN_TEXT:
            return f"{what} {_show(text)} contains the control or surrogate character U+{ord(c):04X}"
    return None


def _show(text: str, limit: int = 40) -> str:
    """Return a short printable form of a refused text for an error message."""
    return ascii(text[:limit]) + ("…" if len(text) > limit else "")


class ReadingScreen:
    """The one check every reading passes before the hub: what the stores and pages can hold.

    Names repeat (thousands of readings per device), so each text seen good
    is remembered and the per-reading cost is a few set lookups. The memory
    is bounded: a flood of distinct names empties it rather than growing it.
    """

    def __init__(self, memory: int = 100_000) -> None:
        self._good_names: set[str] = set()
        self._good_texts: set[str] = set()
        self._memory = memory

    def problem(self, r: Reading) -> str | None:
        """Return why reading ``r`` cannot be stored, or None when it can."""
        names = self._good_names
        for what, name in (("device", r.device), ("metric", r.metric)):
            if name not in names and (p := self._name(name, what)):
                return p
        value = r.value
        if not isinstance(value, float | int) or isinstance(value, bool):
            return f"value must be a number, got {type(value).__name__}"
        try:
            if not math.isfinite(value):
                return f"value is {value} (only finite numbers are stored)"
        except OverflowError:
            return "value is too large for a 64-bit float"
        t = r.time_ns
        if not isinstance(t, int) or not MIN_READING_NS <= t < MAX_READING_NS:
            return f"timestamp {t!r} ns is outside 1970-2200 (wrong unit?)"
        if r.quality not in _QUALITIES:
            return f"quality {r.quality!r} is not good, uncertain or bad"
        texts = self._good_texts
        for what, text in (("unit", r.unit), ("source", r.source)):
            if text not in texts and (p := self._text(text, what)):
                return p
        for k, v in r.tags.items():
            if k not in names and (p := self._name(k, "tag name")):
                return p
            if v not in texts and (p := self._text(v, f"tag {k}")):
                return p
        return None

    def split(self, batch: Iterable[Reading]) -> tuple[list[Reading], list[tuple[Reading, str]]]:
        """Return the storable readings of a batch and the refused ones with their reason."""
        good: list[Reading] = []
        bad: list[tuple[Reading, str]] = []
        for r in batch:
            p = self.problem(r)
            if p is None:
                good.append(r)
            else:
                bad.append((r, p))
        return good, bad

    def _name(self, name: object, what: str) -> str | None:
        p = name_problem(name, what)
        if p is None:
            self._remember(self._good_names, name)  # type: ignore[arg-type]
        return p

    def _text(self, text: object, what: str) -> str | None:
        p = text_problem(text, what)
        if p is None:
            self._remember(self._good_texts, text)  # type: ignore[arg-type]
        return p

    def _remember(self, seen: set[str], text: str) -> None:
        if len(seen) >= self._memory:
            seen.clear()
        seen.add(text)



class AlarmState(StrEnum):
    """Where an alarm is in its ISA-18.2 life."""

    NORMAL = "normal"
    UNACKNOWLEDGED = "unacknowledged"
    ACKNOWLEDGED = "acknowledged"
    RETURNED_UNACKNOWLEDGED = "returned_unacknowledged"  # the value came back, nobody saw it yet
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"  # by design: its device in maintenance, or its source down
    OUT_OF_SERVICE = "out_of_service"  # its rule is disabled


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm: what the journal keeps, pages show, the notifier and MQTT carry.

    ``kind`` says what happened (raised, escalated, cleared, acknowledged,
    shelved, unshelved, suppressed, unsuppressed, out_of_service,
    in_service); ``state`` is the alarm's state after it and
    ``previous`` before. ``shadow`` events come from rules in shadow mode:
    journaled and shown, never notified.
    """

    kind: str
    state: str
    previous: str
    rule: str
    key: str  # the series (device/metric), or "composite/<rule>"
    device: str
    metric: str
    time_ns: int
    severity: str
    message: str
    value: float | None = None
    unit: str = ""
    limit: float | None = None
    level: str = ""
    site: str | None = None
    policy: str | None = None
    shadow: bool = False
    user: str = ""
    comment: str = ""
    raised_ns: int | None = None
    active: bool = False  # whether the condition is present after this event

    @property
    def alarm_id(self) -> str:
        """Return the id of the alarm this event belongs to (rule + series)."""
        return f"{self.rule}|{self.key}"

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-friendly form (the API, the MQTT topic, the journal's export)."""
        return {f: getattr(self, f) for f in self.__slots__} | {"alarm_id": self.alarm_id}  # type: ignore[attr-defined]
