"""Round-trip YAML for files people also edit by hand: comments, key order, quoting and indentation kept.

The rule editor (app/alarms/rule_file.py) and the layout store
(app/dashboard/layouts.py) write files that live in git beside hand edits.
Writing them with ruamel.yaml's round trip and changing only the keys that
changed keeps a save's diff to what the user changed.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap


def round_trip() -> YAML:
    """Return a round-trip YAML reader/writer."""
    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    return y


def load_map(text: str) -> CommentedMap | None:
    """Return the document as a commented mapping, or None when it is not one (or not YAML)."""
    try:
        doc = round_trip().load(text)
    except Exception:  # ruamel raises many error types; the caller then writes the file anew
        return None
    return doc if isinstance(doc, CommentedMap) else None


def indentation(text: str) -> dict[str, int]:
    """Return a file's block indentation (ruamel cannot read it back): mapping, sequence, dash offset."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        stripped = line.lstrip()
        if stripped.endswith(":") and not stripped.startswith(("#", "-")):
            nxt = next((n for n in lines[i + 1:] if n.strip() and not n.lstrip().startswith("#")), "")
            if nxt.lstrip().startswith("- "):
                offset = max(0, len(nxt) - len(nxt.lstrip()) - (len(line) - len(stripped)))
                return {"mapping": 2, "sequence": offset + 2, "offset": offset}
    return {"mapping": 2, "sequence": 4, "offset": 2}


def dump(doc: Any, like: str = "") -> str:
    """Return ``doc`` as YAML text, indented as the text ``like`` was."""
    out = io.StringIO()
    y = round_trip()
    y.indent(**indentation(like))
    y.dump(doc, out)
    return out.getvalue()


def update_in_place(item: CommentedMap, clean: dict[str, Any], *, defaults: dict[str, Any] | None = None) -> None:
    """Make a mapping say ``clean``, touching only the keys that changed (comments and order kept).

    Without ``defaults``, a key ``clean`` lacks is removed. With them (a spec's
    keys and default values, for a ``clean`` that leaves defaults out), a key
    the file had and ``clean`` lacks is kept, set back to its default if it
    said something else, and a key the spec does not know is kept as it is.
    """
    for key in list(item):
        if key in clean:
            continue
        if defaults is None:
            del item[key]
        elif key in defaults and item[key] != defaults[key]:
            item[key] = defaults[key]
    for key, value in clean.items():
        if key not in item or item[key] != value:
            item[key] = value
