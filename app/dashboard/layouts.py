"""The ``layouts/`` directory: dashboards as YAML files, with every saved version kept.

``layouts/<name>.yaml`` is the current version. A save changes only what
changed in the file (ruamel.yaml's round trip: comments, key order, keys
Vigie does not know, values written out though they equal the default, and
widgets that do not load all stay), so a layout kept in git shows the
user's change and nothing else. Each save first copies the file it replaces
to ``layouts/.history/<name>/<UTC timestamp>.yaml``, so undo is "restore
the newest history entry" and any version can be restored. Deleting
moves the file into the history too: nothing is ever lost by a click.
Names are slugs, so no name can reach outside the directory.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from app.dashboard.spec import LayoutSpec, LoadedLayout, WidgetSpec, load_layout, split_titles
from app.spec import Spec, SpecError
from app.yaml_roundtrip import dump, load_map, update_in_place

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # with fullmatch: "x\n" is not a name


class LayoutNameError(ValueError):
    """A layout name that is not a slug."""


def layout_name_problem(name: object) -> str | None:
    """Return why ``name`` cannot name a layout (a slug: a-z, 0-9, - and _, at most 64), or None."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return None
    return f"layout name {str(name)[:80]!r} must be 1-64 lowercase letters, digits, - and _"


def slugify(title: str, default: str = "dashboard") -> str:
    """Return a name made of a-z, 0-9 and - from a title; accents are folded ("Débit" → "debit")."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    return slug[:64].rstrip("-") or default


@dataclass(frozen=True, slots=True)
class Version:
    """One saved version of a layout."""

    id: str
    saved_at: datetime
    path: Path


class LayoutStore:
    """Load, save, version and delete layouts in one directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        problem = layout_name_problem(name)
        if problem is not None:
            raise LayoutNameError(problem)
        return self.directory / f"{name}.yaml"

    def path(self, name: str) -> Path:
        """Return the file of a layout (raises LayoutNameError for a name that cannot be one)."""
        return self._path(name)

    def _history(self, name: str) -> Path:
        self._path(name)
        return self.directory / ".history" / name

    def names(self) -> list[str]:
        """Return every layout name, sorted."""
        return sorted(p.stem for p in self.directory.glob("*.yaml") if _NAME.fullmatch(p.stem))

    def exists(self, name: str) -> bool:
        """Return whether the layout exists."""
        return self._path(name).is_file()

    def load(self, name: str) -> LoadedLayout:
        """Load a layout (tolerantly: see :func:`parse_layout`)."""
        path = self._path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no layout named {name!r}")  # no server path in what a page shows
        return load_layout(path)

    def _keep(self, name: str) -> None:
        current = self._path(name)
        if current.is_file():
            history = self._history(name)
            history.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            shutil.copy2(current, history / f"{stamp}.yaml")

    def save(self, name: str, spec: LayoutSpec) -> Path:
        """Write a layout atomically, keeping the version it replaces; only what changed changes in the file."""
        path = self._path(name)
        text = merged_text(path.read_text(encoding="utf-8"), spec) if path.is_file() else spec.to_yaml()
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path  # nothing changed: no new version
        self._keep(name)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def versions(self, name: str) -> list[Version]:
        """Return the previous versions, newest first."""
        history = self._history(name)
        out = []
        for p in sorted(history.glob("*.yaml"), reverse=True):
            saved = datetime.strptime(p.stem, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
            out.append(Version(p.stem, saved, p))
        return out

    def restore(self, name: str, version_id: str) -> Path:
        """Make a previous version current (the current one is kept as a version)."""
        match = [v for v in self.versions(name) if v.id == version_id]
        if not match:
            raise FileNotFoundError(f"layout {name!r} has no version {version_id!r}")
        text = match[0].path.read_text(encoding="utf-8")
        self._keep(name)
        path = self._path(name)
        path.write_text(text, encoding="utf-8")
        return path

    def undo(self, name: str) -> bool:
        """Go back to the version before the last save; return False when there is none."""
        versions = self.versions(name)
        if not versions:
            return False
        newest = versions[0]
        self._path(name).write_text(newest.path.read_text(encoding="utf-8"), encoding="utf-8")
        newest.path.unlink()
        return True

    def copy(self, name: str, new_name: str) -> Path:
        """Save a copy under a new name."""
        if self.exists(new_name):
            raise FileExistsError(f"a layout named {new_name!r} exists already")
        loaded = self.load(name)
        return self.save(new_name, loaded.spec)

    def delete(self, name: str) -> None:
        """Delete a layout (its last version stays in the history)."""
        self._keep(name)
        self._path(name).unlink()


def _defaults(cls: type[Spec]) -> dict:
    return {k: cls.param[k].default for k in cls.keys()}


def _title_as_written(item: CommentedMap, clean: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Return ``clean`` saying its titles as the file does: ``title: {en: ..., fr: ...}`` stays a mapping."""
    written = item.get("title")
    if not isinstance(written, dict):
        return clean
    clean = dict(clean)
    titles = {"en": clean.pop("title", defaults.get("title", ""))}
    for key in [k for k in clean if k.startswith("title_")]:
        titles[key.removeprefix("title_")] = clean.pop(key)
    titles = {lang: text for lang, text in titles.items() if text or lang == "en"}
    if dict(written) != titles:
        written = CommentedMap(titles)
        written.fa.set_flow_style()
    clean["title"] = written
    return clean


def merged_text(old_text: str, spec: LayoutSpec) -> str:
    """Return the file text that says ``spec``, changed from ``old_text`` only where the layout changed.

    Widgets are matched by id: a kept widget's mapping is updated in place,
    a new one is added (as a one-line mapping, like the shipped layouts'), a
    removed one goes. A widget the file has but that did not load (an
    unknown kind, a bad key) is not in ``spec``: it is kept, for its author
    to fix. A file that is not a YAML mapping is written anew.
    """
    doc = load_map(old_text)
    if doc is None:
        return spec.to_yaml()
    clean = spec.to_spec()
    new_widgets = clean.pop("widgets", [])
    update_in_place(doc, {**_title_as_written(doc, clean, _defaults(LayoutSpec)),
                          **({"widgets": doc["widgets"]} if "widgets" in doc else {})},
                    defaults=_defaults(LayoutSpec))
    old = doc.get("widgets")
    old_items = [w for w in old if isinstance(w, CommentedMap)] if isinstance(old, CommentedSeq) else []
    by_id = {w.get("id"): w for w in old_items}
    broken = []
    for w in old_items:
        try:
            WidgetSpec.from_spec(split_titles(dict(w)))
        except SpecError:
            broken.append(w)
    widgets = CommentedSeq()
    for item in new_widgets:
        kind = WidgetSpec.kinds()[item["type"]]
        mapping = by_id.get(item["id"])
        if mapping is None or mapping.get("type") != item["type"]:
            mapping = CommentedMap(item)
            mapping.fa.set_flow_style()
        else:
            update_in_place(mapping, _title_as_written(mapping, item, _defaults(kind)), defaults=_defaults(kind))
        widgets.append(mapping)
    new_ids = {w["id"] for w in new_widgets}
    widgets.extend(w for w in broken if w.get("id") not in new_ids)
    if isinstance(old, CommentedSeq) and [id(w) for w in old] == [id(w) for w in widgets]:
        pass  # the same widgets in the same order: the sequence (and its comments) stays as it is
    elif isinstance(old, CommentedSeq):
        # ruamel keeps an item's end-of-line comment by its index: move each with its widget.
        notes = {id(w): old.ca.items[i] for i, w in enumerate(old) if i in old.ca.items}
        old[:] = list(widgets)
        old.ca.items.clear()
        for i, w in enumerate(old):
            if id(w) in notes:
                old.ca.items[i] = notes[id(w)]
    else:
        doc["widgets"] = widgets
    return dump(doc, old_text)
