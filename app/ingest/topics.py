"""MQTT topic templates: ``site/{site}/device/{device}/telemetry``.

A template's named levels become tags of the readings (``device`` and
``metric`` are special: they name the series). The template turns into the
subscription filter (named levels become ``+``) and matches incoming topics.
A trailing ``#`` is allowed and matches any remainder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TemplateError(ValueError):
    """A topic template that cannot be used."""


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A parsed topic template."""

    template: str
    levels: tuple[str | None, ...]  # literal text, or None for a named level
    names: tuple[str | None, ...]  # the level's name where it is named
    wildcard_tail: bool

    @classmethod
    def parse(cls, template: str) -> TopicTemplate:
        """Parse a template; raise :class:`TemplateError` with the reason."""
        if not template or (template.startswith("/") and template == "/"):
            raise TemplateError("empty topic template")
        parts = template.split("/")
        tail = parts[-1] == "#"
        if tail:
            parts = parts[:-1]
        levels: list[str | None] = []
        names: list[str | None] = []
        seen: set[str] = set()
        for part in parts:
            m = _NAME.match(part)
            if m:
                name = m.group(1)
                if name in seen:
                    raise TemplateError(f"level name {{{name}}} appears twice in {template!r}")
                seen.add(name)
                levels.append(None)
                names.append(name)
            elif part == "+":
                levels.append(None)
                names.append(None)
            elif "{" in part or "}" in part or "#" in part or "+" in part:
                raise TemplateError(
                    f"level {part!r} of {template!r} must be literal text, '+', or a whole '{{name}}'"
                )
            else:
                levels.append(part)
                names.append(None)
        return cls(template, tuple(levels), tuple(names), tail)

    @property
    def filter(self) -> str:
        """Return the MQTT subscription filter."""
        text = "/".join("+" if lit is None else lit for lit in self.levels)
        return f"{text}/#" if self.wildcard_tail else text

    @property
    def fields(self) -> tuple[str, ...]:
        """Return the named levels."""
        return tuple(n for n in self.names if n)

    def match(self, topic: str) -> dict[str, str] | None:
        """Return the named levels of ``topic``, or None when it does not match."""
        parts = topic.split("/")
        n = len(self.levels)
        if len(parts) < n or (len(parts) > n and not self.wildcard_tail):
            return None
        if self.wildcard_tail and len(parts) == n:
            # 'a/#' matches 'a' too, per the MQTT spec.
            pass
        out: dict[str, str] = {}
        for part, lit, name in zip(parts, self.levels, self.names, strict=False):
            if lit is not None:
                if part != lit:
                    return None
            elif name:
                if not part:
                    return None
                out[name] = part
        return out
