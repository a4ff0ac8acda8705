"""What history a store keeps: rollup resolutions and how long each resolution lives.

One small value object shared by the embedded store, the InfluxDB store and
the config, so ``store.rollups`` and ``store.retention`` mean the same thing
everywhere. Durations are written as ``30s``, ``1m``, ``1h``, ``90d``,
``2w``, ``2y`` (a year is 365 days); a retention of ``forever`` (or null)
keeps a resolution for good, which is also the default: nothing is expired
unless the config says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NS = 1_000_000_000
DAY_NS = 86_400 * NS
_UNITS = {"s": NS, "m": 60 * NS, "h": 3600 * NS, "d": DAY_NS, "w": 7 * DAY_NS, "y": 365 * DAY_NS}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
FOREVER = ("forever", "", None)


def parse_duration(text: str) -> int:
    """Return a duration such as ``90d`` in nanoseconds; raise ValueError for anything else."""
    m = _DURATION.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 30s, 1m, 1h, 90d, 2y")
    return int(m.group(1)) * _UNITS[m.group(2)]


def duration_label(ns: int) -> str:
    """Return the shortest label of a duration in nanoseconds (``3600e9`` -> ``1h``)."""
    for unit in ("y", "w", "d", "h", "m", "s"):
        if ns % _UNITS[unit] == 0:
            return f"{ns // _UNITS[unit]}{unit}"
    return f"{ns}ns"


@dataclass(frozen=True)
class HistoryPolicy:
    """Rollup resolutions (ns, finest first) and each resolution's horizon (ns, None = forever).

    ``retention`` is keyed by ``"raw"`` or a resolution's label (``"1m"``).
    """

    rollups: tuple[int, ...] = (60 * NS, 3600 * NS)
    retention: Mapping[str, int | None] = field(default_factory=dict)

    @classmethod
    def from_config(cls, rollups: Sequence[str] | None = None,
                    retention: Mapping[str, str | None] | None = None) -> HistoryPolicy:
        """Build a policy from config strings (``["1m", "1h"]``, ``{raw: 90d, 1m: 2y, 1h: forever}``)."""
        problems = policy_problems(rollups, retention)
        if problems:
            raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
        res = cls.rollups if rollups is None else tuple(sorted({parse_duration(r) for r in rollups}))
        horizons: dict[str, int | None] = {}
        for name, value in (retention or {}).items():
            key = "raw" if name == "raw" else duration_label(parse_duration(name))
            horizons[key] = None if value in FOREVER else parse_duration(str(value))
        return cls(res, horizons)

    def horizon(self, resolution: int | None) -> int | None:
        """Return how long ``resolution`` (None = raw) is kept, in ns (None = forever)."""
        return self.retention.get("raw" if resolution is None else duration_label(resolution))

    def cutoff(self, resolution: int | None, now_ns: int) -> int | None:
        """Return the oldest time still kept at ``resolution`` (None = raw), or None when kept forever."""
        h = self.horizon(resolution)
        return None if h is None else now_ns - h

    def describe(self) -> dict[str, str]:
        """Return each resolution's horizon as text, for health()."""
        out = {"raw": _label(self.horizon(None))}
        for r in self.rollups:
            out[duration_label(r)] = _label(self.horizon(r))
        return out


def _label(h: int | None) -> str:
    return "forever" if h is None else duration_label(h)


def policy_problems(rollups: Sequence[str] | None,
                    retention: Mapping[str, str | None] | None) -> list[tuple[str, str]]:
    """Return (key, message) for each problem of a rollups/retention config, for the config's validation."""
    problems: list[tuple[str, str]] = []
    labels = set()
    for r in rollups or []:
        try:
            ns = parse_duration(r)
        except ValueError as exc:
            problems.append(("rollups", str(exc)))
            continue
        if DAY_NS % ns and ns % DAY_NS:
            problems.append(("rollups", f"{r!r} must divide a day or be whole days"))
        labels.add(duration_label(ns))
    if rollups is None:
        labels = {"1m", "1h"}
    for name, value in (retention or {}).items():
        if name != "raw":
            try:
                label = duration_label(parse_duration(name))
            except ValueError as exc:
                problems.append(("retention", str(exc)))
                continue
            if label not in labels:
                problems.append(("retention", f"{name!r} is not one of the rollups ({', '.join(sorted(labels))})"))
        if value not in FOREVER:
            try:
                parse_duration(str(value))
            except ValueError as exc:
                problems.append(("retention", str(exc)))
    return problems
