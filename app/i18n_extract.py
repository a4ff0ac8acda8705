"""Find the labels the code translates: every literal passed to ``t(...)`` or marked with ``N_(...)``.

Babel's own Python extractor reads tokens, so it misses the calls inside
f-strings (``f"## {t('Alarms', lang)}"``, most of the pages) and joins the
two branches of ``t("Resume" if paused else "Pause", lang)`` into one
message. This one walks the syntax tree instead. It is the extraction
method of ``babel.cfg`` (``pybabel extract``, run by ``scripts/messages``),
and tests/test_i18n.py checks with it that every label has a French
translation.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FUNCTIONS = ("t", "N_")


def _literals(node: ast.AST) -> Iterator[str]:
    """Yield the string literals a label argument can be: a constant, or either branch of ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)


def labels_in_code(source: str, filename: str = "<code>") -> list[tuple[int, str, str]]:
    """Return ``(line, function, label)`` for each literal label passed to ``t`` or ``N_`` in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            out += [(node.lineno, node.func.id, text) for text in _literals(node.args[0]) if text]
    return sorted(out)


def labels_in_tree(root: Path) -> dict[str, list[str]]:
    """Return each label found in the ``.py`` files under ``root``, with where it is (``path:line``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for line, _func, text in labels_in_code(path.read_text(encoding="utf-8"), str(path)):
            found.setdefault(text, []).append(f"{path}:{line}")
    return found


def extract(fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: dict) -> Iterator[tuple]:
    """Babel extraction method (``[app.i18n_extract:extract: **.py]`` in babel.cfg)."""
    source = fileobj.read().decode(options.get("encoding", "utf-8"))
    for line, func, text in labels_in_code(source, getattr(fileobj, "name", "<code>")):
        yield line, func, text, []
