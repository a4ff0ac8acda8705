"""Log in through a city's identity provider (OpenID Connect), beside local accounts.

Why not Panel's OAuth providers: they replace Bokeh's ``auth_provider`` as
a whole, and Vigie's one provider (:mod:`app.web.auth`) must also admit API
tokens, signed embed links and the anonymous wall display. So the provider
here only *starts a session*: once the identity provider says who the user
is, they get the same login cookie as a local user, and every check after
that is the same one.

The flow is the authorization code flow with PKCE (S256), a ``state`` bound
to the browser by a short-lived signed cookie, and a ``nonce`` checked in the
ID token. The ID token's signature is verified with the provider's published
keys (PyJWT), and its issuer, audience and expiry are checked. The user's
role comes from a claim (``groups`` by default, or any dotted path such as
``realm_access.roles``) through ``role_map``: the highest mapped role wins;
a user with no mapped group gets ``default_role`` or is refused. The role is
taken again at every login, so the identity provider stays the source of
truth. A local account of the same name is never taken over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import itsdangerous
import tornado.httpclient
import tornado.web

from app.web.access import Role
from app.web.login import LoginHandler, local_next
from app.web.oidc_spec import OidcSpec

if TYPE_CHECKING:
    from app.alarms.journal import Journal
    from app.web.auth import WebAuth

log = logging.getLogger(__name__)

STATE_COOKIE = "vigie_oidc"
STATE_MAX_AGE_S = 600  # the user has ten minutes at the identity provider
JWKS_REFRESH_S = 60.0  # an unknown key id fetches the keys again, at most this often
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OidcRefused(Exception):
    """The login cannot go on; the message is for the user and the audit log (no secret in it)."""


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcClient:
    """One configured identity provider: its discovered endpoints and keys, cached."""

    def __init__(self, spec: OidcSpec, client_secret: str | None, secret: bytes) -> None:
        self.spec = spec
        self.client_secret = client_secret
        self._state = itsdangerous.URLSafeTimedSerializer(secret, salt="vigie-oidc-state")
        self._meta: dict[str, Any] | None = None
        self._jwks: Any = None  # jwt.PyJWKSet
        self._jwks_at = 0.0

    # -- the provider's documents ----------------------------------------------------------------------
    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await tornado.httpclient.AsyncHTTPClient().fetch(url, request_timeout=10, **kwargs)
        except tornado.httpclient.HTTPClientError as exc:
            body = exc.response.body.decode("utf-8", "replace")[:300] if exc.response else ""
            raise OidcRefused(f"the identity provider answered {exc.code} at {url}: {body}") from None
        except OSError as exc:
            raise OidcRefused(f"the identity provider cannot be reached at {url}: {exc}") from None
        try:
            doc = json.loads(response.body)
        except ValueError:
            raise OidcRefused(f"the identity provider's answer at {url} is not JSON") from None
        if not isinstance(doc, dict):
            raise OidcRefused(f"the identity provider's answer at {url} is not a JSON object")
        return doc

    async def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            url = self.spec.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = await self._get_json(url)
            if meta.get("issuer", "").rstrip("/") != self.spec.issuer.rstrip("/"):
                raise OidcRefused(f"the provider at {url} says its issuer is {meta.get('issuer')!r}, "
                                  f"not {self.spec.issuer!r}")
            missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)]
            if missing:
                raise OidcRefused(f"the provider's configuration at {url} lacks {', '.join(missing)}")
            self._meta = meta
        return self._meta

    async def _key(self, kid: str | None) -> Any:
        import jwt

        for attempt in range(2):
            if self._jwks is None or (attempt and time.monotonic() - self._jwks_at > JWKS_REFRESH_S):
                meta = await self.metadata()
                try:
                    self._jwks = jwt.PyJWKSet.from_dict(await self._get_json(meta["jwks_uri"]))
                except jwt.PyJWTError as exc:  # an empty or unusable key set
                    raise OidcRefused(f"the provider's signing keys cannot be used: {exc}") from None
                self._jwks_at = time.monotonic()
            keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
            if keys:
                return keys[0]
        raise OidcRefused(f"the ID token is signed with a key the provider does not publish ({kid})")

    # -- the flow --------------------------------------------------------------------------------------
    def redirect_uri(self, request: Any) -> str:
        base = self.spec.public_url.rstrip("/") if self.spec.public_url else f"{request.protocol}://{request.host}"
        return base + "/login/oidc/callback"

    async def start(self, handler: tornado.web.RequestHandler, next_url: str, secure: bool = False) -> str:
        """Set the state cookie; return the provider's authorization URL to send the browser to."""
        meta = await self.metadata()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        handler.set_cookie(STATE_COOKIE, self._state.dumps([state, nonce, verifier, next_url]),
                           path="/login/oidc", httponly=True, samesite="Lax",
                           secure=secure or handler.request.protocol == "https", expires_days=None)
        query = {
            "response_type": "code", "client_id": self.spec.client_id,
            "redirect_uri": self.redirect_uri(handler.request),
            "scope": " ".join(self.spec.scopes), "state": state, "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()), "code_challenge_method": "S256",
        }
        sep = "&" if "?" in meta["authorization_endpoint"] else "?"
        return meta["authorization_endpoint"] + sep + urllib.parse.urlencode(query)

    def read_state(self, handler: tornado.web.RequestHandler) -> tuple[str, str, str, str]:
        """Return (state, nonce, verifier, next) from the browser's state cookie; raise OidcRefused."""
        raw = handler.get_cookie(STATE_COOKIE)
        handler.clear_cookie(STATE_COOKIE, path="/login/oidc")
        if not raw:
            raise OidcRefused("the login was not started from this browser, or took too long: start again")
        try:
            state, nonce, verifier, next_url = self._state.loads(raw, max_age=STATE_MAX_AGE_S)
        except (itsdangerous.BadData, ValueError):
            raise OidcRefused("the login took too long or its state is not ours: start again") from None
        return state, nonce, verifier, next_url

    async def finish(self, handler: tornado.web.RequestHandler, code: str, nonce: str,
                     verifier: str) -> tuple[str, Role, dict[str, Any]]:
        """Exchange the code; verify the ID token; return (user name, role, claims)."""
        import jwt

        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri(handler.request), "code_verifier": verifier,
                "client_id": self.spec.client_id}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.client_secret:
            quote = urllib.parse.quote
            pair = f"{quote(self.spec.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        tokens = await self._get_json(meta["token_endpoint"], method="POST", headers=headers,
                                      body=urllib.parse.urlencode(form))
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused("the identity provider returned no ID token")
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcRefused(f"the ID token is not a JWT: {exc}") from None
        algorithms = [a for a in meta.get("id_token_signing_alg_values_supported", ["RS256"]) if a in _ASYMMETRIC]
        if header.get("alg") not in algorithms:
            raise OidcRefused(f"the ID token's algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(id_token, key.key, algorithms=algorithms, audience=self.spec.client_id,
                                issuer=meta["issuer"], leeway=60,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise OidcRefused(f"the ID token was refused: {exc}") from None
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise OidcRefused("the ID token's nonce does not match this login")
        if _claim(claims, self.spec.roles_claim) is None and meta.get("userinfo_endpoint") and \
                isinstance(tokens.get("access_token"), str):
            info = await self._get_json(meta["userinfo_endpoint"],
                                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
            if info.get("sub") == claims["sub"]:
                claims = {**info, **claims}
        name = _claim(claims, self.spec.username_claim)
        if not isinstance(name, str) or not name:
            raise OidcRefused(f"the ID token has no {self.spec.username_claim!r} claim to name the user")
        return name, self.role_of(claims), claims

    def role_of(self, claims: dict[str, Any]) -> Role:
        """Return the highest role the user's groups map to (or the default); raise OidcRefused."""
        groups = _claim(claims, self.spec.roles_claim)
        if isinstance(groups, str):
            groups = groups.split()
        elif not isinstance(groups, list):  # a number, true, an object: no group
            groups = []
        roles = [Role.parse(self.spec.role_map[g]) for g in (groups or []) if isinstance(g, str)
                 and g in self.spec.role_map]
        if roles:
            return max(roles)
        if self.spec.default_role:
            return Role.parse(self.spec.default_role)
        raise OidcRefused("none of your groups gives a role in Vigie: ask an administrator")


class OidcLoginHandler(tornado.web.RequestHandler):
    """``GET /login/oidc``: send the browser to the identity provider."""

    def initialize(self, client: OidcClient, cookie_secure: str = "auto") -> None:
        self.client = client
        self.cookie_secure = cookie_secure  # server.cookie_secure: "always" behind a TLS-terminating proxy

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        try:
            url = await self.client.start(self, local_next(self.get_argument("next", "/")[:2000]),
                                          secure=self.cookie_secure == "always")
        except OidcRefused as exc:
            log.warning("single sign-on cannot start: %s", exc)
            self.set_status(502)
            self.finish({"error": str(exc)})
            return
        self.redirect(url)


class OidcCallbackHandler(LoginHandler):
    """``GET /login/oidc/callback``: check what the provider sent, start a Vigie session, go on to ``next``."""

    def initialize(self, auth: WebAuth, journal: Journal, client: OidcClient) -> None:  # type: ignore[override]
        super().initialize(auth, journal, throttle=None, sso_label=client.spec.label)  # type: ignore[arg-type]
        self.client = client

    async def get(self) -> None:  # type: ignore[override]
        ip = self.request.remote_ip or "?"
        try:
            state, nonce, verifier, next_url = self.client.read_state(self)
            if not hmac.compare_digest(self.get_argument("state", ""), state):
                raise OidcRefused("the answer does not belong to this login (state mismatch): start again")
            if self.get_argument("error", None):
                raise OidcRefused(f"the identity provider refused: {self.get_argument('error')[:100]} "
                                  f"{self.get_argument('error_description', '')[:200]}".strip())
            code = self.get_argument("code", "")
            if not code:
                raise OidcRefused("the identity provider sent no authorization code")
            name, role, _claims = await self.client.finish(self, code, nonce, verifier)
            user = self.auth.accounts.external_login(name, role, self.client.spec.issuer)
        except (OidcRefused, ValueError) as exc:
            self.journal.note("login_failed", user="", comment=f"from {ip} via single sign-on: {exc}",
                              category="audit")
            log.info("single sign-on login refused from %s: %s", ip, exc)
            self.form(401, str(exc), error=True)
            return
        self.auth.set_session_cookie(self, self.auth.accounts.start_session(user.name))
        self.journal.note("login", user=user.name, comment=f"from {ip} as {user.role.name} via single sign-on "
                                                          f"({self.client.spec.issuer})", category="audit")
        self.redirect(local_next(next_url))
