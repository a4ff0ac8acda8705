"""OPC-UA variables chosen by browsing: a root folder, name patterns, and device/metric templates.

A selection names a root (a browse path from the Root folder, like the
``browse_path`` of an explicit node), walks the hierarchical references
below it (Organizes, HasComponent...; not HasProperty, whose children are
metadata such as EngineeringUnits), and keeps the variables whose name
matches ``include`` and none of ``exclude``. Each kept variable becomes a
series whose device and metric come from templates over its browse path:

- ``{name}``: the variable's browse name (without the namespace index);
- ``{path[i]}``: one name along the path, ``path[0]`` being the root's own
  name and ``path[-1]`` the variable's, so ``{path[-2]}`` is its parent;
- ``{path[i:j]}`` and ``{path}``: several names joined with ``.`` (names
  may not contain ``/``);
- a filter after ``|``: ``lower``, ``upper``, ``snake`` (``BoilerTemp`` and
  ``Boiler Temp`` become ``boiler_temp``).

A pattern (shell-style: ``*``, ``?``, ``[abc]``, case-sensitive) without
``/`` is matched against a name; one with ``/`` against the path below the
root (``Line1/Boiler*/Temp``). An ``exclude`` matching a folder's name
skips the folder and everything in it. The standard nodes of namespace 0
(the ``Server`` object and its diagnostics) are never walked, so a root of
``0:Objects`` sees only the server's own variables. Objects and folders are walked
into; variables are leaves (their own components are not). Variables whose data type is known
not to be a number (text, dates, byte strings, structures...) or whose value
is an array are skipped: Vigie stores numbers and Booleans.

The selection is browsed again at every (re)connect, so variables added
to the server appear after the next reconnect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from asyncua import ua

_FIELD = re.compile(r"\{(?P<field>[a-z_]+)(?:\[(?P<start>-?\d*)(?P<colon>:)?(?P<stop>-?\d*)\])?"
                    r"(?:\|(?P<filter>[a-z]+))?\}")
_FIELDS = ("name", "path")


def _snake(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()


_FILTERS = {"lower": str.lower, "upper": str.upper, "snake": _snake}


class Template:
    """A device or metric template such as ``"{path[-2]|snake}"``, checked when parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts: list[str | re.Match[str]] = []
        pos = 0
        for m in _FIELD.finditer(text):
            self._literal(text[pos:m.start()])
            if m["field"] not in _FIELDS:
                raise ValueError(f"unknown field {{{m['field']}}} in {text!r} (fields: name, path[i], path[i:j])")
            if m["field"] == "name" and (m["start"] or m["colon"]):
                raise ValueError(f"{{name}} takes no index in {text!r}")
            if m["field"] == "path" and m.group(0).startswith("{path[") and not (m["start"] or m["colon"]):
                raise ValueError(f"empty index in {text!r}")
            if m["filter"] and m["filter"] not in _FILTERS:
                raise ValueError(f"unknown filter |{m['filter']} in {text!r} (filters: {', '.join(_FILTERS)})")
            self._parts.append(m)
            pos = m.end()
        self._literal(text[pos:])
        if not text:
            raise ValueError("empty template")

    def _literal(self, text: str) -> None:
        if "{" in text or "}" in text:
            raise ValueError(f"unbalanced or malformed braces in {self.text!r}")
        if text:
            self._parts.append(text)

    def render(self, path: list[str]) -> str:
        """Return the text for a variable at ``path`` (root's name first); IndexError when an index is past it."""
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part["field"] == "name":
                value = path[-1]
            elif part["colon"]:
                start = int(part["start"]) if part["start"] else None
                stop = int(part["stop"]) if part["stop"] else None
                names = path[start:stop]
                if not names:
                    raise IndexError(f"path[{part['start']}:{part['stop']}] is empty for {'/'.join(path)}")
                value = ".".join(names)
            elif part["start"]:
                index = int(part["start"])
                if not -len(path) <= index < len(path):
                    raise IndexError(f"path[{index}] is past {'/'.join(path)} ({len(path)} names)")
                value = path[index]
            else:
                value = ".".join(path)
            out.append(_FILTERS[part["filter"]](value) if part["filter"] else value)
        return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowseSelection:
    """Variables below ``root`` chosen by name patterns, named by device and metric templates."""

    root: str
    device: str
    metric: str = "{name}"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    recursive: bool = True
    max_depth: int = 10
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("browse: root is required (e.g. 0:Objects/2:Plant)")
        Template(self.device)
        Template(self.metric)

    @property
    def label(self) -> str:
        """Return how errors and ``check-config --browse`` name the selection."""
        return f"browse {self.root}"

    def matches(self, patterns: tuple[str, ...], name: str, relpath: str) -> bool:
        return any(fnmatchcase(relpath if "/" in p else name, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Browsed:
    """A variable a selection found: its NodeId, its browse path and names."""

    node_id: ua.NodeId
    browse_path: str
    """From the Root folder, as an explicit node's ``browse_path`` would say it."""
    path: list[str]
    """Names from the root's own down to the variable's."""


_NOT_NUMBERS = frozenset({
    ua.ObjectIds.String, ua.ObjectIds.DateTime, ua.ObjectIds.Guid, ua.ObjectIds.ByteString,
    ua.ObjectIds.XmlElement, ua.ObjectIds.NodeId, ua.ObjectIds.ExpandedNodeId, ua.ObjectIds.StatusCode,
    ua.ObjectIds.QualifiedName, ua.ObjectIds.LocalizedText, ua.ObjectIds.Structure, ua.ObjectIds.DataValue,
    ua.ObjectIds.DiagnosticInfo, ua.ObjectIds.LocaleId, ua.ObjectIds.UtcTime, ua.ObjectIds.NumericRange,
})
"""Data types (namespace 0) whose values are never a number: their variables are skipped."""
_MASK = ua.NodeClass.Object.value | ua.NodeClass.Variable.value
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)


async def _browse_all(client: Any, nodes: list[ua.NodeId], chunk: int,
                      limit: int = 50_000) -> list[list[ua.ReferenceDescription]]:
    """Return the forward hierarchical references (objects and variables) of each node, following continuations.

    A node's continuations stop at ``limit`` references (a server that always answers with one more
    continuation point must not make this loop forever), and the point is then released.
    """
    out: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(nodes), chunk):
        descriptions = [ua.BrowseDescription(
            NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IncludeSubtypes=True,
            NodeClassMask=_MASK, ResultMask=ua.BrowseResultMask.All) for n in nodes[start:start + chunk]]
        results = await client.uaclient.browse(ua.BrowseParameters(NodesToBrowse=descriptions))
        for result in results:
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point and len(refs) <= limit:
                more = await client.uaclient.browse_next(ua.BrowseNextParameters(
                    ReleaseContinuationPoints=False, ContinuationPoints=[point]))
                refs += more[0].References or []
                point = more[0].ContinuationPoint
            if point:
                await client.uaclient.browse_next(ua.BrowseNextParameters(
                    ReleaseContinuationPoints=True, ContinuationPoints=[point]))
            if not result.StatusCode.is_good():
                refs = []
            out.append(refs)
    return out


async def _numeric(client: Any, found: list[Browsed], chunk: int) -> list[bool]:
    """Return, per variable, whether its DataType and ValueRank allow a number (unknown: allowed)."""
    keep: list[bool] = []
    for start in range(0, len(found), chunk):
        part = found[start:start + chunk]
        to_read = []
        for b in part:
            to_read += [ua.ReadValueId(NodeId=b.node_id, AttributeId=ua.AttributeIds.DataType),
                        ua.ReadValueId(NodeId=b.node_id, AttributeId=ua.AttributeIds.ValueRank)]
        values = await client.uaclient.read(ua.ReadParameters(NodesToRead=to_read))
        for i in range(len(part)):
            dtype, rank = values[2 * i].Value, values[2 * i + 1].Value
            dtype = dtype.Value if dtype is not None else None
            rank = rank.Value if rank is not None else None
            scalar = rank is None or rank < 0  # Scalar (-1), Any (-2), ScalarOrOneDimension (-3)
            text = isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 and dtype.Identifier in _NOT_NUMBERS
            keep.append(scalar and not text)
    return keep


async def browse(client: Any, selection: BrowseSelection, root: ua.NodeId, chunk: int = 500,
                 limit: int = 50_000) -> tuple[list[Browsed], list[str]]:
    """Return the variables of ``selection`` below ``root`` (sorted by path), and what was skipped and why."""
    root_name = selection.root.strip("/").rsplit("/", 1)[-1]
    root_name = ua.QualifiedName.from_string(root_name).Name if ":" in root_name else root_name
    base = selection.root.strip("/")
    frontier: list[tuple[ua.NodeId, list[str], list[str]]] = [(root, [root_name], [])]
    seen = {root}
    found: list[Browsed] = []
    skipped: list[str] = []
    depth = 0
    while frontier and depth < (selection.max_depth if selection.recursive else 1):
        depth += 1
        refs_per_node = await _browse_all(client, [n for n, _, _ in frontier], chunk, limit)
        next_frontier = []
        full = False
        for (_node, path, qualified), refs in zip(frontier, refs_per_node, strict=True):
            if full:
                break
            for ref in refs:
                if ref.ReferenceTypeId == _HAS_PROPERTY:
                    continue
                node_id = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                if node_id in seen or node_id.NamespaceIndex == 0:  # the standard nodes (Server...): not data
                    continue
                seen.add(node_id)
                if len(seen) > limit:  # what was found so far still goes through the number check below
                    skipped.append(f"stopped after {limit} nodes")
                    full = True
                    break
                name = ref.BrowseName.Name or ""
                child_path = [*path, name]
                child_qualified = [*qualified, ref.BrowseName.to_string()]
                relpath = "/".join(child_path[1:])
                if selection.matches(selection.exclude, name, relpath):
                    continue
                if ref.NodeClass == ua.NodeClass.Object:
                    next_frontier.append((node_id, child_path, child_qualified))
                elif selection.matches(selection.include, name, relpath):
                    found.append(Browsed(node_id, "/".join([base, *child_qualified]), child_path))
        frontier = [] if full else next_frontier
    found.sort(key=lambda b: b.path)
    if found:
        keep = await _numeric(client, found, chunk)
        skipped += [f"{b.browse_path}: not a number (data type or array)" for b, k in zip(found, keep, strict=True)
                    if not k]
        found = [b for b, k in zip(found, keep, strict=True) if k]
    return found, skipped
