"""REST handlers of access: who am I, users, API tokens, embed links; every change audited.

- ``GET /api/v1/me``: the caller's name, role, kind and what they may do.
- ``/api/v1/users`` (admins): list, create (``POST {name, role, password}``);
  ``/api/v1/users/<name>``: ``PATCH {role?, disabled?, password?}``, ``DELETE``.
- ``/api/v1/tokens``: a user's own tokens (an admin's ``?user=`` for anybody's);
  ``POST {label, scopes, days?, user?}`` answers the token text once;
  ``DELETE /api/v1/tokens/<id>`` revokes (one's own, or any for an admin).
- ``/api/v1/embeds`` (admins): list, ``POST {layout, widget?, days, label?}``
  answers the iframe URL (signed, read-only, expiring);
  ``DELETE /api/v1/embeds/<id>`` revokes it.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import param

from app.spec import Spec
from app.web.access import ACTIONS, SCOPES, Role, allowed
from app.web.accounts import AccountError, EmbedLink
from app.web.audit import audit
from app.web.json_api import JsonHandler, PageQuery
from app.web.openapi import Op

ROLES = [r.name for r in Role]


class UserBody(Spec):
    """A new user."""

    required = ("name", "password")
    name = param.String(default="", doc="The login name.")
    role = param.Selector(default="viewer", objects=ROLES)
    password = param.String(default="", doc="At least 10 characters.")


class UserPatch(Spec):
    """A change to a user: any of role, disabled, password."""

    role = param.Selector(default=None, objects=[None, *ROLES], allow_None=True)
    disabled = param.Boolean(default=None, allow_None=True)
    password = param.String(default=None, allow_None=True)


class TokenBody(Spec):
    """A new API token."""

    required = ("scopes",)
    label = param.String(default="api", doc="What it is for.")
    scopes = param.List(default=["read"], item_type=str, bounds=(1, len(SCOPES)), doc=", ".join(SCOPES))
    days = param.Number(default=None, allow_None=True, bounds=(0.00001, 3660), doc="Expires after (none: never).")
    user = param.String(default=None, allow_None=True, doc="Whose (admins only; default: the caller's).")


class TokensQuery(PageQuery):
    """Whose tokens."""

    user = param.String(default=None, allow_None=True, doc="A user's (admins), or * for everybody's.")


class EmbedBody(Spec):
    """A new embed link."""

    required = ("layout",)
    layout = param.String(default="")
    widget = param.String(default=None, allow_None=True, doc="One widget of it (none: the whole layout).")
    days = param.Number(default=365, bounds=(0.00001, 3660))
    label = param.String(default="")


class EmbedsQuery(PageQuery):
    """Which layout's links."""

    layout = param.String(default=None, allow_None=True)



class _AccessHandler(JsonHandler):
    def note(self, kind: str, target: str, detail: str = "", before: Any = None, after: Any = None) -> None:
        audit(self.runtime.journal, kind, self.who, target, origin=self.request.remote_ip or "", detail=detail,
              before=before, after=after)

    def listing(self, items: list[dict[str, Any]]) -> None:
        """Answer one page of a list as ``{items, total, offset, next_offset}``."""
        chunk = self.page(items)
        if chunk is None:
            return
        end = self.window.offset + len(chunk)
        self.answer(200, {"items": chunk, "total": len(items), "offset": self.window.offset,
                          "next_offset": end if end < len(items) else None})


class MeHandler(_AccessHandler):
    """``GET /api/v1/me``: who the caller is and what they may do."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Who the caller is (name, role, token scopes) and what they may do")}

    def get(self) -> None:
        identity = self.identity
        assert identity is not None
        self.answer(200, {"name": identity.name, "kind": identity.kind,
                          "role": identity.role.name if identity.role else None,
                          "scopes": sorted(identity.scopes) if identity.scopes is not None else None,
                          "may": sorted(a for a in ACTIONS if allowed(identity, a))})


class UsersHandler(_AccessHandler):
    """``GET /api/v1/users`` and ``POST`` (admins)."""

    actions: ClassVar[dict[str, str]] = {"GET": "users:manage", "POST": "users:manage"}
    api: ClassVar[dict[str, Op]] = {"GET": Op("Users (a page of them)", query=PageQuery),
                                    "POST": Op("Add a user", body=UserBody, ok=201, example={
                                        "name": "alice", "role": "operator", "password": "a-long-password"})}

    def get(self) -> None:
        self.listing([u.public() for u in self.runtime.accounts.user_list()])

    def post(self) -> None:
        if (doc := self.body_spec(UserBody)) is None:
            return
        try:
            user = self.runtime.accounts.add_user(doc.name, doc.role, doc.password)
        except (AccountError, ValueError) as exc:
            self.answer(400, {"error": str(exc)})
            return
        self.note("user_added", f"user {user.name}", after={"role": user.role.name})
        self.answer(201, user.public())


class UserHandler(_AccessHandler):
    """``PATCH /api/v1/users/<name>`` ``{role?, disabled?, password?}`` and ``DELETE`` (admins)."""

    actions: ClassVar[dict[str, str]] = {"GET": "users:manage", "PATCH": "users:manage", "DELETE": "users:manage"}
    api: ClassVar[dict[str, Op]] = {"GET": Op("One user"),
                                    "PATCH": Op("Change a user's role, state or password (their sessions end)",
                                                body=UserPatch),
                                    "DELETE": Op("Delete a user with their sessions and tokens")}

    def get(self, name: str) -> None:
        user = next((u for u in self.runtime.accounts.user_list() if u.name == name), None)
        if user is None:
            self.answer(404, {"error": f"no user named {name[:100]!r}"})
            return
        self.answer(200, user.public())

    def patch(self, name: str) -> None:
        if (doc := self.body_spec(UserPatch)) is None:
            return
        accounts = self.runtime.accounts
        try:
            before = next((u.public() for u in accounts.user_list() if u.name == name), None)
            if before is None:
                raise KeyError(name)
            if doc.role is not None:
                accounts.set_role(name, doc.role)
            if doc.disabled is not None:
                accounts.set_disabled(name, doc.disabled)
            if doc.password is not None:
                accounts.set_password(name, doc.password)
        except KeyError:
            self.answer(404, {"error": f"no user named {name[:100]!r}"})
            return
        except (AccountError, ValueError) as exc:
            self.answer(400, {"error": str(exc)})
            return
        after = next(u.public() for u in accounts.user_list() if u.name == name)
        self.note("user_changed", f"user {name}", detail="password changed" if doc.password is not None else "",
                  before={k: before[k] for k in ("role", "disabled")},
                  after={k: after[k] for k in ("role", "disabled")})
        self.answer(200, after)

    def delete(self, name: str) -> None:
        try:
            self.runtime.accounts.delete_user(name)
        except AccountError as exc:
            self.answer(404 if "no user" in str(exc) else 400, {"error": str(exc)})
            return
        self.note("user_deleted", f"user {name}")
        self.answer(200, {"deleted": name})


class TokensHandler(_AccessHandler):
    """``GET /api/v1/tokens`` (one's own; ``?user=`` for an admin) and ``POST`` (for oneself, or anybody: admin)."""

    actions: ClassVar[dict[str, str]] = {"GET": "view", "POST": "view"}
    api: ClassVar[dict[str, Op]] = {"GET": Op("One's own API tokens (admins: ?user=NAME or *)", query=TokensQuery),
                                    "POST": Op("Create an API token; its text is in this answer only",
                                               body=TokenBody, ok=201, example={
                                                   "label": "pump station gateway", "scopes": ["ingest"],
                                                   "days": 365})}

    def _for(self, user: str | None) -> str | None:
        """Return whose tokens are meant, or answer 403 and return None."""
        assert self.identity is not None
        if self.identity.kind not in ("user", "token"):
            self.answer(403, {"error": "only users have tokens"})
            return None
        if user in (None, "", self.identity.name):
            return self.identity.name
        return user if self.require("users:manage") else None

    def get(self) -> None:
        if (q := self.query_spec(TokensQuery)) is None:
            return
        user = q.user
        if user == "*":
            if not self.require("users:manage"):
                return
            tokens = self.runtime.accounts.token_list()
        else:
            if (owner := self._for(user)) is None:
                return
            tokens = self.runtime.accounts.token_list(owner)
        self.listing([t.public() for t in tokens])

    def post(self) -> None:
        if (doc := self.body_spec(TokenBody)) is None or (owner := self._for(doc.user)) is None:
            return
        expires = time.time_ns() + int(doc.days * 86400e9) if doc.days else None
        try:
            token, text = self.runtime.accounts.create_token(owner, doc.label, list(doc.scopes), expires)
        except AccountError as exc:
            self.answer(400, {"error": str(exc)})
            return
        self.note("token_created", f"token {token.id} of {owner}", detail=f"scopes {','.join(token.scopes)}")
        self.answer(201, {**token.public(), "token": text})


class TokenHandler(_AccessHandler):
    """``DELETE /api/v1/tokens/<id>``: revoke (one's own token; any, for an admin)."""

    actions: ClassVar[dict[str, str]] = {"DELETE": "view"}
    api: ClassVar[dict[str, Op]] = {"DELETE": Op("Revoke an API token (one's own; any, for an admin)")}

    def delete(self, id_: str) -> None:
        accounts = self.runtime.accounts
        token = accounts.token(id_)
        assert self.identity is not None
        if token is None:
            self.answer(404, {"error": f"no token {id_[:40]!r}"})
            return
        if token.user != self.identity.name and not self.require("users:manage"):
            return
        accounts.revoke_token(id_)
        self.note("token_revoked", f"token {id_} of {token.user}")
        self.answer(200, {"revoked": id_})


def embed_urls(link: EmbedLink, token: str) -> dict[str, str]:
    """Return the paths a portal frames for an embed link: the live embed, and (one widget) the light one."""
    path = f"/embed/{quote(link.layout)}" + (f"/{quote(link.widget)}" if link.widget else "")
    urls = {"url": f"{path}?{urlencode({'t': token})}"}
    if link.widget:
        urls["light_url"] = f"{path}?{urlencode({'t': token, 'mode': 'light'})}"
    return urls


class EmbedsHandler(_AccessHandler):
    """``GET /api/v1/embeds`` and ``POST {layout, widget?, days, label?}`` (admins)."""

    actions: ClassVar[dict[str, str]] = {"GET": "users:manage", "POST": "users:manage"}
    api: ClassVar[dict[str, Op]] = {"GET": Op("Embed links (a page of them)", query=EmbedsQuery),
                                    "POST": Op("Create a signed, expiring, read-only embed link for a layout or "
                                               "one widget", body=EmbedBody, ok=201, example={
                                                   "layout": "flood-dams", "widget": "dam-1-level", "days": 180})}

    def get(self) -> None:
        accounts = self.runtime.accounts
        if (q := self.query_spec(EmbedsQuery)) is None:
            return
        links = [e for e in accounts.embeds.values() if q.layout in (None, e.layout)]
        links.sort(key=lambda e: e.created_ns)
        self.listing([{**e.public(), **embed_urls(e, accounts.embed_token(e))} for e in links])

    def post(self) -> None:
        if (doc := self.body_spec(EmbedBody)) is None:
            return
        layout, widget, days = doc.layout, doc.widget, doc.days
        assert self.layouts is not None
        try:
            loaded = self.layouts.load(str(layout))
        except (ValueError, OSError):  # a name that cannot be one, or no such file: the same answer
            self.answer(400, {"error": f"no layout named {str(layout)[:80]!r}"})
            return
        if widget is not None and loaded.spec.widget(str(widget)) is None:
            self.answer(400, {"error": f"layout {layout!r} has no widget {str(widget)[:80]!r}"})
            return
        try:
            link, token = self.runtime.accounts.create_embed(str(layout), widget and str(widget), days=float(days),
                                                             created_by=self.who, label=doc.label)
        except AccountError as exc:
            self.answer(400, {"error": str(exc)})
            return
        self.note("embed_created", f"embed {link.id} of {link.layout}" + (f"/{link.widget}" if link.widget else ""),
                  detail=f"expires {time.strftime('%Y-%m-%d %H:%M', time.gmtime(link.expires_ns / 1e9))} UTC")
        self.answer(201, {**link.public(), **embed_urls(link, token)})


class EmbedHandler(_AccessHandler):
    """``DELETE /api/v1/embeds/<id>``: revoke an embed link (the portal's iframe stops showing it)."""

    actions: ClassVar[dict[str, str]] = {"DELETE": "users:manage"}
    api: ClassVar[dict[str, Op]] = {"DELETE": Op("Revoke an embed link: the portal's iframe stops showing it")}

    def delete(self, id_: str) -> None:
        try:
            link = self.runtime.accounts.revoke_embed(id_)
        except AccountError as exc:
            self.answer(404, {"error": str(exc)})
            return
        self.note("embed_revoked", f"embed {link.id} of {link.layout}")
        self.answer(200, {"revoked": id_})


