"""``server.oidc``: the config of single sign-on through an OpenID Connect provider (see app.web.oidc).

Apart from the flow so that loading a config stays light (no Tornado, no Panel).
"""

from __future__ import annotations

import urllib.parse

import param

from app.spec import Spec
from app.web.access import Role

_ROLES = [r.name for r in Role]


def _loopback(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "") in ("127.0.0.1", "::1", "localhost")


class OidcSpec(Spec):
    """``server.oidc``: log in through an OpenID Connect identity provider (Keycloak, Entra ID, Authentik...)."""

    issuer = param.String(default=None, allow_None=True,
                          doc="The provider's issuer URL; its /.well-known/openid-configuration is read.")
    client_id = param.String(default=None, allow_None=True, doc="Vigie's client id at the provider.")
    client_secret_env = param.String(default=None, allow_None=True,
                                     doc="Variable holding the client secret (none: a public client, PKCE only).")
    scopes = param.List(default=["openid", "profile", "email"], item_type=str, doc="Scopes asked for.")
    username_claim = param.String(default="preferred_username", doc="Claim giving the Vigie user name.")
    roles_claim = param.String(default="groups",
                               doc="Claim listing the user's groups or roles (a list or a space-separated string; "
                                   "a dotted path for nested claims, e.g. realm_access.roles).")
    role_map = param.Dict(default={}, doc="Group -> Vigie role (viewer, operator, analyst, admin); a user gets "
                                          "the highest role among their groups.")
    default_role = param.Selector(default=None, objects=[None, *_ROLES],
                                  doc="Role of a user none of whose groups is mapped (none: refused).")
    label = param.String(default="Log in with single sign-on", doc="The button on the login page.")
    public_url = param.String(default=None, allow_None=True,
                              doc="This server's address as browsers see it (https://vigie.example.org), for the "
                                  "redirect URI behind a proxy; none: taken from each request.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        for key in ("issuer", "client_id"):
            if not getattr(self, key):
                problems.append(((key,), "missing (required)"))
        if self.issuer and not (self.issuer.startswith("https://") or
                                (self.issuer.startswith("http://") and _loopback(self.issuer))):
            problems.append((("issuer",), "must be an https:// URL (plain http only on the loopback, for tests)"))
        if "openid" not in self.scopes:
            problems.append((("scopes",), "must include openid"))
        for group, role in (self.role_map or {}).items():
            if role not in _ROLES:
                problems.append((("role_map", group), f"unknown role {role!r} (one of {', '.join(_ROLES)})"))
        if not self.role_map and self.default_role is None:
            problems.append((("role_map",), "map at least one group to a role, or set default_role"))
        return problems
