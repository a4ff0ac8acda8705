"""Device and series name patterns: plain names or globs (``*``, ``?``, ``[abc]``), case-sensitive.

Widgets select devices and series with them, and the pulse uses the same
rules to decide which dashboards a new reading concerns.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

GLOB_CHARS = "*?["


def is_glob(pattern: str) -> bool:
    """Return whether ``pattern`` is a glob rather than a plain name."""
    return any(c in pattern for c in GLOB_CHARS)


def literal(patterns: Iterable[str]) -> list[str]:
    """Return the patterns that are plain names, not globs (they can be checked as unknown)."""
    return [p for p in patterns if not is_glob(p)]


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Return whether ``name`` matches one of the glob ``patterns``."""
    return any(fnmatchcase(name, p) for p in patterns)
