"""Alarm rule kinds, each declared once as a spec class: the config, the engine and the editor read it.

A rule kind is a :class:`~app.spec.Spec` registered under its ``type``
(``threshold``, ``rate_of_change``, ``no_data``, ``time_to_threshold``,
``composite``); ``config/alarms.yaml`` holds nested ``type:`` dicts, the
editor builds its form from the parameters (their docs and bounds), and the
engine asks the same object to judge a series.

Judging is pure: :meth:`AlarmRule.judge` takes the series' condition state
and one reading (or :meth:`AlarmRule.judge_tick` a clock tick) and returns
a :class:`Verdict` (is the condition present, the value and the limit it is
judged against), updating only the state it was given. The on-delay and
off-delay on top (:class:`Debounce`) are pure in the same way. Live
evaluation, the backtest on history and shadow mode all run these same
functions, so they cannot disagree.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import param

from app.alarms.grammar import Expression, ExpressionError
from app.model import Reading
from app.spec import Spec

log = logging.getLogger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_CLASS = {"low": "warning", "medium": "warning", "high": "alarm", "critical": "alarm"}
"""What a severity is to an operator: low and medium are warnings, high and critical alarms (pages colour them)."""
MODES = ("enabled", "disabled", "shadow")
NS = 1_000_000_000
_RENAMED = {"above": "h", "below": "l", "hysteresis": "deadband"}  # threshold keys of the first release
_warned: list[bool] = []


class Verdict(NamedTuple):
    """What one reading or tick says about a rule's condition on one series (a tuple: made per reading)."""

    active: bool
    value: float | None = None
    limit: float | None = None
    level: str = ""  # HH / H / L / LL for thresholds, "rise" / "fall", "silent", "predicted"...
    severity: str | None = None  # when the level sets it (HH: the rule's extreme severity)
    detail: dict[str, Any] | None = None  # e.g. {"crossing_ns": ...} for time to threshold


@dataclass(slots=True)
class SeriesState:
    """A rule's memory of one series: its window of recent points, its newest time and its level."""

    window: deque = field(default_factory=deque)  # (time_ns, value), oldest first
    last_ns: int = 0
    level: str = ""
    expected_s: float | None = None  # how often the series' source reports (a no-data rule's default timeout)


class AlarmRule(Spec):
    """What every rule kind has: a name, a target, a severity, a message, delays, a policy and a mode."""

    _kinds: ClassVar[dict[str, type[Spec]] | None] = {}
    needs_ticks: ClassVar[bool] = False  # judged on the clock too (no data), not only on readings

    name = param.String(default="", constant=False, doc="Name of the rule, shown with its alarms; unique.")
    series = param.String(default="*/*", doc="Target: device/metric, globs allowed (dam-*/water_level).")
    site = param.String(default=None, allow_None=True, doc="Target: only series whose site tag is this.")
    tags = param.Dict(default={}, doc="Target: only series whose tags have these values (globs allowed).")
    severity = param.Selector(default="high", objects=list(SEVERITIES),
                              doc="low / medium show as warnings (orange), high / critical as alarms (red).")
    message = param.String(default="", doc="Text of the alarm: {rule} {device} {metric} {site} {value} {unit} "
                                           "{limit} {level} {cmp} {time} (default: a sentence with them).")
    on_delay_s = param.Number(default=0.0, bounds=(0, 86400),
                              doc="The condition must hold this long before the alarm is raised.")
    off_delay_s = param.Number(default=0.0, bounds=(0, 86400),
                               doc="The condition must be gone this long before the alarm clears.")
    policy = param.String(default=None, allow_None=True, doc="Escalation policy that notifies this rule's alarms.")
    latched = param.Boolean(default=False, doc="Once raised, the alarm stays until acknowledged after it cleared.")
    mode = param.Selector(default="enabled", objects=list(MODES),
                          doc="enabled; disabled (out of service); shadow (evaluated and journaled, never notified).")

    def __init__(self, **params: Any) -> None:
        params.setdefault("name", "")  # else param makes one up and a missing name is never noticed
        super().__init__(**params)
        self._snapshot()
        self.param.watch(lambda *_: self._snapshot(), list(self.param))

    def _snapshot(self) -> None:
        """Copy the parameters into plain attributes (``self.v``) for the hot path.

        Reading a param attribute costs about a microsecond (descriptors,
        dynamic-value checks): a dozen per reading made a one-year backtest
        take a minute. The copy follows every change of a parameter.
        """
        values = {k: getattr(self, k) for k in self.param}
        if "v" in self.__dict__:
            self.v.__dict__.update(values)  # in place: the engine's and the alarms' references stay valid
        else:
            self.v = SimpleNamespace(**values)

    @classmethod
    def _build(cls, data: Any, path: tuple, problems: list) -> Any:
        """Read a rule: a plain rule is a threshold; the first release's keys still read (said once)."""
        if cls is AlarmRule and isinstance(data, dict):
            if "type" not in data:
                data = {**data, "type": "threshold"}
            old = [k for k in _RENAMED if k in data] if data["type"] == "threshold" else []
            if old:
                if not _warned:
                    _warned.append(True)
                    log.warning("alarm rules: %s are now %s (%s: please rename)", ", ".join(_RENAMED),
                                ", ".join(_RENAMED.values()), ", ".join(old))
                data = {_RENAMED.get(k, k): v for k, v in data.items()}
        return super()._build(data, path, problems)

    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in cls.param]  # "name" is a key here, not param's object name

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if not self.name:
            problems.append((("name",), "missing (required)"))
        if self.series.count("/") != 1:
            problems.append((("series",), f"expected device/metric (globs allowed), got {self.series!r}"))
        return problems

    # -- targeting -------------------------------------------------------------------------------------
    def targets(self, key: str, tags: dict[str, str]) -> bool:
        """Return whether the rule watches a series (its key and tags)."""
        v = self.v
        if not _glob(v.series)(key):
            return False
        if v.site is not None and tags.get("site") != v.site:
            return False
        return all(_glob(pattern)(tags.get(k, "")) for k, pattern in v.tags.items())

    def literal_prefix(self) -> str:
        """Return the part of the series pattern before its first wildcard (the engine indexes rules by it)."""
        pattern = self.v.series
        cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
        return pattern[:cut]

    # -- judging (pure: the state given is the only thing changed) --------------------------------------
    def judge(self, state: SeriesState, r: Reading) -> Verdict | None:
        """Return the verdict of one reading, or None when it says nothing (bad quality)."""
        return self.evaluate(self.v, state, r)

    def judge_tick(self, state: SeriesState, now_ns: int) -> Verdict | None:
        """Return the verdict of the clock at ``now_ns`` (None: the clock says nothing for this kind)."""
        return self.evaluate_tick(self.v, state, now_ns)

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        """The pure judgement: parameter values, the series' state, one reading -> a verdict."""
        raise NotImplementedError

    @staticmethod
    def evaluate_tick(v: SimpleNamespace, state: SeriesState, now_ns: int) -> Verdict | None:
        """The pure judgement of a clock tick (None for kinds the clock does not concern)."""
        return None

    def default_message(self) -> str:
        return "{rule}: {device} {metric} {value}{unit} ({cmp} {limit}{unit})"

    def render(self, **values: Any) -> str:
        """Return the alarm's text from the template; unknown fields are left as written."""
        template = self.message or self.default_message()
        try:
            return template.format_map(_Blank(values))
        except (ValueError, IndexError, AttributeError):  # a malformed template: say so, never raise
            return f"{self.name}: {values.get('device', '')} {values.get('metric', '')} {values.get('value', '')}"


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> Callable[[str], Any]:
    """Return a compiled matcher of a glob (fnmatch's rules, case-sensitive)."""
    return re.compile(fnmatch.translate(pattern)).match


class _Blank(dict):
    """format_map values where a missing field stays ``{field}`` (templates are user text)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class ThresholdRule(AlarmRule):
    """Alarm while the value is beyond a limit: high-high / high / low / low-low, with a deadband."""

    spec_type = "threshold"

    hh = param.Number(default=None, allow_None=True, label="High-high (HH)",
                      doc="High-high limit (raises the extreme severity).")
    h = param.Number(default=None, allow_None=True, label="High (H)", doc="High limit.")
    l = param.Number(default=None, allow_None=True, label="Low (L)", doc="Low limit.")  # noqa: E741
    ll = param.Number(default=None, allow_None=True, label="Low-low (LL)",
                      doc="Low-low limit (raises the extreme severity).")
    deadband = param.Number(default=0.0, bounds=(0, None),
                            doc="The alarm clears once the value is back inside its limit by this much.")
    extreme_severity = param.Selector(default="critical", objects=list(SEVERITIES),
                                      doc="Severity of the high-high and low-low levels.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        limits = [(k, getattr(self, k)) for k in ("ll", "l", "h", "hh") if getattr(self, k) is not None]
        if not limits:
            problems.append(((), "give at least one limit: hh, h, l or ll"))
        for (k1, v1), (k2, v2) in itertools.pairwise(limits):
            if v1 >= v2:
                problems.append(((k2,), f"must be above {k1} ({v1:g})"))
        lows = [v for k, v in limits if k in ("l", "ll")]
        highs = [v for k, v in limits if k in ("h", "hh")]
        if lows and highs and min(highs) > max(lows) and 2 * self.deadband >= min(highs) - max(lows):
            problems.append((("deadband",), f"{self.deadband:g} leaves no value between the low and high limits "
                                            "inside the deadband: the alarm could never clear"))
        return problems

    @staticmethod
    def _level(v: SimpleNamespace, x: float, current: str) -> str:
        """Return the level of a value; the deadband holds a level until the value is back inside it by that much."""
        db = v.deadband
        if v.hh is not None and (x > v.hh or (current == "HH" and x > v.hh - db)):
            return "HH"
        if v.h is not None and (x > v.h or (current in ("H", "HH") and x > v.h - db)):
            return "H"
        if v.ll is not None and (x < v.ll or (current == "LL" and x < v.ll + db)):
            return "LL"
        if v.l is not None and (x < v.l or (current in ("L", "LL") and x < v.l + db)):
            return "L"
        return ""

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        if r.quality == "bad":
            return None
        level = ThresholdRule._level(v, r.value, state.level)
        state.level = level
        state.last_ns = r.time_ns
        if not level:
            return Verdict(False, r.value)
        limit = v.hh if level == "HH" else v.h if level == "H" else v.l if level == "L" else v.ll
        return Verdict(True, r.value, limit, level, v.extreme_severity if level in ("HH", "LL") else v.severity)

    def limit_lines(self) -> list[tuple[float, str]]:
        """Return (limit, level) for charts."""
        return [(v, k.upper()) for k in ("hh", "h", "l", "ll") if (v := getattr(self, k)) is not None]

    def default_message(self) -> str:
        return "{rule}: {value}{unit} ({cmp} {limit}{unit})"


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class _WindowRule(AlarmRule):
    """A rule that judges the points of a time window (rate of change, time to threshold)."""

    window_s = param.Number(default=900.0, bounds=(1, 7 * 86400), doc="Length of the window of recent points.")
    min_points = param.Integer(default=3, bounds=(2, None), doc="Points the window needs before judging.")

    @staticmethod
    def _push(v: SimpleNamespace, state: SeriesState, r: Reading) -> bool:
        """Add a reading to the window (dropping what is older than it); return False for a late one."""
        if r.time_ns < state.last_ns:
            return False
        w = state.window
        w.append((r.time_ns, r.value))
        horizon = r.time_ns - int(v.window_s * NS)
        while w and w[0][0] < horizon:
            w.popleft()
        state.last_ns = r.time_ns
        return True


class RateOfChangeRule(_WindowRule):
    """Alarm when a value rises (or falls) faster than a rate over a window: water up 10 cm in 15 min.

    The change is measured between the medians of the window's first and last
    three points, so one noisy reading can neither raise nor hide it (the
    window needs six points before the rule judges).
    """

    spec_type = "rate_of_change"

    rise = param.Number(default=None, allow_None=True, bounds=(0, None),
                        doc="Alarm when the value rises by more than this over the window.")
    fall = param.Number(default=None, allow_None=True, bounds=(0, None),
                        doc="Alarm when the value falls by more than this over the window.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if self.rise is None and self.fall is None:
            problems.append(((), "give rise, fall or both"))
        return problems

    @staticmethod
    def change(v: SimpleNamespace, state: SeriesState) -> float | None:
        """Return the robust change across the window, None while it has fewer than six points."""
        w = state.window
        if len(w) < max(v.min_points, 6):
            return None
        first = [w[0][1], w[1][1], w[2][1]]
        last = [w[-3][1], w[-2][1], w[-1][1]]
        return _median(last) - _median(first)

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        if r.quality == "bad" or not _WindowRule._push(v, state, r):
            return None
        delta = RateOfChangeRule.change(v, state)
        if delta is None:
            return Verdict(False, r.value)
        if v.rise is not None and delta > v.rise:
            return Verdict(True, delta, v.rise, "rise")
        if v.fall is not None and -delta > v.fall:
            return Verdict(True, delta, -v.fall, "fall")
        return Verdict(False, delta)

    def default_message(self) -> str:
        return "{rule}: {device} {metric} changed by {value}{unit} in the window (limit {limit}{unit})"


class NoDataRule(AlarmRule):
    """Alarm when a series stays silent longer than expected: a dead sensor must not hide behind its site."""

    spec_type = "no_data"
    needs_ticks = True

    timeout_s = param.Number(default=None, allow_None=True, bounds=(1, 30 * 86400),
                             doc="Silence that raises the alarm (default: the source's expected_interval_s, "
                                 "else 300 s).")

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        state.last_ns = max(state.last_ns, r.time_ns)
        return Verdict(False, r.value)

    @staticmethod
    def evaluate_tick(v: SimpleNamespace, state: SeriesState, now_ns: int) -> Verdict | None:
        if not state.last_ns:
            return None
        silent_s = (now_ns - state.last_ns) / NS
        timeout = NoDataRule.timeout(v, state)
        if silent_s > timeout:
            return Verdict(True, silent_s, timeout, "silent", detail={"last_ns": state.last_ns})
        return Verdict(False, silent_s, timeout)

    @staticmethod
    def timeout(v: SimpleNamespace, state: SeriesState) -> float:
        """Return the silence that raises: the rule's, else the source's expected interval, else 300 s."""
        return v.timeout_s or state.expected_s or 300.0

    def default_message(self) -> str:
        return "{rule}: no data from {device} {metric} for {value} s (expected every {limit} s)"


class TimeToThresholdRule(_WindowRule):
    """Alarm when the trend predicts a limit will be crossed soon: "spillway crest in 1 h 40".

    A least-squares line through the window's points is extended to the
    limit; the alarm is raised while the crossing is predicted within
    ``horizon_s`` (and not yet reached: that is the threshold rule's job).
    """

    spec_type = "time_to_threshold"

    limit = param.Number(default=None, allow_None=True, doc="The value whose crossing is predicted.")
    direction = param.Selector(default="above", objects=["above", "below"], doc="Crossing upwards or downwards.")
    horizon_s = param.Number(default=3600.0, bounds=(1, 30 * 86400),
                             doc="Alarm when the crossing is predicted within this time.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if self.limit is None:
            problems.append((("limit",), "missing (required)"))
        return problems

    @staticmethod
    def fit(v: SimpleNamespace, state: SeriesState) -> tuple[float, float] | None:
        """Return (slope per second, fitted value at the newest point) of the least-squares line; None when too few.

        One pass of running sums (x in seconds before the newest point, so
        the numbers stay small): the backtest calls this for every reading.
        """
        w = state.window
        n = len(w)
        if n < v.min_points:
            return None
        t_last = w[-1][0]
        sx = sy = sxx = sxy = 0.0
        for t, y in w:
            x = (t - t_last) / NS
            sx += x
            sy += y
            sxx += x * x
            sxy += x * y
        den = n * sxx - sx * sx
        if den <= 0:
            return None
        slope_s = (n * sxy - sx * sy) / den
        return slope_s, (sy - slope_s * sx) / n

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        if r.quality == "bad" or not _WindowRule._push(v, state, r):
            return None
        fitted = TimeToThresholdRule.fit(v, state)
        if fitted is None or v.limit is None:
            return Verdict(False, r.value, v.limit)
        slope, now_value = fitted
        up = v.direction == "above"
        reached = r.value >= v.limit if up else r.value <= v.limit
        towards = slope > 0 if up else slope < 0
        if reached or not towards:
            return Verdict(False, r.value, v.limit)
        seconds = (v.limit - now_value) / slope
        if not math.isfinite(seconds) or seconds < 0:
            return Verdict(False, r.value, v.limit)
        crossing_ns = r.time_ns + int(seconds * NS)
        active = seconds <= v.horizon_s
        return Verdict(active, r.value, v.limit, "predicted" if active else "",
                       detail={"crossing_ns": crossing_ns, "in_s": seconds})

    def default_message(self) -> str:
        return "{rule}: {device} {metric} at {value}{unit} is predicted to reach {limit}{unit} in {in}"


class CompositeRule(AlarmRule):
    """Alarm while a logical expression over other rules' alarms holds: ``"dam-1 alert" and not "pump 1 off"``.

    An operand is a rule's name (quoted when it has spaces); it is true while
    that rule has an active alarm on any series. ``and``, ``or``, ``not`` and
    parentheses, parsed by :mod:`app.alarms.grammar` (never ``eval``).
    """

    spec_type = "composite"

    expression = param.String(default="", doc='Logical expression over rule names: "a" and not ("b" or c).')
    series = param.String(default="composite/*", doc="Unused by composites: they watch rules, not series.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if not self.name:
            problems.append((("name",), "missing (required)"))
        try:
            self.parsed()
        except ExpressionError as exc:
            problems.append((("expression",), str(exc)))
        return problems

    def parsed(self) -> Expression:
        """Return the parsed expression (raises ExpressionError)."""
        return Expression.parse(self.expression)

    def targets(self, key: str, tags: dict[str, str]) -> bool:
        return False  # fed by the engine with its operands' states, never with readings

    @staticmethod
    def evaluate(v: SimpleNamespace, state: SeriesState, r: Reading) -> Verdict | None:
        return None

    def judge_states(self, active_rules: set[str]) -> Verdict:
        """Return the verdict given the names of the rules with an active alarm."""
        return Verdict(self.parsed().evaluate(active_rules), level="composite")

    def default_message(self) -> str:
        return "{rule}: " + self.expression.replace("{", "{{").replace("}", "}}")


RULE_KINDS: dict[str, type[AlarmRule]] = AlarmRule.kinds()  # type: ignore[assignment]


def rule_from_spec(data: Any) -> AlarmRule:
    """Build a rule from its ``type:`` dict (raises SpecError naming every problem)."""
    return AlarmRule.from_spec(data)  # type: ignore[return-value]
