"""The ``layouts/`` directory: dashboards as YAML files, with every saved version kept.

``layouts/<name>.yaml`` is the current version. Each save first copies the
file it replaces to ``layouts/.history/<name>/<UTC timestamp>.yaml``, so undo
is "restore the newest history entry" and any version can be restored.
Deleting moves the file into the history too: nothing is ever lost by a
click. Names are slugs, so no name can reach outside the directory.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.dashboard.spec import LayoutSpec, LoadedLayout, load_layout

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
        """Write a layout atomically, keeping the version it replaces."""
        path = self._path(name)
        text = spec.to_yaml()
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
