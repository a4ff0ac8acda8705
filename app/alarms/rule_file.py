"""Editing alarm rules: validate, write the rules file keeping its comments and order, apply without a restart.

:class:`RuleEditor` is what the editor page and the REST API call. A rule
arrives as a plain ``type:`` dict; it is built by its spec class (so each
field's problem is reported by name), checked with the whole section (a
duplicate name, a composite naming an unknown rule), then written into
the file that holds the ``alarms`` section with ruamel.yaml's round trip:
the rule's own mapping is updated in place, so comments, order and flow
style of everything else survive and a file kept in git shows a diff of
that rule only. The version it replaces is kept in ``.history/`` beside
it (as layouts are). The engine then takes the new rule set and the
journal records who changed what.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from app.alarms.rules import AlarmRule
from app.spec import SpecError
from app.yaml_roundtrip import dump, load_map, update_in_place

if TYPE_CHECKING:
    from app.alarms.engine import AlarmEngine
    from app.alarms.journal import Journal


class RuleError(ValueError):
    """A rule that cannot be saved, with each problem (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in problems))
        self.problems = problems


def _plain(node: Any) -> Any:
    """Return ruamel's commented containers as plain dicts and lists."""
    return json.loads(json.dumps(node, default=str))


class RuleEditor:
    """The rules file, the running engine and the journal, kept in agreement."""

    def __init__(self, path: Path, engine: AlarmEngine, journal: Journal | None = None) -> None:
        self.path = Path(path)
        self.engine = engine
        self.journal = journal

    # -- the file ---------------------------------------------------------------------------------------
    def _load(self) -> CommentedMap:
        if not self.path.exists():
            return CommentedMap()
        return load_map(self.path.read_text(encoding="utf-8")) or CommentedMap()

    def _rules(self, doc: CommentedMap) -> CommentedSeq:
        alarms = doc.get("alarms")
        if not isinstance(alarms, CommentedMap):
            alarms = doc["alarms"] = CommentedMap()
        rules = alarms.get("rules")
        if not isinstance(rules, CommentedSeq):
            rules = alarms["rules"] = CommentedSeq()
        return rules

    def specs(self) -> list[dict[str, Any]]:
        """Return the rules as the file has them (plain dicts)."""
        return [_plain(r) for r in self._rules(self._load())]

    def _write(self, doc: CommentedMap) -> None:
        """Write atomically in the file's own indentation, the replaced version kept in ``.history/<file stem>/``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            history = self.path.parent / ".history" / self.path.stem
            history.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.path, history / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-"
                                              f"{time.time_ns() % 10**9:09d}.yaml")
        text = dump(doc, self.path.read_text(encoding="utf-8") if self.path.exists() else "")
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)

    def versions(self) -> list[Path]:
        """Return the kept previous versions, newest first."""
        return sorted((self.path.parent / ".history" / self.path.stem).glob("*.yaml"), reverse=True)

    # -- checking ---------------------------------------------------------------------------------------
    @staticmethod
    def build(spec: dict[str, Any]) -> AlarmRule:
        """Build one rule from its dict, or raise RuleError naming each field's problem."""
        try:
            return AlarmRule.from_spec(spec)  # type: ignore[return-value]
        except SpecError as exc:
            raise RuleError([(p.where, p.message) for p in exc.problems]) from None

    def _check_section(self, specs: list[dict[str, Any]]) -> list[AlarmRule]:
        from app.config import AlarmsSection

        try:
            section = AlarmsSection.from_spec({"rules": specs})
        except SpecError as exc:
            raise RuleError([(p.where, p.message) for p in exc.problems]) from None
        return list(section.rules)

    # -- editing ----------------------------------------------------------------------------------------
    def save(self, spec: dict[str, Any], *, user: str, replaces: str | None = None) -> AlarmRule:
        """Add or replace a rule (``replaces``: its name before a rename); write, apply, journal it."""
        rule = self.build(spec)
        doc = self._load()
        rules = self._rules(doc)
        target = replaces or rule.name
        index = next((i for i, r in enumerate(rules) if isinstance(r, dict) and r.get("name") == target), None)
        before = _plain(rules[index]) if index is not None else None
        written = self._as_written(rule, spec, before)
        specs = [_plain(r) for r in rules]
        if index is None:
            specs.append(written)
        else:
            specs[index] = written
        new_rules = self._check_section(specs)
        if index is None:
            item = CommentedMap(written)
            if all(not isinstance(v, dict | list) for v in written.values()):
                item.fa.set_flow_style()  # like the file's one-line rules
            rules.append(item)
        else:
            update_in_place(rules[index], written)
        self._write(doc)
        self.engine.set_rules(new_rules, user)
        self._note("rule_saved" if before else "rule_added", user, rule.name, before, written)
        return next(r for r in new_rules if r.name == rule.name)

    @staticmethod
    def _as_written(rule: AlarmRule, spec: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
        """Return the rule as the file should say it: the keys it had, then new ones; values as the user typed.

        A default is written only when the file had the key or the user gave
        it; ``55`` stays ``55`` (not param's ``55.0``); ``type`` only where
        the file says it or the kind is not a threshold.
        """
        clean = rule.to_spec()
        old_type = (before or {}).get("type", "threshold")
        out: dict[str, Any] = {}
        for key in dict.fromkeys([*(before or {}), *spec, *clean]):
            if key == "type":
                if "type" in (before or {}) or rule.spec_type != old_type or (before is None and
                                                                                rule.spec_type != "threshold"):
                    out["type"] = rule.spec_type
            elif key in clean or (key in spec and key in type(rule).keys()):
                value = getattr(rule, key)
                out[key] = spec[key] if key in spec and spec[key] == value else value
        return out

    def delete(self, name: str, *, user: str) -> None:
        """Remove a rule from the file and the engine."""
        doc = self._load()
        rules = self._rules(doc)
        index = next((i for i, r in enumerate(rules) if isinstance(r, dict) and r.get("name") == name), None)
        if index is None:
            raise KeyError(name)
        before = _plain(rules[index])
        specs = [_plain(r) for i, r in enumerate(rules) if i != index]
        new_rules = self._check_section(specs)
        del rules[index]
        self._write(doc)
        self.engine.set_rules(new_rules, user)
        self._note("rule_deleted", user, name, before, None)

    def _note(self, kind: str, user: str, name: str, before: Any, after: Any) -> None:
        if self.journal is not None:
            # Category audit: a rule change is in the admins' audit log with the layouts, users and tokens.
            self.journal.note(kind, user=user, rule=name, key=f"rule {name}", category="audit",
                              comment=json.dumps({"before": before, "after": after}, default=str, sort_keys=True))
