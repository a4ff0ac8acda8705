"""The base of Vigie's JSON handlers: who asks, what they may do, answers as JSON.

Every REST handler names the action each of its methods performs
(:attr:`JsonHandler.actions`; reading is ``view``); :meth:`JsonHandler.prepare`
finds the caller (an API token, or a login cookie) before any body byte is
read and answers 401 (nobody, or a token unknown, revoked or expired) or 403
(not allowed) itself. A method not in the table needs the admin's
``users:manage``: a handler that forgets to declare is closed, not open.
A request authenticated by cookie must also carry the ``_xsrf`` token
(header ``X-XSRFToken``) to change anything; token requests carry no
cookie, so a foreign site cannot make a browser send one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import param
import tornado.web

from app.spec import Problem, Spec, SpecError
from app.web.access import Forbidden, Identity, allowed, require
from app.web.limits import load_json

if TYPE_CHECKING:
    from app.dashboard.layouts import LayoutStore
    from app.runtime import Runtime
    from app.web.auth import WebAuth

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
S = TypeVar("S", bound=Spec)


class PageQuery(Spec):
    """The window of a list: ``limit`` items from ``offset``."""

    limit = param.Integer(default=1000, bounds=(1, 10_000), doc="Items per page.")
    offset = param.Integer(default=0, bounds=(0, None), doc="Items to skip.")


def _problems(exc: SpecError) -> list[dict[str, str]]:
    return [{"where": p.where, "message": p.message} for p in exc.problems[:50]]


class JsonHandler(tornado.web.RequestHandler):
    """A REST handler of the runtime (and the layouts, for the handlers that edit them)."""

    actions: ClassVar[dict[str, str]] = {"GET": "view", "HEAD": "view"}
    identity: Identity | None = None
    window: PageQuery | None = None  # the page :meth:`page` answered, for handlers that describe it

    def initialize(self, runtime: Runtime, layouts: LayoutStore | None = None) -> None:
        self.runtime = runtime
        self.layouts = layouts

    @property
    def auth(self) -> WebAuth:
        return self.settings["vigie_auth"]

    def check_xsrf_cookie(self) -> None:
        """Tornado's automatic check is off here: :meth:`check_access` asks for it when a cookie was used."""

    def prepare(self) -> Any:
        if not self.check_access():
            return None
        return super().prepare()

    def check_access(self) -> bool:
        """Find the caller and check the method's action; answer 401/403 and return False to refuse."""
        action = self.actions.get(self.request.method or "", "users:manage")
        identity, how = self.auth.request_identity(self)
        if identity is not None and identity.kind == "anonymous" and not allowed(identity, action):
            identity = None  # a visitor of a public display who tries to act: the answer is "log in"
        if identity is None:
            self.set_header("WWW-Authenticate", 'Bearer realm="vigie"')
            self.refuse(401, {"error": "the token is unknown, revoked or expired" if how == "token"
                              else "log in, or send an API token: Authorization: Bearer vgt_..."})
            return False
        if how == "cookie" and self.request.method not in SAFE_METHODS:
            try:
                tornado.web.RequestHandler.check_xsrf_cookie(self)
            except tornado.web.HTTPError:
                self.refuse(403, {"error": "missing or wrong XSRF token (send the _xsrf cookie's value as the "
                                  "X-XSRFToken header), or use an API token"})
                return False
        if not allowed(identity, action):
            self.refuse(403, {"error": str(Forbidden(identity, action))})
            return False
        self.identity = identity
        return True

    def query_spec(self, cls: type[S]) -> S | None:
        """Return the query arguments as ``cls`` (the same spec the OpenAPI document shows), or answer 400."""
        data: dict[str, Any] = {}
        problems: list[Problem] = []
        for key in cls.keys():
            raw = self.get_query_argument(key, None, strip=False)
            if raw is None or raw == "":
                continue
            p = cls.param[key]
            try:
                if isinstance(p, param.Boolean):
                    if raw not in ("true", "false"):
                        raise ValueError(raw)
                    data[key] = raw == "true"
                elif isinstance(p, param.Integer):
                    data[key] = int(raw)
                elif isinstance(p, param.Number) and not isinstance(p, param.Selector):
                    data[key] = float(raw)
                else:
                    data[key] = raw
            except ValueError:
                problems.append(Problem((key,), f"expected {type(p).__name__.lower()}, got {raw[:40]!r}"))
        missing = [k for k in getattr(cls, "required", ()) if k not in data]
        problems += [Problem((k,), "missing (required)") for k in missing]
        try:
            if problems:
                raise SpecError(problems)
            return cls.from_spec(data)
        except SpecError as exc:
            self.answer(400, {"error": f"invalid query: {exc.problems[0]}", "problems": _problems(exc)})
            return None

    def body_spec(self, cls: type[S], body: bytes | None = None) -> S | None:
        """Return the JSON body as ``cls`` (every problem listed by field), or answer 400 and return None."""
        doc, problem = load_json(self.request.body if body is None else body or b"{}")
        if problem is not None:
            self.answer(400, {"error": f"body: {problem}"})
            return None
        missing = [k for k in getattr(cls, "required", ()) if not isinstance(doc, dict) or k not in doc]
        try:
            if missing:
                raise SpecError([Problem((k,), "missing (required)") for k in missing])
            return cls.from_spec(doc)
        except SpecError as exc:
            self.answer(400, {"error": f"invalid body: {exc.problems[0]}", "problems": _problems(exc)})
            return None

    def page(self, items: list[Any]) -> list[Any] | None:
        """Return one page of a list (``?limit=&offset=``), with ``X-Total-Count`` and a ``Link`` to the next."""
        window = self.window = self.query_spec(PageQuery)
        if window is None:
            return None
        total = len(items)
        self.set_header("X-Total-Count", str(total))
        end = window.offset + window.limit
        if end < total:
            self.set_header("Link", f'<{self.request.path}?limit={window.limit}&offset={end}>; rel="next"')
        return items[window.offset:end]

    def require(self, action: str) -> bool:
        """Check a further action (one that depends on the body); answer 403 and return False to refuse."""
        try:
            require(self.identity, action)
        except Forbidden as exc:
            self.answer(403, {"error": str(exc)})
            return False
        return True

    @property
    def who(self) -> str:
        """Return how the journal names the caller."""
        return self.identity.label if self.identity is not None else "anonymous"

    def refuse(self, status: int, doc: dict[str, Any]) -> None:
        """Answer an error before the body is read, and close the connection (the unread body is not wanted)."""
        skip = getattr(self, "_skip_body", None)  # a streaming handler (LimitedBodyHandler): drop the body unread
        if skip is not None:
            self._chunks = []
            skip()
        self.set_header("Connection", "close")
        self.answer(status, doc)

    def answer(self, status: int, doc: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, default=str))
