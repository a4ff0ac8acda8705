"""Layout and widget specs: what a ``layouts/<name>.yaml`` file holds.

A layout is a title, a grid (12 columns) and a list of widgets. Each widget
is a flat mapping: its ``type`` (the widget kind), a stable ``id``, its
place on the grid (``x``, ``y``, ``w``, ``h``) and its options. The same
param classes give the YAML file, the editor's forms and the rendered
widget, so they cannot disagree. Loading is tolerant: a widget with a
problem is reported (file, key path, reason) and shown as an error tile,
and the rest of the dashboard still loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import param
import yaml

from app.spec import Problem, Spec, SpecError

GRID_COLUMNS = 12
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: no trailing newline


def unique_id(base: str, taken: set[str]) -> str:
    """Return ``base``, or ``base-2``, ``base-3``... the first not in ``taken`` (and add it there)."""
    wid, n = base, 1
    while wid in taken:
        n += 1
        wid = f"{base}-{n}"
    taken.add(wid)
    return wid


def title_in(spec: Spec, lang: str) -> str:
    """Return a layout's or a widget's title in ``lang``: its ``title_<lang>`` when given, else its ``title``."""
    return (getattr(spec, f"title_{lang}", "") or spec.title) if lang != "en" else spec.title


def split_titles(raw: Any) -> Any:
    """Accept ``title: {en: Flood dams, fr: Barrages}`` as ``title: Flood dams`` plus ``title_fr: Barrages``.

    The mapping form reads well in a hand-written file; the editor saves the flat form (one key per language),
    which older layouts already are.
    """
    if isinstance(raw, dict) and isinstance(raw.get("title"), dict):
        titles = raw["title"]
        raw = {**raw, "title": titles.get("en", next(iter(titles.values()), ""))}
        raw.update({f"title_{lang}": text for lang, text in titles.items() if lang != "en"})
    return raw


class WidgetSpec(Spec):
    """Base of every widget kind: identity and place on the grid."""

    _kinds: ClassVar[dict[str, type[Spec]] | None] = {}
    label: ClassVar[str] = ""  # shown in the editor's palette

    id = param.String(default="", doc="Stable id of the widget within its layout (letters, digits, - and _).")
    title = param.String(default="", doc="Title shown above the widget.")
    title_fr = param.String(default="", label="Title (French)", precedence=1,  # last in the editor's form
                            doc="Title in French (when empty, French pages show the title).")
    x = param.Integer(default=0, bounds=(0, GRID_COLUMNS - 1), doc="Column of the left edge (0-11).")
    y = param.Integer(default=0, bounds=(0, 1000), doc="Row of the top edge.")
    w = param.Integer(default=4, bounds=(1, GRID_COLUMNS), doc="Width in columns.")
    h = param.Integer(default=3, bounds=(1, 40), doc="Height in rows.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if not _ID.fullmatch(self.id or ""):
            problems.append((("id",), "missing or not made of letters, digits, - and _"))
        if self.x + self.w > GRID_COLUMNS:
            problems.append((("w",), f"x + w = {self.x + self.w} is wider than the {GRID_COLUMNS}-column grid"))
        return problems

    def series_keys(self) -> list[str]:
        """Return the series this widget shows (checked against the catalogue)."""
        return []

    def device_patterns(self) -> list[str]:
        """Return the devices this widget shows, as names or globs (new data for them wakes it)."""
        return sorted({key.split("/", 1)[0] for key in self.series_keys()})

    def to_spec(self) -> dict[str, Any]:
        """Write id and position first, always, so files read well."""
        out = super().to_spec()
        head = {"type": self.spec_type, "id": self.id, "x": self.x, "y": self.y, "w": self.w, "h": self.h}
        return {**head, **{k: v for k, v in out.items() if k not in head}}


class LayoutSpec(Spec):
    """A dashboard: title and widgets on a 12-column grid."""

    title = param.String(default="Dashboard", doc="Title of the dashboard.")
    title_fr = param.String(default="", label="Title (French)",
                            doc="Title in French (when empty, French pages show the title).")
    description = param.String(default="", doc="One line shown under the title.")
    site = param.String(default=None, allow_None=True,
                        doc="The site (its site tag) this dashboard shows: the overview's dashboard link of that "
                            "site opens it.")
    row_height = param.Integer(default=80, bounds=(20, 400), doc="Height of one grid row in pixels.")
    refresh_ms = param.Integer(default=500, bounds=(250, 60_000),
                               doc="How often live widgets look for new data (ms).")
    widgets = param.List(default=[], item_type=WidgetSpec)

    def validate(self) -> list[tuple[tuple, str]]:
        seen: set[str] = set()
        problems = []
        for i, w in enumerate(self.widgets):
            if w.id in seen:
                problems.append((("widgets", i, "id"), f"id {w.id!r} is used twice"))
            seen.add(w.id)
        return problems

    def widget(self, widget_id: str) -> WidgetSpec | None:
        """Return the widget with this id."""
        return next((w for w in self.widgets if w.id == widget_id), None)

    def to_yaml(self) -> str:
        """Return the YAML text saved to ``layouts/<name>.yaml``."""
        return yaml.safe_dump(self.to_spec(), sort_keys=False, allow_unicode=True, width=100)


@dataclass
class LoadedLayout:
    """A layout as loaded: the usable spec, plus what was wrong and where."""

    name: str
    spec: LayoutSpec
    problems: list[str] = field(default_factory=list)
    broken: list[tuple[int, dict[str, Any], list[str]]] = field(default_factory=list)  # (index, raw, reasons)


def parse_layout(name: str, text: str, source: str = "") -> LoadedLayout:
    """Parse layout YAML tolerantly: keep every good widget, report the others."""
    source = source or f"{name}.yaml"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return LoadedLayout(name, LayoutSpec(title=name), [f"{source}: YAML syntax: {exc}"])
    if not isinstance(data, dict):
        return LoadedLayout(name, LayoutSpec(title=name), [f"{source}: expected a mapping at the top"])
    problems: list[str] = []
    raw_widgets = data.pop("widgets", []) or []
    data = split_titles(data)
    try:
        spec = LayoutSpec.from_spec(data)
    except SpecError as exc:
        problems += [f"{source}: {p}" for p in exc.problems]
        # Keep every good top-level key: an unknown or bad one must not reset the others (a save would
        # then write their defaults over what the file says).
        bad = {p.path[0] for p in exc.problems if p.path}
        try:
            spec = LayoutSpec.from_spec({k: v for k, v in data.items() if k not in bad})
        except SpecError:
            spec = LayoutSpec(title=str(data.get("title", name)))
    if not isinstance(raw_widgets, list):
        problems.append(f"{source}: widgets: expected a list")
        raw_widgets = []
    widgets: list[WidgetSpec] = []
    broken = []
    for i, raw in enumerate(raw_widgets):
        raw = split_titles(raw)
        try:
            widgets.append(WidgetSpec.from_spec(raw, ("widgets", i)))
        except SpecError as exc:
            reasons = [str(p) for p in exc.problems]
            problems += [f"{source}: {r}" for r in reasons]
            broken.append((i, raw if isinstance(raw, dict) else {}, reasons))
    spec.widgets = widgets
    for path, message in spec.validate():
        problems.append(f"{source}: {Problem(path, message)}")
    return LoadedLayout(name, spec, problems, broken)


def load_layout(path: str | Path) -> LoadedLayout:
    """Load ``layouts/<name>.yaml``."""
    path = Path(path)
    return parse_layout(path.stem, path.read_text(encoding="utf-8"), str(path))
