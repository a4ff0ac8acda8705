"""The audit log: who changed what, when, from where, with the difference, in the alarm journal.

Changes to layouts, rules, devices, contacts, policies, users, tokens and
embed links, and every login, failed login and logout, are journal events of
category ``audit`` (the journal's file, retention and CSV export: one
timeline answers "what happened at 03:12"). A change carries the unified
difference of the document's YAML before and after, cut to
:data:`MAX_DIFF_CHARS`; secrets never enter it (passwords and tokens are
not documents, only their creation or revocation is recorded).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from app.alarms.journal import Journal

MAX_DIFF_CHARS = 20_000


def as_text(doc: Any) -> str:
    """Return a document as the YAML the difference is taken on (None: empty)."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def difference(before: Any, after: Any, name: str = "") -> str:
    """Return the unified difference of two documents (empty when they are the same)."""
    lines = difflib.unified_diff(as_text(before).splitlines(), as_text(after).splitlines(),
                                 fromfile=f"{name} (before)", tofile=f"{name} (after)", lineterm="", n=2)
    text = "\n".join(lines)
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "\n… (difference cut)"


def audit(journal: Journal, kind: str, who: str, target: str = "", *, origin: str = "", before: Any = None,
          after: Any = None, detail: str = "") -> None:
    """Record one audited action: ``kind`` (``layout_saved``, ``user_added`` ...) on ``target`` by ``who``."""
    parts = [p for p in (f"from {origin}" if origin else "", detail,
                         difference(before, after, target) if (before is not None or after is not None) else "")
             if p]
    journal.note(kind, user=who, comment="\n".join(parts), key=target, category="audit")
