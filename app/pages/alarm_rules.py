"""The alarm rule editor: a form made from the rule kind's own param class, save, delete, and test on history.

The form is ``pn.Param`` over a draft copy of the rule (never the live
rule), so the editor offers exactly the fields the YAML file and the
engine know, with their docs and bounds. Saving goes through
:class:`~app.alarms.rule_file.RuleEditor` (field-by-field problems, the
file kept as it was around the rule, applied without a restart). "Test on
history" replays the stored history of the targeted series through the
draft and draws when it would have fired over the series.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import holoviews as hv
import holoviews.plotting.bokeh  # the backend .opts() needs (History no longer loads it for us)
import numpy as np
import panel as pn
import param

from app.alarms.backtest import backtest_on_history
from app.alarms.lifecycle import human_duration
from app.alarms.rule_file import RuleEditor, RuleError
from app.alarms.rules import RULE_KINDS, AlarmRule, rule_from_spec
from app.i18n import N_, fmt_span, fmt_time, t
from app.model import now_ns
from app.pages.forms import form_widgets
from app.pages.shell import page, session_arg, session_lang
from app.web.access import Forbidden, allowed, require
from app.web.alarms import rule_action

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth

RANGES = {"1 d": 86400, "7 d": 7 * 86400, "30 d": 30 * 86400, "1 y": 365 * 86400}
NEW = "+ new rule"  # the picker's value for a rule not written yet (shown translated)
KIND_LABELS = {"threshold": N_("threshold"), "rate_of_change": N_("rate of change"), "no_data": N_("no data"),
               "time_to_threshold": N_("time to threshold"), "composite": N_("composite")}


class RuleEditorView:
    """One session's editor."""

    def __init__(self, services: PageServices, lang: str, auth: WebAuth) -> None:
        self.services = services
        self.lang = lang
        self.auth = auth
        self.tz = services.timezone
        self.editing = allowed(auth.page_identity(), "rules:edit")
        names = [r.name for r in services.alarms.rules]
        chosen = session_arg("rule")
        self.pick = pn.widgets.Select(label=t("Rule", lang), options=self._rule_options(names),
                                      value=chosen if chosen in names else (names[0] if names else NEW), width=260)
        self.kind = pn.widgets.Select(label=t("Kind", lang), options={t(KIND_LABELS.get(k, k), lang): k
                                                                      for k in sorted(RULE_KINDS)},
                                      value="threshold", width=200)
        self.form = pn.Column(sizing_mode="stretch_width")
        self.matched = pn.pane.HTML("", sizing_mode="stretch_width")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.save = pn.widgets.Button(label=t("Save", lang), color="primary", disabled=not self.editing)
        self.delete = pn.widgets.Button(label=t("Delete", lang), color="danger", disabled=not self.editing)
        self.range = pn.widgets.Select(label=t("Range", lang), options={fmt_span(k, lang): k for k in RANGES},
                                       value="7 d", width=100)
        self.test = pn.widgets.Button(label=t("Test on history", lang))
        self.result = pn.pane.HTML("", sizing_mode="stretch_width")
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=320)
        self._armed_delete = False
        self.draft: AlarmRule | None = None
        self.original: str | None = None
        self.pick.param.watch(lambda _e: self.load(), "value")
        self.kind.param.watch(lambda _e: self.load(), "value")
        self.save.on_click(lambda _e: self.on_save())
        self.delete.on_click(lambda _e: self.on_delete())
        self.test.on_click(lambda _e: pn.state.execute(self.on_test))
        self.load()

    def _rule_options(self, names: list[str]) -> dict[str, str]:
        return {**{n: n for n in names}, t("+ new rule", self.lang): NEW}

    def load(self) -> None:
        """Make a draft of the picked rule (a copy: the live rule is never edited in place)."""
        self._armed_delete = False
        rule = next((r for r in self.services.alarms.rules if r.name == self.pick.value), None)
        if rule is None:
            self.original = None
            self.draft = rule_from_spec({"type": self.kind.value, "name": "", "series": "*/*"}) \
                if self.kind.value != "composite" else rule_from_spec({"type": "composite", "name": "",
                                                                       "expression": "x"})
            self.kind.disabled = False
        else:
            self.original = rule.name
            self.draft = rule_from_spec(rule.to_spec())
            self.kind.disabled = True
        widgets = {k: pn.widgets.FloatInput for k, p in self.draft.param.objects().items()
                   if isinstance(p, param.Number) and not isinstance(p, param.Integer)}
        keys = [k for k in type(self.draft).keys()]
        self.form.objects = [pn.Param(self.draft, parameters=keys,
                                      widgets=form_widgets(self.draft, keys, self.lang, widgets), show_name=False,
                                      sizing_mode="stretch_width", name="rule-form")]
        matched = self.services.alarms.matched_series(rule) if rule is not None else []
        self.matched.object = (f"<span class='vigie-rule-matched'>{t('Series watched', self.lang)}: "
                               f"{len(matched)} {html.escape(', '.join(matched[:8]))}"
                               f"{' …' if len(matched) > 8 else ''}</span>" if rule is not None else "")
        if rule is not None and not matched and rule.spec_type != "composite":
            self.matched.object = (f"<span class='vigie-rule-matched' style='color:#ef6c00'>"
                                   f"{t('This rule watches no series yet', self.lang)}</span>")
        self.status.object = ""

    def spec(self) -> dict[str, Any]:
        assert self.draft is not None
        return {"type": self.draft.spec_type, **{k: getattr(self.draft, k) for k in type(self.draft).keys()}}

    def say(self, text: str, error: bool = False) -> None:
        colour = "#c62828" if error else "#2e7d32"
        self.status.object = f"<div class='vigie-rule-status' style='color:{colour}'>{text}</div>"

    def _who(self, new_mode: str | None, replaces: str | None) -> str | None:
        """Return who acts when the session's user may make this change now; else say why and return None."""
        try:  # checked here, on the server, at the click: a hidden button is not a check
            return require(self.auth.page_identity(), rule_action(self.services.alarms, new_mode, replaces)).label
        except Forbidden as exc:
            self.say(html.escape(exc.explain(self.lang)), error=True)
            return None

    def on_save(self) -> None:
        spec = self.spec()
        if (who := self._who(str(spec.get("mode", "enabled")), self.original)) is None:
            return
        try:
            rule = self.services.rule_editor.save(spec, user=who, replaces=self.original)
        except RuleError as exc:
            self.say("<br>".join(f"<b>{html.escape(w)}</b>: {html.escape(m)}" for w, m in exc.problems), error=True)
            return
        names = [r.name for r in self.services.alarms.rules]
        self.pick.options = self._rule_options(names)
        self.pick.value = rule.name
        self.load()
        self.say(html.escape(f"{t('Saved', self.lang)}: {rule.name} → {self.services.rule_editor.path.name}"))

    def on_delete(self) -> None:
        if self.original is None or (who := self._who(None, self.original)) is None:
            return
        if not self._armed_delete:
            self._armed_delete = True
            self.say(html.escape(t("Click Delete again to delete the rule", self.lang)), error=True)
            return
        try:
            self.services.rule_editor.delete(self.original, user=who)
        except (KeyError, RuleError) as exc:
            self.say(html.escape(str(exc)), error=True)
            return
        names = [r.name for r in self.services.alarms.rules]
        self.pick.options = self._rule_options(names)
        self.pick.value = names[0] if names else NEW
        self.load()
        self.say(html.escape(t("deleted", self.lang)))

    async def on_test(self) -> None:
        try:
            rule = RuleEditor.build(self.spec())
        except RuleError as exc:
            self.say("<br>".join(f"<b>{html.escape(w)}</b>: {html.escape(m)}" for w, m in exc.problems), error=True)
            return
        end = now_ns()
        start = end - RANGES[self.range.value] * 10**9
        self.result.object = f"<i>{t('Replaying history…', self.lang)}</i>"
        result = await backtest_on_history(rule, self.services.store, start, end, max_series=8)
        summary = result["summary"]
        rows = "".join(
            f"<tr><td>{html.escape(e.key)}</td><td>{fmt_time(e.start_ns, self.lang, self.tz)}</td>"
            f"<td>{human_duration(e.duration_s) if e.duration_s is not None else t('still active', self.lang)}</td>"
            f"<td>{html.escape(e.message)}</td></tr>" for e in summary["episodes"][:200])
        self.result.object = (
            f"<div class='vigie-backtest'><b>{summary['count']}</b> {t('alarms', self.lang)} · "
            f"{summary['per_day']:.2f} {t('per day', self.lang)} · {result['readings']} {t('readings', self.lang)} · "
            f"{html.escape(', '.join(result['series']) or t('no series', self.lang))}"
            f"<table class='table table-sm'><tr><th>{t('Series', self.lang)}</th><th>{t('Time', self.lang)}</th>"
            f"<th>{t('Duration', self.lang)}</th><th>{t('Message', self.lang)}</th></tr>{rows}</table></div>")
        self.plot.object = self._overlay(result, end)

    @staticmethod
    def _overlay(result: dict[str, Any], end: int) -> Any:
        curves = [hv.Curve((np.array([p[0] for p in pts], dtype="datetime64[ns]"), [p[1] for p in pts]),
                           "time", "value", label=key)
                  for key, pts in result["points"].items() if pts]
        spans = [hv.VSpan(np.datetime64(e.start_ns, "ns"), np.datetime64(e.end_ns or end, "ns")).opts(
                 color="#c62828", alpha=0.2) for e in result["summary"]["episodes"][:500]]
        if not curves:
            return None
        return hv.Overlay([*curves, *spans]).opts(responsive=True, height=300, legend_position="top_left")

    def view(self) -> list[Any]:
        lang = self.lang
        return [pn.pane.Markdown(f"## {t('Alarm rules', lang)}"),
                pn.Row(self.pick, self.kind), self.matched, self.form,
                pn.Row(self.save, self.delete), self.status,
                pn.pane.Markdown(f"### {t('Test on history', lang)}"),
                pn.Row(self.range, self.test), self.result, self.plot]


def alarm_rules_page(services: PageServices, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's rule editor."""
    lang = session_lang()
    editor = RuleEditorView(services, lang, auth)
    return page(services, "/alarms", t("Alarm rules", lang), *editor.view(), lang=lang,
                identity=auth.page_identity())
