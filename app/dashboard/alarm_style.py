"""How alarms look on pages: the colours of warnings and alarms, and limit lines coloured by them.

The engine says what an alarm is (its severity, warning or alarm); how it
is shown belongs here, with the pages and widgets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STATE_COLOR = {"warning": "#ef6c00", "alarm": "#c62828"}


def coloured_limits(engine: Any) -> Callable[[str], list[tuple[float, str, str]]]:
    """Return a series' limit lines as (value, label, colour) from the engine's (value, label, class)."""

    def limits(key: str) -> list[tuple[float, str, str]]:
        return [(value, label, STATE_COLOR.get(cls, STATE_COLOR["alarm"])) for value, label, cls in engine.limits(key)]

    return limits
