"""The base of Vigie's JSON handlers: the runtime they read, answers as JSON, no cookies (so no XSRF)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import tornado.web

if TYPE_CHECKING:
    from app.dashboard.layouts import LayoutStore
    from app.runtime import Runtime


class JsonHandler(tornado.web.RequestHandler):
    """A REST handler of the runtime (and the layouts, for the handlers that edit them)."""

    def initialize(self, runtime: Runtime, layouts: LayoutStore | None = None) -> None:
        self.runtime = runtime
        self.layouts = layouts

    def check_xsrf_cookie(self) -> None:
        """JSON API without cookies."""

    def answer(self, status: int, doc: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc, default=str))
