"""The Access page: one's own API tokens; for admins, users, embed links and the audit log.

Every button checks the session's login again on the server when it is
clicked (:func:`app.web.access.require`), and every change goes to the
audit log, as the REST API's do (:mod:`app.web.access_api`). A token's or a
link's secret text is shown once, right after it was made.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

import pandas as pd
import panel as pn

from app.dashboard.layouts import LayoutStore
from app.i18n import N_, event_label, fmt_time, t, tabulator_locale
from app.pages.shell import page, session_lang
from app.web.access import SCOPES, Forbidden, Role, allowed, explain, require
from app.web.access_api import embed_urls
from app.web.accounts import AccountError
from app.web.audit import audit

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.auth import WebAuth


class AccessView:
    """One session's Access page."""

    def __init__(self, services: PageServices, layouts: LayoutStore, auth: WebAuth, lang: str) -> None:
        self.services = services
        self.accounts = services.accounts
        self.layouts = layouts
        self.auth = auth
        self.lang = lang
        self.tz = services.timezone
        identity = auth.page_identity()
        self.admin = allowed(identity, "users:manage")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vigie-access-status"])
        # Tokens (one's own).
        self.tokens = pn.widgets.Tabulator(pd.DataFrame(), disabled=True,
                                           configuration=tabulator_locale(lang), show_index=False, height=200,
                                           sizing_mode="stretch_width", name="tokens")
        self.t_label = pn.widgets.TextInput(placeholder=t("What it is for", lang), width=200,
                                            css_classes=["vigie-token-label"])
        self.t_scopes = pn.widgets.MultiChoice(options=list(SCOPES), value=["read"], width=320,
                                               placeholder=t("Scopes", lang))
        self.t_days = pn.widgets.IntInput(value=365, start=1, end=3660, width=90)
        self.t_make = pn.widgets.Button(label=t("Create token", lang), color="primary")
        self.t_revoke_id = pn.widgets.Select(options=[], width=200)
        self.t_revoke = pn.widgets.Button(label=t("Revoke", lang), color="danger")
        self.t_make.on_click(lambda _e: self.act(self.make_token))
        self.t_revoke.on_click(lambda _e: self.act(self.revoke_token))
        if self.admin:
            self.users = pn.widgets.Tabulator(pd.DataFrame(), disabled=True,
                                              configuration=tabulator_locale(lang), show_index=False, height=220,
                                              sizing_mode="stretch_width", name="users")
            self.u_name = pn.widgets.TextInput(placeholder=t("User name", lang), width=160,
                                               css_classes=["vigie-user-name"])
            self.u_role = pn.widgets.Select(options={t(r.name, lang): r.name for r in Role}, value="viewer", width=120,
                                            css_classes=["vigie-role-pick"])
            self.u_password = pn.widgets.PasswordInput(placeholder=t("Password", lang), width=180)
            self.u_add = pn.widgets.Button(label=t("Add user", lang), color="primary")
            self.u_pick = pn.widgets.Select(options=[], width=160)
            self.u_set_role = pn.widgets.Button(label=t("Set role", lang))
            self.u_toggle = pn.widgets.Button(label=t("Disable / enable", lang))
            self.u_add.on_click(lambda _e: self.act(self.add_user))
            self.u_set_role.on_click(lambda _e: self.act(self.set_role))
            self.u_toggle.on_click(lambda _e: self.act(self.toggle_user))
            self.embeds = pn.widgets.Tabulator(pd.DataFrame(), disabled=True,
                                               configuration=tabulator_locale(lang), show_index=False, height=200,
                                               sizing_mode="stretch_width", name="embeds")
            self.e_layout = pn.widgets.Select(options=layouts.names(), width=180)
            self.e_widget = pn.widgets.Select(options=[""], width=180)
            self.e_days = pn.widgets.IntInput(value=365, start=1, end=3660, width=90)
            self.e_make = pn.widgets.Button(label=t("Create embed link", lang), color="primary")
            self.e_revoke_id = pn.widgets.Select(options=[], width=200)
            self.e_revoke = pn.widgets.Button(label=t("Revoke", lang), color="danger")
            self.e_layout.param.watch(lambda _e: self._widgets(), "value")
            self.e_make.on_click(lambda _e: self.act(self.make_embed))
            self.e_revoke.on_click(lambda _e: self.act(self.revoke_embed))
            self.audit = pn.widgets.Tabulator(pd.DataFrame(), disabled=True,
                                              configuration=tabulator_locale(lang), show_index=False, height=300,
                                              sizing_mode="stretch_width", name="audit", pagination="local",
                                              page_size=50)
            self._widgets()
        self.refresh()

    # -- what the tables show ----------------------------------------------------------------------------
    def _widgets(self) -> None:
        try:
            spec = self.layouts.load(self.e_layout.value).spec if self.e_layout.value else None
        except (ValueError, OSError):
            spec = None
        self.e_widget.options = ["", *(w.id for w in spec.widgets)] if spec else [""]

    def refresh(self) -> None:
        me = self.auth.page_identity()
        mine = self.accounts.token_list(me.name if me else "")
        lang = self.lang
        self.tokens.value = pd.DataFrame([{t("Id", lang): k.id, t("Label", lang): k.label,
                                           t("Scopes", lang): ", ".join(k.scopes),
                                           t("Expires", lang): fmt_time(k.expires_ns, lang, self.tz)
                                           if k.expires_ns else "–",
                                           t("State", lang): t(N_("revoked") if k.revoked_ns else N_("live"), lang)}
                                          for k in mine])
        self.t_revoke_id.options = [k.id for k in mine if k.revoked_ns is None]
        if not self.admin:
            return
        users = self.accounts.user_list()
        self.users.value = pd.DataFrame([{t("User name", lang): u.name, t("Role", lang): t(u.role.name, lang),
                                          t("State", lang): t(N_("disabled") if u.disabled else N_("active"), lang)}
                                         for u in users])
        self.u_pick.options = [u.name for u in users]
        links = sorted(self.accounts.embeds.values(), key=lambda e: e.created_ns)
        self.embeds.value = pd.DataFrame([{t("Id", lang): e.id, t("Layout", lang): e.layout,
                                           t("Widget", lang): e.widget or "",
                                           t("Expires", lang): fmt_time(e.expires_ns, lang, self.tz),
                                           t("By", lang): e.created_by,
                                           t("State", lang): t(N_("revoked") if e.revoked_ns else
                                                               N_("expired") if e.expires_ns < time.time_ns() else
                                                               N_("live"), lang)}
                                          for e in links])
        self.e_revoke_id.options = [e.id for e in links if e.revoked_ns is None]
        rows = self.services.journal.query(category="audit", limit=500)
        self.audit.value = pd.DataFrame([{t("Time", lang): fmt_time(r["time_ns"], lang, self.tz),
                                          t("Event", lang): event_label(r["kind"] or "", lang),
                                          t("By", lang): r["user"], t("What", lang): r["key"],
                                          t("Comment", lang): (r["comment"] or "")[:400]} for r in rows])

    # -- actions ----------------------------------------------------------------------------------------
    def say(self, text: str, error: bool = False, secret: str | None = None) -> None:
        colour = "#c62828" if error else "#2e7d32"
        extra = (f"<div><code class='vigie-secret' style='user-select:all'>{html.escape(secret)}</code> "
                 f"({html.escape(t('shown once: copy it now', self.lang))})</div>") if secret else ""
        self.status.object = f"<div style='color:{colour}'>{html.escape(text)}</div>{extra}"

    def act(self, action: Any) -> None:
        try:
            action()
        except (Forbidden, AccountError, ValueError) as exc:
            self.say(explain(exc, self.lang), error=True)
        self.refresh()

    def _who(self, action: str) -> str:
        return require(self.auth.page_identity(), action).name

    def make_token(self) -> None:
        who = self._who("view")
        days = self.t_days.value
        token, text = self.accounts.create_token(who, self.t_label.value.strip() or "page", list(self.t_scopes.value),
                                                 time.time_ns() + int(days * 86400e9) if days else None)
        audit(self.services.journal, "token_created", who, f"token {token.id} of {who}",
              detail=f"scopes {','.join(token.scopes)}")
        self.say(f"{t('Token created', self.lang)}: {token.id}", secret=text)

    def revoke_token(self) -> None:
        who = self._who("view")
        token = self.accounts.token(self.t_revoke_id.value or "")
        if token is None or (token.user != who and not allowed(self.auth.page_identity(), "users:manage")):
            raise AccountError(t("pick one of your tokens", self.lang))
        self.accounts.revoke_token(token.id)
        audit(self.services.journal, "token_revoked", who, f"token {token.id} of {token.user}")
        self.say(f"{t('Revoked', self.lang)}: {token.id}")

    def add_user(self) -> None:
        who = self._who("users:manage")
        user = self.accounts.add_user(self.u_name.value.strip(), self.u_role.value, self.u_password.value)
        self.u_password.value = ""
        audit(self.services.journal, "user_added", who, f"user {user.name}", after={"role": user.role.name})
        self.say(f"{t('Added', self.lang)}: {user.name} ({t(user.role.name, self.lang)})")

    def set_role(self) -> None:
        who = self._who("users:manage")
        name = self.u_pick.value or ""
        before = next((u.role.name for u in self.accounts.user_list() if u.name == name), None)
        user = self.accounts.set_role(name, self.u_role.value)
        audit(self.services.journal, "user_changed", who, f"user {name}", before={"role": before},
              after={"role": user.role.name})
        self.say(f"{name}: {t(user.role.name, self.lang)}")

    def toggle_user(self) -> None:
        who = self._who("users:manage")
        name = self.u_pick.value or ""
        current = next((u for u in self.accounts.user_list() if u.name == name), None)
        if current is None:
            raise AccountError(t("pick a user", self.lang))
        user = self.accounts.set_disabled(name, not current.disabled)
        audit(self.services.journal, "user_changed", who, f"user {name}", before={"disabled": current.disabled},
              after={"disabled": user.disabled})
        self.say(f"{name}: {t(N_('disabled') if user.disabled else N_('active'), self.lang)}")

    def make_embed(self) -> None:
        who = self._who("users:manage")
        link, token = self.accounts.create_embed(self.e_layout.value or "", self.e_widget.value or None,
                                                 days=float(self.e_days.value), created_by=who)
        audit(self.services.journal, "embed_created", who, f"embed {link.id} of {link.layout}")
        urls = embed_urls(link, token)
        self.say(f"{t('Embed link created', self.lang)}: {link.id}", secret=" ".join(urls.values()))

    def revoke_embed(self) -> None:
        who = self._who("users:manage")
        link = self.accounts.revoke_embed(self.e_revoke_id.value or "")
        audit(self.services.journal, "embed_revoked", who, f"embed {link.id} of {link.layout}")
        self.say(f"{t('Revoked', self.lang)}: {link.id}")

    def view(self) -> list[Any]:
        lang = self.lang
        body: list[Any] = [pn.pane.Markdown(f"## {t('Access', lang)}"), self.status,
                           pn.pane.Markdown(f"### {t('My API tokens', lang)}"), self.tokens,
                           pn.Row(self.t_label, self.t_scopes, self.t_days, self.t_make),
                           pn.Row(self.t_revoke_id, self.t_revoke)]
        if self.admin:
            body += [pn.pane.Markdown(f"### {t('Users', lang)}"), self.users,
                     pn.Row(self.u_name, self.u_role, self.u_password, self.u_add),
                     pn.Row(self.u_pick, self.u_set_role, self.u_toggle),
                     pn.pane.Markdown(f"### {t('Embed links', lang)}"), self.embeds,
                     pn.Row(self.e_layout, self.e_widget, self.e_days, self.e_make),
                     pn.Row(self.e_revoke_id, self.e_revoke),
                     pn.pane.Markdown(f"### {t('Audit log', lang)}"), self.audit]
        return body


def access_page(services: PageServices, layouts: LayoutStore, auth: WebAuth) -> pn.template.BootstrapTemplate:
    """Build one session's Access page."""
    lang = session_lang()
    view = AccessView(services, layouts, auth, lang)
    return page(services, "/access", t("Access", lang), *view.view(), lang=lang, identity=auth.page_identity())
