"""What a source could not ingest: counted per kind, the last few kept.

Bad input must never stop ingest, and must never be silent either. Each
rejected payload (or part of one) is counted per kind of fault, the last
few are kept with their reason for the UI and the health endpoint, and each
kind is logged once per source (then counted quietly) so a flood of bad
messages cannot flood the log.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from app.model import now_ns

log = logging.getLogger(__name__)

PREVIEW_BYTES = 120


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected payload or field, with where it came from and why."""

    time_ns: int
    source: str
    where: str
    kind: str
    reason: str
    preview: str

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly form."""
        return {
            "time_ns": self.time_ns,
            "source": self.source,
            "where": self.where,
            "kind": self.kind,
            "reason": self.reason,
            "preview": self.preview,
        }


def preview(payload: bytes | str) -> str:
    """Return a short printable preview of a payload, safe for logs and pages."""
    if isinstance(payload, bytes):
        text = payload[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        more = len(payload) > PREVIEW_BYTES
    else:
        text = payload[:PREVIEW_BYTES]
        more = len(payload) > PREVIEW_BYTES
    text = "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in text)
    return text + ("…" if more else "")


class DeadLetters:
    """Counts and keeps the last rejected inputs of one source."""

    def __init__(self, source: str, keep: int = 50, *, quiet: bool = False) -> None:
        self.source = source
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.recent: deque[DeadLetter] = deque(maxlen=keep)

    @property
    def total(self) -> int:
        """Return how many inputs were rejected since start."""
        return sum(self.counts.values())

    def add(self, where: str, kind: str, reason: str, payload: bytes | str = b"") -> None:
        """Record one rejected input; log the first of each kind."""
        if not self.counts[kind] and not self.quiet:
            log.warning(
                "%s: rejected input from %s (%s): %s; further %r rejections are counted, not logged",
                self.source, where, kind, reason, kind,
            )
        self.counts[kind] += 1
        self.recent.append(DeadLetter(now_ns(), self.source, where, kind, reason, preview(payload)))

    def health(self) -> dict[str, Any]:
        """Return counts per kind and the most recent rejections."""
        return {
            "total": self.total,
            "by_kind": dict(self.counts),
            "recent": [d.as_dict() for d in list(self.recent)[-10:]],
        }
