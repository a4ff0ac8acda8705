"""Declarative specs: param classes that load from and save to plain dicts.

Config files, dashboard layouts and alarm rules are nested dicts (YAML). A
:class:`Spec` subclass declares its keys as parameters (with docs and
bounds, so forms can be generated from them); :meth:`Spec.from_spec`
validates a dict against it, rejecting unknown keys with a "did you mean"
and naming the key path of every problem; :meth:`Spec.to_spec` writes it
back with defaults left out, so saved files stay short and diff well.
Problems are collected, not raised one at a time, so a user sees them all.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import param

S = TypeVar("S", bound="Spec")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a spec, located by its key path."""

    path: tuple[str | int, ...]
    message: str

    @property
    def where(self) -> str:
        """Return the key path as ``a.b[2].c``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "(top level)"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SpecError(ValueError):
    """A spec with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def did_you_mean(word: str, choices: list[str]) -> str:
    """Return ' (did you mean X?)' when a close choice exists."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "true/false", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


_EXPECTED = {
    param.String: "a string", param.Integer: "an integer", param.Number: "a number",
    param.Boolean: "true or false", param.List: "a list", param.Dict: "a mapping",
    param.Selector: "one of the allowed values",
}


class Spec(param.Parameterized):
    """Base class of declarative specs."""

    spec_type: ClassVar[str] = ""  # the ``type:`` key of polymorphic specs, when used
    # A polymorphic base sets ``_kinds = {}``; its subclasses with a spec_type register there.
    _kinds: ClassVar[dict[str, type[Spec]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.spec_type and cls._kinds is not None:
            cls._kinds[cls.spec_type] = cls

    @classmethod
    def kinds(cls) -> dict[str, type[Spec]]:
        """Return the registered kinds of a polymorphic base (empty otherwise)."""
        return dict(cls._kinds or {})

    @classmethod
    def keys(cls) -> list[str]:
        """Return the keys this spec accepts."""
        return [k for k in cls.param if k != "name"]

    @classmethod
    def from_spec(cls: type[S], data: Any, path: tuple[str | int, ...] = ()) -> S:
        """Build from a dict, or raise :class:`SpecError` listing every problem."""
        problems: list[Problem] = []
        obj = cls._build(data, path, problems)
        if problems or obj is None:
            raise SpecError(problems or [Problem(path, "invalid")])
        return obj

    @classmethod
    def _build(cls: type[S], data: Any, path: tuple[str | int, ...], problems: list[Problem]) -> S | None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.append(Problem(path, f"expected a mapping, got {_type_name(data)}"))
            return None
        if cls._kinds is not None and not cls.spec_type:
            kind = data.get("type")
            names = sorted(cls._kinds)
            if kind not in cls._kinds:
                what = "missing 'type'" if kind is None else f"unknown type {kind!r}"
                problems.append(Problem((*path, "type"), f"{what}; one of {', '.join(names)}"
                                        + did_you_mean(str(kind), names)))
                return None
            return cls._kinds[kind]._build(data, path, problems)  # type: ignore[return-value]
        keys = cls.keys()
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "type" and cls.spec_type:
                continue
            if key not in keys:
                problems.append(Problem((*path, key), f"unknown key{did_you_mean(str(key), keys)}"))
                continue
            converted = cls._convert(cls.param[key], value, (*path, key), problems)
            if converted is not _INVALID:
                kwargs[key] = converted
        for key in keys:
            p = cls.param[key]
            if getattr(p, "required", False) is True and key not in kwargs and key not in data:
                problems.append(Problem((*path, key), "missing (required)"))
        try:
            obj = cls(**kwargs)
        except ValueError as exc:
            problems.append(Problem(path, str(exc)))
            return None
        for message_path, message in obj.validate():
            problems.append(Problem((*path, *message_path), message))
        return obj

    @classmethod
    def _convert(cls, p: param.Parameter, value: Any, path: tuple, problems: list[Problem]) -> Any:
        spec_class = getattr(p, "class_", None) if isinstance(p, param.ClassSelector) else None
        if isinstance(spec_class, type) and issubclass(spec_class, Spec):
            built = spec_class._build(value, path, problems)
            return _INVALID if built is None else built
        item_type = getattr(p, "item_type", None) if isinstance(p, param.List) else None
        if isinstance(item_type, type) and issubclass(item_type, Spec):
            if not isinstance(value, list):
                problems.append(Problem(path, f"expected a list, got {_type_name(value)}"))
                return _INVALID
            items = [item_type._build(v, (*path, i), problems) for i, v in enumerate(value)]
            return _INVALID if any(i is None for i in items) else items
        if isinstance(p, param.Number) and not isinstance(p, param.Integer) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        try:
            p._validate(value)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(path, _reword(p, value, exc)))
            return _INVALID
        return value

    def validate(self) -> list[tuple[tuple, str]]:
        """Return cross-field problems as (relative path, message); override to add checks."""
        return []

    def to_spec(self) -> dict[str, Any]:
        """Return a plain dict, defaults left out, nested specs expanded."""
        out: dict[str, Any] = {}
        if self.spec_type:
            out["type"] = self.spec_type
        for key in self.keys():
            value = getattr(self, key)
            if value == self.param[key].default and not isinstance(value, Spec):
                continue
            if isinstance(value, Spec):
                value = value.to_spec()
            elif isinstance(value, list):
                value = [v.to_spec() if isinstance(v, Spec) else v for v in value]
            out[key] = value
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_spec() == other.to_spec()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


_INVALID = object()


def _reword(p: param.Parameter, value: Any, exc: Exception) -> str:
    if isinstance(p, param.Selector) and not isinstance(p, param.ClassSelector):
        objects = [o for o in p.objects if o is not None]
        return f"{value!r} is not allowed; choose one of {', '.join(map(repr, objects))}" + did_you_mean(
            str(value), [str(o) for o in objects])
    bounds = getattr(p, "bounds", None)
    if bounds and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value!r} is out of range {bounds[0]}..{bounds[1]}"
    for kind, text in _EXPECTED.items():
        if isinstance(p, kind):
            return f"expected {text}, got {_type_name(value)} {value!r}"
    return str(exc)


def missing_files(spec: Spec, keys: tuple[str, ...]) -> list[tuple[tuple, str]]:
    """Report the given file keys whose file does not exist (Vigie opens them from its working directory)."""
    return [((k,), f"file not found: {getattr(spec, k)} (a relative path is taken from the directory Vigie runs in)")
            for k in keys if getattr(spec, k) and not Path(getattr(spec, k)).is_file()]
