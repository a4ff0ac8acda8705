"""Dashboards: the list, one dashboard live, and its editor.

The editor is shown only to a user whose role may edit layouts (analyst or
admin), and every action that writes checks the session's login again on
the server side (a forged websocket message reaches the same check). Saves,
deletes and restores go to the audit log with the difference. Edits work on a copy of
the layout: drag and resize on the grid, add a widget from the palette,
configure one through a form generated from its parameters, remove it; then
save (the previous version is kept), save as, undo, restore, delete.
"""

from __future__ import annotations

import contextlib
import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import panel as pn
import param

from app.api import camera_frame_url
from app.dashboard.alarm_style import coloured_limits
from app.dashboard.dashboard import Dashboard
from app.dashboard.generate import generate_for_device, generate_for_site
from app.dashboard.layouts import LayoutNameError, LayoutStore, slugify
from app.dashboard.spec import LayoutSpec, LoadedLayout, WidgetSpec, title_in, unique_id
from app.dashboard.view import WidgetContext
from app.i18n import fmt_time, t
from app.pages.forms import form_widgets
from app.pages.shell import page, session_arg, session_lang
from app.web.access import Forbidden, allowed, explain, require
from app.web.access_api import embed_urls
from app.web.audit import audit

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth


DELETE_CONFIRM_MS = 5000  # how long an armed Delete waits for its second click
UNDO_STEPS = 100  # edits of one session that Undo can take back


def widget_context(services: PageServices, lang: str) -> WidgetContext:
    """Return what widgets of this services may read."""
    return WidgetContext(live=services.live, store=services.store, lang=lang, tz=services.timezone,
                         cameras=services.cameras,
                         alarms=services.alarms if services.alarms.rules else None,
                         limits=coloured_limits(services.alarms) if services.alarms.rules else None,
                         tile_url=services.tile_url,
                         image_url=camera_frame_url,
                         extra={"catalogue": set(services.live.keys())})


def spec_form(spec: WidgetSpec, series_options: list[str], lang: str = "en") -> pn.Param:
    """Return a form for a widget spec, with a searchable series picker."""
    widgets: dict[str, Any] = {}
    series_param = spec.param["series"] if "series" in spec.param else None
    if isinstance(series_param, param.List):
        # A picker offers only its options and silently drops any other value: the widget's own series (a
        # table's "*" or "dam-*/level" patterns) must be among them, and a pattern kind gets the usual ones.
        options = list(dict.fromkeys([*spec.series, *series_options]))
        if "pattern" in (series_param.doc or "").lower():
            devices = sorted({k.split("/", 1)[0] for k in series_options})
            metrics = sorted({k.split("/", 1)[1] for k in series_options if "/" in k})
            options = list(dict.fromkeys([*spec.series, "*", *(f"{d}/*" for d in devices),
                                          *(f"*/{m}" for m in metrics), *series_options]))
        widgets["series"] = {"type": pn.widgets.MultiChoice, "options": options, "search_option_limit": 50}
    elif series_param is not None:
        widgets["series"] = {"type": pn.widgets.AutocompleteInput, "options": series_options,
                             "case_sensitive": False, "search_strategy": "includes", "min_characters": 1}
    params = [p for p in spec.keys() if p not in ("x", "y", "w", "h")]
    return pn.Param(spec, parameters=params, widgets=form_widgets(spec, params, lang, widgets), show_name=False,
                    sizing_mode="stretch_width")


class DashboardEditor:
    """One session's dashboard page: the live grid and, when allowed, the editor."""

    def __init__(self, services: PageServices, layouts: LayoutStore, name: str, lang: str, auth: WebAuth) -> None:
        self.services = services
        self.layouts = layouts
        self.name = name
        self.lang = lang
        self.auth = auth
        self.editing_allowed = allowed(auth.page_identity(), "layouts:edit")
        self._disarm: Any = None  # the pending timeout that takes back an armed Delete
        self._delete_prompt = ""
        # This session's edits, each the whole working layout (a few kB): Undo / Redo walk them.
        self._past: list[dict[str, Any]] = []
        self._future: list[dict[str, Any]] = []
        self._shown: dict[str, Any] | None = None  # the working layout as last recorded
        self._settling = False  # the grid just drawn has not reported its state yet
        self.dashboard: Dashboard | None = None
        self.problems = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self.message = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vigie-message"])
        self.grid_holder = pn.Column(sizing_mode="stretch_width", margin=0)
        self.toolbar = self._toolbar() if self.editing_allowed else None
        self.side = pn.Column(sizing_mode="stretch_width", visible=False, css_classes=["vigie-editor-form"])
        self.panel = pn.Column(*(x for x in (self.toolbar, self.message, self.problems, self.side, self.grid_holder)
                                 if x is not None), sizing_mode="stretch_width")
        self.reload()

    # -- rendering --------------------------------------------------------
    def reload(self) -> None:
        """Load the layout from its file and render it (still editable in edit mode: after undo, restore)."""
        editing = self.toolbar is not None and self.edit_toggle.value
        self._render(self.layouts.load(self.name), editable=editing)

    def _render(self, loaded: LoadedLayout, editable: bool = False) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        self.loaded = loaded
        self.dashboard = Dashboard(loaded, widget_context(self.services, self.lang), editable=editable,
                                   pulse=self.services.pulse)
        self.dashboard.start()
        self.grid_holder[:] = [self.dashboard.grid]
        # A drag or a resize is an edit too. The grid reports its state once as soon as it is drawn (GridStack
        # may have packed it): that first report is where this render starts, not an edit.
        self._settling = editable
        if editable and isinstance(self.dashboard.grid, pn.GridStack):
            self.dashboard.grid.param.watch(lambda _e: self._on_grid_state(), "state")
        problems = loaded.problems + self.dashboard.unknown_series()
        self.problems.object = "<br>".join(html.escape(p) for p in problems)
        self.problems.visible = bool(problems)
        if self.toolbar is not None:
            self.widget_select.options = [w.id for w in loaded.spec.widgets]

    def _working(self) -> LayoutSpec:
        assert self.dashboard is not None
        return self.dashboard.current_spec()

    def _rerender(self, spec: LayoutSpec) -> None:
        self._render(LoadedLayout(self.name, spec, []), editable=True)

    def _check(self) -> str:
        """Check, now, that the session's user may edit layouts (raise Forbidden); return how to name them."""
        return require(self.auth.page_identity(), "layouts:edit").label

    def _audit(self, kind: str, who: str, name: str, before: Any = None, after: Any = None) -> None:
        audit(self.services.journal, kind, who, f"layouts/{name}.yaml", before=before, after=after)

    def _file_spec(self, name: str) -> dict | None:
        try:
            return self.layouts.load(name).spec.to_spec()
        except (LayoutNameError, FileNotFoundError):
            return None

    def _say(self, text: str, ok: bool = True) -> None:
        color = "#2e7d32" if ok else "#c62828"
        self.message.object = f"<span style='color:{color}'>{html.escape(text)}</span>"

    # -- toolbar ----------------------------------------------------------
    def _toolbar(self) -> pn.FlexBox:
        lang = self.lang
        self.edit_toggle = pn.widgets.Toggle(label=t("Edit", lang), width=90, css_classes=["vigie-edit"])
        self.save_button = pn.widgets.Button(label=t("Save", lang), color="primary", width=90,
                                             disabled=True, css_classes=["vigie-save"])
        self.save_as_name = pn.widgets.TextInput(placeholder=t("new-name", lang), width=140,
                                                 css_classes=["vigie-save-as-name"])
        self.save_as_button = pn.widgets.Button(label=t("Save as", lang), width=110)
        self.undo_edit_button = pn.widgets.Button(label="↶ " + t("Undo", lang), width=90, disabled=True,
                                                  css_classes=["vigie-undo"])
        self.redo_button = pn.widgets.Button(label="↷ " + t("Redo", lang), width=90, disabled=True,
                                             css_classes=["vigie-redo"])
        self.undo_button = pn.widgets.Button(label=t("Undo save", lang), width=130, css_classes=["vigie-undo-save"])
        self.delete_button = pn.widgets.Button(label=t("Delete", lang), color="danger", width=90)
        self.versions = pn.widgets.Select(label="", options=[], width=220, css_classes=["vigie-versions"])
        self.restore_button = pn.widgets.Button(label=t("Restore", lang), width=90)
        # English names a kind as the YAML files and the docs do (its type); other languages by its label.
        kinds = WidgetSpec.kinds()
        self.kind_select = pn.widgets.Select(label="", options={
            (t(kinds[k].label, lang) if lang != "en" and kinds[k].label else k): k for k in sorted(kinds)},
                                             width=170,
                                             css_classes=["vigie-kind"])
        self.add_button = pn.widgets.Button(label=t("Add widget", lang), width=120, css_classes=["vigie-add"])
        self.widget_select = pn.widgets.Select(label="", options=[], width=140, css_classes=["vigie-widget-select"])
        self.configure_button = pn.widgets.Button(label="⚙", width=40)
        self.remove_button = pn.widgets.Button(label=t("Remove", lang), width=90)
        self.edit_toggle.param.watch(self._on_edit, "value")
        self.save_button.on_click(lambda e: self._guard(self.save))
        self.save_as_button.on_click(lambda e: self._guard(self.save_as, self.save_as_name.value))
        self.undo_button.on_click(lambda e: self._guard(self.undo))
        self.undo_edit_button.on_click(lambda e: self._guard(self.undo_edit))
        self.redo_button.on_click(lambda e: self._guard(self.redo_edit))
        self.delete_button.on_click(lambda e: self._guard(self.delete))
        self.restore_button.on_click(lambda e: self._guard(self.restore, self.versions.value))
        self.add_button.on_click(lambda e: self._guard(self.add_widget, self.kind_select.value))
        self.configure_button.on_click(lambda e: self._guard(self.configure, self.widget_select.value))
        self.remove_button.on_click(lambda e: self._guard(self.remove_widget, self.widget_select.value))
        extra: list[Any] = []
        if allowed(self.auth.page_identity(), "users:manage"):  # an admin makes the portal's embed link here
            self.embed_button = pn.widgets.Button(label=t("Embed link", lang), width=120,
                                                  css_classes=["vigie-embed-link"])
            self.embed_button.on_click(lambda e: self._guard(self.make_embed))
            extra.append(self.embed_button)
        self._refresh_versions()
        # Only "Edit" until edit mode: an operator watching the dashboard sees no Delete next to it.
        self.edit_controls = [self.undo_edit_button, self.redo_button, self.save_button, self.save_as_name,
                              self.save_as_button, self.undo_button,
                              self.versions, self.restore_button, self.delete_button, self.kind_select,
                              self.add_button, self.widget_select, self.configure_button, self.remove_button,
                              *extra]
        for control in self.edit_controls:
            control.visible = False
        # Wraps on narrow screens: a row wider than the window widened the whole page, grid included.
        return pn.FlexBox(self.edit_toggle, *self.edit_controls, flex_wrap="wrap", align_items="center",
                          sizing_mode="stretch_width", css_classes=["vigie-toolbar"])

    def _guard(self, action, *args) -> None:
        try:
            action(*args)
        except (Forbidden, LayoutNameError, FileExistsError, FileNotFoundError, ValueError) as exc:
            self._say(explain(exc, self.lang), ok=False)

    def _refresh_versions(self) -> None:
        # Milliseconds: two saves within a second are two versions, not one label hiding the other.
        self.versions.options = {
            fmt_time(int(v.saved_at.timestamp() * 1e9), self.lang, self.services.timezone, millis=True): v.id
            for v in self.layouts.versions(self.name)} if self.layouts.exists(self.name) else {}

    def _on_edit(self, event: param.parameterized.Event) -> None:
        if event.new:
            self._check()
            self._rerender(self._working())
            self._forget_edits()
        else:
            self.reload()
        self.save_button.disabled = not event.new
        for control in self.edit_controls:
            control.visible = event.new

    # -- this session's edits: undo / redo ---------------------------------
    def _forget_edits(self) -> None:
        """Start a new history from what the grid shows (entering edit mode, after a reload from the file)."""
        self._past.clear()
        self._future.clear()
        self._shown = self._working().to_spec() if self.dashboard is not None else None
        self._sync_undo_buttons()

    def _on_grid_state(self) -> None:
        if self._settling:
            self._settling = False
            if self._shown is not None:
                self._shown = self._working().to_spec()
            return
        self._track()

    def _track(self) -> None:
        """Record the working layout as a step of the session's history when it changed since the last one."""
        if self._shown is None or self.dashboard is None:
            return
        now = self._working().to_spec()
        if now != self._shown:
            self._past.append(self._shown)
            del self._past[:-UNDO_STEPS]
            self._future.clear()
            self._shown = now
        self._sync_undo_buttons()

    def _sync_undo_buttons(self) -> None:
        if self.toolbar is not None:
            self.undo_edit_button.disabled = not self._past
            self.redo_button.disabled = not self._future

    def _step(self, back: bool) -> None:
        self._check()
        self._track()  # a move not yet recorded is the step taken back first
        source, target = (self._past, self._future) if back else (self._future, self._past)
        if not source or self._shown is None:
            self._say(t("Nothing to undo" if back else "Nothing to redo", self.lang), ok=False)
            return
        target.append(self._shown)
        self._shown = source.pop()
        self._rerender(LayoutSpec.from_spec(self._shown))
        self.side.visible = False  # a form open on a widget that the step removed would edit nothing
        self._sync_undo_buttons()
        self._say(t("Undone" if back else "Redone", self.lang), ok=True)

    def undo_edit(self) -> None:
        """Take back this session's last edit (a widget added, changed, removed, moved or resized)."""
        self._step(back=True)

    def redo_edit(self) -> None:
        """Make again the edit Undo took back."""
        self._step(back=False)

    # -- actions (each checks the server allows editing) ---------------------
    def save(self) -> None:
        """Write the layout as the grid shows it now."""
        who = self._check()
        spec = self._working()
        before = self._file_spec(self.name)
        self.layouts.save(self.name, spec)
        self._audit("layout_saved", who, self.name, before, spec.to_spec())
        self._refresh_versions()
        self._say(t("Saved", self.lang) + f": layouts/{self.name}.yaml")

    def save_as(self, new_name: str) -> None:
        """Save a copy under a new name."""
        who = self._check()
        new_name = slugify(new_name or "")
        if self.layouts.exists(new_name):
            raise FileExistsError(t("a layout named {name} exists already", self.lang).format(name=repr(new_name)))
        self.layouts.save(new_name, self._working())
        self._audit("layout_saved", who, new_name, None, self._working().to_spec())
        self._say(t("Saved", self.lang) + f": layouts/{new_name}.yaml")

    def undo(self) -> None:
        """Go back, in the file, to the version before the last save."""
        who = self._check()
        before = self._file_spec(self.name)
        if self.layouts.undo(self.name):
            self._audit("layout_undone", who, self.name, before, self._file_spec(self.name))
            self.reload()
            self._forget_edits()
            self._refresh_versions()
            self._say(t("Undone", self.lang) + f": layouts/{self.name}.yaml")
        else:
            self._say(t("Nothing to undo", self.lang), ok=False)

    def restore(self, version_id: str | None) -> None:
        """Make a previous version current."""
        who = self._check()
        if version_id:
            before = self._file_spec(self.name)
            self.layouts.restore(self.name, version_id)
            self._audit("layout_restored", who, self.name, before, self._file_spec(self.name))
            self.reload()
            self._forget_edits()
            self._refresh_versions()
            self._say(t("Restored", self.lang) + f": layouts/{self.name}.yaml ({version_id})")

    def delete(self) -> None:
        """Delete, after a second click on the same button."""
        who = self._check()
        armed = "✔ " + t("Delete", self.lang) + "?"
        if self.delete_button.label != armed:
            self.delete_button.label = armed
            self._say(t("Click again within 5 s to delete", self.lang) + f" layouts/{self.name}.yaml", ok=False)
            self._delete_prompt = self.message.object
            doc = pn.state.curdoc
            if doc is not None:  # a session's page (no document in a unit test: then it stays armed)
                self._disarm = doc.add_timeout_callback(self._disarm_delete, DELETE_CONFIRM_MS)
            return
        self._cancel_disarm()
        self.delete_button.label = t("Delete", self.lang)
        before = self._file_spec(self.name)
        self.layouts.delete(self.name)
        self._audit("layout_deleted", who, self.name, before, None)
        self._say(f"layouts/{self.name}.yaml " + t("deleted", self.lang))
        self.grid_holder[:] = [pn.pane.HTML("<a href='/dashboards'>← " + t("Dashboards", self.lang) + "</a>")]

    def _disarm_delete(self) -> None:
        """The second click did not come in time: Delete asks again next time."""
        self._disarm = None
        self.delete_button.label = t("Delete", self.lang)
        if self.message.object == self._delete_prompt:  # not a newer message
            self.message.object = ""

    def _cancel_disarm(self) -> None:
        if self._disarm is not None and pn.state.curdoc is not None:
            with contextlib.suppress(ValueError):  # it may have run already
                pn.state.curdoc.remove_timeout_callback(self._disarm)
        self._disarm = None

    def make_embed(self) -> None:
        """Make a signed, read-only embed link to this layout for a portal (a year; revoked on the Access page)."""
        who = require(self.auth.page_identity(), "users:manage").name
        link, token = self.services.accounts.create_embed(self.name, None, days=365, created_by=who)
        audit(self.services.journal, "embed_created", who, f"embed {link.id} of {link.layout}")
        url = embed_urls(link, token)["url"]
        self.message.object = (f"<span style='color:#2e7d32'>{html.escape(t('Embed link created', self.lang))} "
                               f"({html.escape(t('a year; revoke it on the Access page', self.lang))}):</span> "
                               f"<code class='vigie-embed-url' style='user-select:all'>{html.escape(url)}</code>")

    def add_widget(self, kind: str) -> None:
        """Open the form of a new widget of a kind; it joins the grid, below the others, on OK.

        Kinds with a required field (a value tile's series, a webcam's camera) cannot be drawn before it
        is filled: the new widget is a draft until its form is valid.
        """
        self._check()
        spec = self._working()
        y = max([w.y + w.h for w in spec.widgets] + [0])
        draft = WidgetSpec.kinds()[kind](id=unique_id(kind, {w.id for w in spec.widgets}), title=kind,
                                         x=0, y=y, w=6, h=3)
        self.configure(draft.id, draft=draft)

    def configure(self, widget_id: str | None, draft: WidgetSpec | None = None) -> None:
        """Show the form of one widget (or of a new one, ``draft``); OK re-renders the grid with it."""
        self._check()
        widget = draft if draft is not None else self._working().widget(widget_id or "")
        if widget is None:
            return
        # A draft is in no layout yet: its form edits it directly. A placed widget is edited on a copy.
        clone = draft if draft is not None else type(widget).from_spec(widget.to_spec())
        form = spec_form(clone, self.services.live.keys(), self.lang)
        apply = pn.widgets.Button(label="OK", color="primary", width=80, css_classes=["vigie-apply"])

        def on_apply(_event) -> None:
            self._guard(self._apply, widget.id, clone, draft is not None)

        apply.on_click(on_apply)
        self.side[:] = [pn.pane.HTML(f"<b>{html.escape(widget.id)}</b>"), form, apply]
        self.side.visible = True

    def _apply(self, widget_id: str, clone: WidgetSpec, new: bool = False) -> None:
        self._check()
        checked = type(clone).from_spec(clone.to_spec())  # validates (raises SpecError, a ValueError)
        self._track()
        spec = self._working()
        if new:
            spec.widgets = [*spec.widgets, checked]
        else:
            spec.widgets = [checked if w.id == widget_id else w for w in spec.widgets]
        self.side.visible = False
        self._rerender(spec)
        self._track()

    def remove_widget(self, widget_id: str | None) -> None:
        """Remove a widget from the working layout (saved on Save)."""
        self._check()
        self._track()
        spec = self._working()
        spec.widgets = [w for w in spec.widgets if w.id != widget_id]
        self._rerender(spec)
        self._track()


def dashboard_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's dashboard page (``/dashboard?name=...``)."""
    lang = session_lang()
    name = session_arg("name") or ""
    identity = auth.page_identity()
    site = session_arg("site")
    if not name and site:  # the overview's link for a site no layout is made for: one generated from its series
        return generated_site_page(services, site, lang, identity)
    try:
        editor = DashboardEditor(services, layouts, name, lang, auth)
    except (LayoutNameError, FileNotFoundError) as exc:
        return page(services, "/dashboards", t("Dashboards", lang),
                    pn.pane.Alert(html.escape(str(exc)), alert_type="danger"),
                    lang=lang, identity=identity)
    title = title_in(editor.loaded.spec, lang)
    pn.state.on_session_destroyed(lambda _ctx: editor.dashboard.stop() if editor.dashboard else None)
    heading = pn.pane.HTML(f"<h2>{html.escape(title)}</h2>", sizing_mode="stretch_width")
    return page(services, "/dashboards", title, heading, editor.panel,
                lang=lang, busy_indicator=False, identity=identity)


def generated_site_page(services: PageServices, site: str, lang: str, identity: Any) -> pn.template.BootstrapTemplate:
    """Return a site's dashboard generated from the series it has now (read-only; "Generate dashboard" saves one)."""
    spec = generate_for_site(services.live, site)
    dashboard = Dashboard(LoadedLayout(slugify(f"site-{site}"), spec, []), widget_context(services, lang),
                          pulse=services.pulse)
    dashboard.start()
    pn.state.on_session_destroyed(lambda _ctx: dashboard.stop())
    heading = pn.pane.HTML(f"<h2 class='vigie-generated-site'>{html.escape(spec.title)}</h2><small>"
                           f"{html.escape(t('Generated from the site’s series: no layout names this site', lang))}"
                           "</small>", sizing_mode="stretch_width")
    return page(services, "/dashboards", spec.title, heading, dashboard.grid, lang=lang, busy_indicator=False,
                identity=identity)


def dashboards_list_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build the list of dashboards, with "generate dashboard" for those who may edit layouts."""
    lang = session_lang()
    identity = auth.page_identity()
    items = []
    for name in layouts.names():
        loaded = layouts.load(name)
        items.append(f"<li><a href='/dashboard?name={quote(name)}' class='vigie-dashboard-link'>"
                     f"{html.escape(title_in(loaded.spec, lang))}</a> "
                     f"<small>layouts/{html.escape(name)}.yaml</small></li>")
    listing = pn.pane.HTML("<ul>" + "".join(items) + "</ul>", sizing_mode="stretch_width")
    body: list[pn.viewable.Viewable] = [pn.pane.Markdown(f"## {t('Dashboards', lang)}"), listing]
    if allowed(identity, "layouts:edit"):
        devices = sorted({k.split("/", 1)[0] for k in services.live.keys()})
        sites = sorted({v.tags["site"] for v in services.live.latest() if "site" in v.tags})
        target = pn.widgets.Select(label="", options=[f"device:{d}" for d in devices] + [f"site:{s}" for s in sites],
                                   width=240)
        go = pn.widgets.Button(label=t("Generate dashboard", lang), width=200)
        result = pn.pane.HTML("")

        def generate(_event) -> None:
            try:
                who = require(auth.page_identity(), "layouts:edit").label
            except Forbidden as exc:
                result.object = html.escape(exc.explain(lang))
                return
            if not target.value:
                return
            kind, _, what = target.value.partition(":")
            spec = generate_for_device(services.live, what) if kind == "device" else generate_for_site(
                services.live, what)
            name = slugify(f"{kind}-{what}")
            layouts.save(name, spec)
            audit(services.journal, "layout_generated", who, f"layouts/{name}.yaml", after=spec.to_spec())
            result.object = f"<a href='/dashboard?name={name}'>layouts/{name}.yaml</a>"

        go.on_click(generate)
        body.append(pn.Row(target, go, result))
    return page(services, "/dashboards", t("Dashboards", lang), *body, lang=lang, identity=identity)
