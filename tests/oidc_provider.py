"""A small but real OpenID Connect provider for tests, on a loopback port of its own.

It speaks the authorization code flow as Keycloak or Entra ID do: a
discovery document, an authorization endpoint (which "logs in" whoever the
test says, at once), a token endpoint checking the client's secret, the
redirect URI and the PKCE verifier, and the published signing keys. Its ID
tokens are RS256 JWTs signed with a key made for the run. ``misbehave``
makes it send what a hostile or broken provider would, so the tests can see
Vigie refuse it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import jwt
import tornado.web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.servers import free_port


@dataclass
class Login:
    """Who the provider says logs in next."""

    name: str = "alice"
    groups: list[str] = field(default_factory=lambda: ["water-operators"])


class FakeOidcProvider:
    """Start with :meth:`start`, stop with :meth:`stop`; ``issuer`` is its URL."""

    def __init__(self, client_id: str = "vigie", client_secret: str = "s3cret-client") -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/city"
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.next_login = Login()
        self.misbehave: str | None = None  # "audience", "signature", "nonce", "expired"
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- tokens ----------------------------------------------------------------------------------------
    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": f"sub-{grant['login'].name}", "aud": self.client_id,
                  "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  "preferred_username": grant["login"].name, "groups": grant["login"].groups}
        key = self.key
        if self.misbehave == "audience":
            claims["aud"] = "somebody-else"
        elif self.misbehave == "nonce":
            claims["nonce"] = "not-the-one"
        elif self.misbehave == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 1800
        elif self.misbehave == "signature":
            key = self.other_key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    def jwks(self) -> dict[str, Any]:
        if self.misbehave == "nokeys":
            return {"keys": []}
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    # -- server ----------------------------------------------------------------------------------------
    def app(self) -> tornado.web.Application:
        provider = self
        base = "/realms/city"

        class Discovery(tornado.web.RequestHandler):
            def get(self) -> None:
                self.finish({"issuer": provider.issuer, "authorization_endpoint": provider.issuer + "/auth",
                             "token_endpoint": provider.issuer + "/token", "jwks_uri": provider.issuer + "/certs",
                             "id_token_signing_alg_values_supported": ["RS256"],
                             "response_types_supported": ["code"], "subject_types_supported": ["public"]})

        class Authorize(tornado.web.RequestHandler):
            def get(self) -> None:
                args = {k: self.get_argument(k) for k in ("client_id", "redirect_uri", "state", "nonce",
                                                           "code_challenge", "code_challenge_method", "scope")}
                if args["client_id"] != provider.client_id or args["code_challenge_method"] != "S256":
                    raise tornado.web.HTTPError(400)
                if provider.misbehave == "deny":
                    self.redirect(args["redirect_uri"] + "?" + urllib.parse.urlencode(
                        {"state": args["state"], "error": "access_denied", "error_description": "user said no"}))
                    return
                code = secrets.token_urlsafe(16)
                provider.codes[code] = {**args, "login": provider.next_login}
                self.redirect(args["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code,
                                                                                   "state": args["state"]}))

        class Token(tornado.web.RequestHandler):
            def post(self) -> None:
                provider.token_requests += 1
                scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
                pair = base64.b64decode(value).decode() if scheme == "Basic" else ":"
                if pair != f"{provider.client_id}:{provider.client_secret}":
                    self.set_status(401)
                    self.finish({"error": "invalid_client"})
                    return
                grant = provider.codes.pop(self.get_body_argument("code", ""), None)
                verifier = self.get_body_argument("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
                if (grant is None or grant["redirect_uri"] != self.get_body_argument("redirect_uri", "")
                        or challenge.decode() != grant["code_challenge"]):
                    self.set_status(400)
                    self.finish({"error": "invalid_grant"})
                    return
                self.finish({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                             "expires_in": 300, "id_token": provider.id_token(grant)})

        class Certs(tornado.web.RequestHandler):
            def get(self) -> None:
                self.finish(provider.jwks())

        return tornado.web.Application([
            (base + "/.well-known/openid-configuration", Discovery), (base + "/auth", Authorize),
            (base + "/token", Token), (base + "/certs", Certs)])

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        server = self.app().listen(self.port, address="127.0.0.1")
        self._ready.set()
        self._loop.run_forever()
        server.stop()
        self._loop.close()

    def start(self) -> FakeOidcProvider:
        self._thread = threading.Thread(target=self._run, name="fake-oidc", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the fake OIDC provider did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
