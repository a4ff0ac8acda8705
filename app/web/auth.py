"""Who is asking, for every request: REST handlers, Panel pages, Panel's websocket, embeds.

One :class:`WebAuth` per server resolves an :class:`~app.web.access.Identity`
from what a request carries, in this order:

1. ``Authorization: Bearer vgt_...``: an API token (REST only);
2. the ``vigie_session`` cookie (signed by Tornado with the server secret):
   a login session;
3. on ``/embed-app`` an embed link's signed token ``?t=`` (an iframe on the
   portal's site gets no cookie of ours); on the embed's websocket, the same
   token read back from Bokeh's session token, which Bokeh signs with the
   server secret (``sign_sessions``), so it cannot be forged;
4. the anonymous visitor, when ``server.anonymous_read`` allows it.

Panel pages and Panel's websocket are covered through Bokeh's
``auth_provider`` hook (:meth:`WebAuth.provider`): an unknown visitor is
sent to ``/login`` before any session is built, and a websocket without an
identity is refused. A page then reads its identity with
:meth:`WebAuth.page_identity` and checks each action again when it runs
(:func:`app.web.access.require`): a hidden button is not a check.
"""

from __future__ import annotations

import logging
from typing import Any

import panel as pn
import tornado.httputil
import tornado.web
from bokeh.server.auth_provider import AuthProvider
from bokeh.util.token import check_token_signature, get_token_payload

from app.web.access import ANONYMOUS, Identity, allowed
from app.web.accounts import AccountStore

log = logging.getLogger(__name__)

COOKIE = "vigie_session"
LOGIN_URL = "/login"
EMBED_ARG = "t"
# Needed by a login page before anyone is logged in, and by an embed in a portal's iframe (no cookie there).
_PUBLIC_PREFIXES = ("/static/", "/login", "/logout", "/favicon.ico")


LOCAL_ADDRESSES = frozenset({"127.0.0.1", "::1"})
_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded")


def is_local(request: tornado.httputil.HTTPServerRequest) -> bool:
    """Return whether a request comes from this machine itself, not through a reverse proxy on it.

    The operator's own probes (``/health`` detail, ``/metrics`` from a local Prometheus agent) need no login.
    """
    return request.remote_ip in LOCAL_ADDRESSES and not any(h in request.headers for h in _PROXY_HEADERS)


def _arg(args: dict[str, list[Any]] | None, name: str) -> str | None:
    values = (args or {}).get(name)
    if not values:
        return None
    raw = values[0]
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class WebAuth:
    """Resolves identities for one server (see the module docstring)."""

    def __init__(self, accounts: AccountStore, secret: bytes, *, anonymous_read: bool = False,
                 cookie_secure: str = "auto", session_s: float = 12 * 3600) -> None:
        self.accounts = accounts
        self.secret = secret
        self.anonymous_read = anonymous_read
        self.cookie_secure = cookie_secure
        self.session_s = session_s

    # -- cookies ---------------------------------------------------------------------------------------
    def set_session_cookie(self, handler: tornado.web.RequestHandler, session: str) -> None:
        """Set the login cookie: signed, HTTP-only, SameSite=Lax, Secure over HTTPS (or always, by config)."""
        https = handler.request.protocol == "https"
        secure = self.cookie_secure == "always" or (self.cookie_secure == "auto" and https)
        handler.set_signed_cookie(COOKIE, session, expires_days=None, path="/", httponly=True, samesite="Lax",
                                  secure=secure)

    def session_of(self, handler: tornado.web.RequestHandler) -> str | None:
        """Return the session id the request's signed cookie carries, or None."""
        raw = handler.get_signed_cookie(COOKIE, max_age_days=max(1, int(self.session_s // 86400) + 1))
        return raw.decode() if raw else None

    def _session_from_cookie_text(self, text: str | None) -> str | None:
        if not text:
            return None
        raw = tornado.web.decode_signed_value(self.secret, COOKIE, text,
                                              max_age_days=max(1, int(self.session_s // 86400) + 1))
        return raw.decode() if raw else None

    # -- identities ------------------------------------------------------------------------------------
    def bearer(self, handler: tornado.web.RequestHandler) -> str | None:
        header = handler.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def request_identity(self, handler: tornado.web.RequestHandler) -> tuple[Identity | None, str]:
        """Return who a REST request comes from and how (``token``, ``cookie``, ``anonymous`` or ``none``).

        A request that names a token is judged by it alone: a wrong token is not
        rescued by a cookie or the anonymous mode.
        """
        token = self.bearer(handler)
        if token is not None:
            return self.accounts.token_identity(token), "token"
        identity = self.accounts.session_identity(self.session_of(handler))
        if identity is not None:
            return identity, "cookie"
        return (ANONYMOUS, "anonymous") if self.anonymous_read else (None, "none")

    def embed_request_identity(self, handler: tornado.web.RequestHandler, layout: str,
                               widget: str | None) -> Identity | None:
        """Return who may see an embed of ``layout``/``widget``: a login, the anonymous mode, or the link's ``?t=``."""
        identity, how = self.request_identity(handler)
        if identity is not None:
            return identity
        return self.accounts.embed_identity(handler.get_query_argument(EMBED_ARG, None), layout, widget)

    def probe_or_allowed(self, handler: tornado.web.RequestHandler, action: str) -> tuple[bool, Identity | None]:
        """Return whether a client on this machine or a caller allowed ``action`` asks, and the caller if known.

        The operator's own probes (``/health`` detail, a local Prometheus agent on ``/metrics``) need no login.
        """
        if is_local(handler.request):
            return True, None
        identity, _ = self.request_identity(handler)
        return allowed(identity, action), identity

    def page_identity(self) -> Identity | None:
        """Return who the current Panel session belongs to (called while a page builds or acts)."""
        cookies = pn.state.cookies or {}
        identity = self.accounts.session_identity(self._session_from_cookie_text(cookies.get(COOKIE)))
        if identity is not None:
            return identity
        args = pn.state.session_args or {}
        embed = self.accounts.embed_identity(_arg(args, EMBED_ARG), _arg(args, "layout"), _arg(args, "widget"))
        if embed is not None:
            return embed
        return ANONYMOUS if self.anonymous_read else None

    def _handshake_identity(self, handler: tornado.web.RequestHandler) -> Identity | None:
        """Return the identity of a page GET or of its websocket (Bokeh's ``get_user``)."""
        path = handler.request.path
        if path.startswith(_PUBLIC_PREFIXES):
            return ANONYMOUS
        identity = self.accounts.session_identity(self.session_of(handler))
        if identity is not None:
            return identity
        if path.startswith("/embed-app"):
            args: dict[str, list[Any]] | None = handler.request.arguments
            if path.rstrip("/").endswith("/ws"):
                args = self._bokeh_token_arguments(handler)
            embed = self.accounts.embed_identity(_arg(args, EMBED_ARG), _arg(args, "layout"), _arg(args, "widget"))
            if embed is not None:
                return embed
        return ANONYMOUS if self.anonymous_read else None

    def _bokeh_token_arguments(self, handler: tornado.web.RequestHandler) -> dict[str, list[Any]] | None:
        """Return the page GET's query arguments from the Bokeh token a websocket offers (signed: unforgeable)."""
        protocols = [p.strip() for p in handler.request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if len(protocols) != 2 or protocols[0] != "bokeh":
            return None
        token = protocols[1]
        try:
            if not check_token_signature(token, secret_key=self.secret, signed=True):
                return None
            return get_token_payload(token).get("arguments")
        except Exception:  # a malformed token: no identity, refused like any other
            return None

    def provider(self) -> AuthProvider:
        """Return the Bokeh auth provider that guards every Panel page and websocket."""
        auth = self

        class VigieAuthProvider(AuthProvider):
            @property
            def get_user(self):  # type: ignore[override]
                return auth._handshake_identity

            @property
            def login_url(self) -> str:  # type: ignore[override]
                return LOGIN_URL

        return VigieAuthProvider()
