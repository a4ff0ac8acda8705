"""Who may do what: the roles, the actions, and the one check every handler and page goes through.

Every state-changing action names itself (``"alarms:ack"``, ``"layouts:edit"``)
and :func:`allowed` answers for an :class:`Identity`: a logged-in user (by
role), an API token (its user's role *and* its scopes: a token never does
more than its owner may), a signed embed link (view one layout, nothing
else) or the anonymous visitor of a public wall display (view, when the
server allows it). The table is here once; the REST handlers, the pages'
callbacks, the OpenAPI document and the Users page read it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from app.i18n import N_, t


class Role(enum.IntEnum):
    """A user's role; each includes the rights of those below it."""

    viewer = 1
    operator = 2
    analyst = 3
    admin = 4

    @classmethod
    def parse(cls, text: str) -> Role:
        """Return the role named ``text``, or raise ValueError listing the roles."""
        try:
            return cls[text.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; roles: {', '.join(r.name for r in cls)}") from None


ACTIONS: dict[str, Role] = {
    "view": Role.viewer,  # pages, and reading the API: layouts, latest values, history, alarms, the journal
    "alarms:ack": Role.operator,  # acknowledge, shelve
    "devices:maintenance": Role.operator,
    "layouts:edit": Role.analyst,  # save, save as, delete, generate
    "rules:edit": Role.analyst,  # rules in shadow mode; putting one live is rules:enable
    "rules:enable": Role.admin,
    "devices:edit": Role.admin,
    "notify:edit": Role.admin,  # contacts, rotas, policies, test sends
    "users:manage": Role.admin,  # users, everybody's tokens, embed links
    "health:detail": Role.admin,  # sources, subscriptions, last errors, rejected payloads
    "audit:read": Role.admin,
    "metrics:read": Role.admin,  # Prometheus: a token with only the ``metrics`` scope
    "ingest": Role.operator,  # sending readings: a gateway's token with the ``ingest`` scope
}
"""Each action and the least role that may do it."""

SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"view"}),
    "ingest": frozenset({"ingest"}),
    "alarms:ack": frozenset({"view", "alarms:ack", "devices:maintenance"}),
    "write": frozenset({"view", "layouts:edit", "rules:edit"}),
    "metrics": frozenset({"metrics:read"}),
    "admin": frozenset(ACTIONS),
}
"""What an API token's scopes let it do (within its owner's role)."""


def scope_problem(scopes: list[str]) -> str | None:
    """Return what is wrong with a token's scope list, or None."""
    if not scopes:
        return f"a token needs at least one scope: {', '.join(SCOPES)}"
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        return f"unknown scope {unknown[0]!r}; scopes: {', '.join(SCOPES)}"
    return None


@dataclass(frozen=True)
class Identity:
    """Who is asking: a user (by session), an API token, an embed link, or an anonymous visitor."""

    name: str
    role: Role | None  # None: rights come only from ``actions`` (embed, anonymous)
    kind: str = "user"  # user | token | embed | anonymous
    scopes: frozenset[str] | None = None  # a token's; None for a session (its role is the limit)
    layout: str | None = None  # an embed's one layout ...
    widget: str | None = None  # ... and, optionally, its one widget
    actions: frozenset[str] = field(default_factory=frozenset)  # rights not from a role

    @property
    def label(self) -> str:
        """Return how the journal and the page header name this identity."""
        return self.name if self.kind == "user" else f"{self.name} ({self.kind})"


ANONYMOUS = Identity("anonymous", None, kind="anonymous", actions=frozenset({"view"}))
"""The visitor of a server with ``server.anonymous_read: true`` (a public wall display)."""


def allowed(identity: Identity | None, action: str) -> bool:
    """Return whether ``identity`` may do ``action`` (an unknown action is refused, never allowed)."""
    if identity is None or action not in ACTIONS:
        return False
    if identity.role is None:
        return action in identity.actions
    if identity.role < ACTIONS[action]:
        return False
    return identity.scopes is None or any(action in SCOPES[s] for s in identity.scopes if s in SCOPES)


class Forbidden(PermissionError):
    """The identity may not do the action: the message says which and why (shown to the user)."""

    def __init__(self, identity: Identity | None, action: str) -> None:
        need = ACTIONS.get(action)
        if identity is None:
            self.why = (N_("log in first: {action} needs a login"), {"action": action})
        elif need is not None and identity.role is not None and identity.role >= need and identity.scopes is not None:
            self.why = (N_("{who} may not: the token's scopes ({scopes}) do not cover {action}"),
                        {"who": identity.label, "scopes": ", ".join(sorted(identity.scopes)), "action": action})
        else:
            self.why = (N_("{who} may not: {action} needs the {role} role"),
                        {"who": identity.label, "action": action, "role": need.name if need else "unknown"})
        super().__init__(self.why[0].format(**self.why[1]))  # English: the API's errors and the logs
        self.identity = identity
        self.action = action

    def explain(self, lang: str) -> str:
        """Return the message in ``lang`` (a page's), the role named as the pages name it."""
        text, args = self.why
        if "role" in args:
            args = {**args, "role": t(args["role"], lang)}
        return t(text, lang).format(**args)


def explain(exc: Exception, lang: str) -> str:
    """Return what a page says of an error: a refusal in ``lang``, any other error as it is."""
    return exc.explain(lang) if isinstance(exc, Forbidden) else str(exc)


def require(identity: Identity | None, action: str) -> Identity:
    """Return ``identity`` if it may do ``action``; raise :class:`Forbidden` otherwise."""
    if not allowed(identity, action):
        raise Forbidden(identity, action)
    assert identity is not None
    return identity
