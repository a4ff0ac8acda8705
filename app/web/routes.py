"""Every HTTP route of Vigie beside Panel's pages, in one table; the OpenAPI document is read from it.

A :class:`Route` is written the way the document shows it
(``/api/v1/layouts/{name}``); its Tornado pattern is made from that, each
``{name}`` matching one path segment unless ``patterns`` says more
narrowly. The REST handlers' own ``actions`` and ``api`` tables say what
each method needs and takes (:mod:`app.web.openapi`).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import tornado.web

from app.api import (
    CameraFrameHandler,
    DevicesHandler,
    EnvelopeHandler,
    LatestHandler,
    LayoutHandler,
    LayoutsHandler,
)
from app.ingest.http import (
    CameraUploadHandler,
    InfluxV1WriteHandler,
    InfluxV2WriteHandler,
    LineProtocolHandler,
    ReadingsHandler,
)
from app.pages.embed import EmbedRedirect
from app.pages.language import LanguageHandler
from app.pages.light_embed import FragmentHandler
from app.web.access_api import (
    EmbedHandler,
    EmbedsHandler,
    MeHandler,
    TokenHandler,
    TokensHandler,
    UserHandler,
    UsersHandler,
)
from app.web.alarms import (
    AcknowledgeHandler,
    AlarmsHandler,
    BacktestHandler,
    JournalHandler,
    MaintenanceHandler,
    RuleHandler,
    RulesHandler,
    ShelveHandler,
)
from app.web.login import LoginHandler, LoginThrottle, LogoutHandler
from app.web.notify import AckLinkHandler, CascadesHandler, PolicyTestHandler, ReplyHandler
from app.web.oidc import OidcCallbackHandler, OidcClient, OidcLoginHandler
from app.web.openapi import document

if TYPE_CHECKING:
    from app.dashboard.layouts import LayoutStore
    from app.ingest.http import HttpSource
    from app.pages.light_embed import LightViews
    from app.runtime import Runtime
    from app.web.auth import WebAuth


@dataclass(frozen=True)
class Route:
    """One route: its documented path, its handler and what the handler is given."""

    path: str
    handler: type[tornado.web.RequestHandler]
    kwargs: dict[str, Any] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)  # {name}: a narrower regex than one path segment

    def tornado(self) -> tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]:
        """Return the Tornado rule: the path with each ``{name}`` as a capturing group."""
        regex = re.sub(r"\{([a-z_]+)\}", lambda m: f"({self.patterns.get(m.group(1), '[^/]+').strip('^$')})",
                       self.path)
        return regex, self.handler, self.kwargs


def table(runtime: Runtime, layouts: LayoutStore, auth: WebAuth, http_source: HttpSource,
          light: LightViews) -> list[Route]:
    """Return every route (the health and metrics handlers are added by the server, which owns them)."""
    api = {"runtime": runtime, "layouts": layouts}
    rt = {"runtime": runtime}
    oidc = oidc_client(runtime)
    routes = [
        Route("/login", LoginHandler, {"auth": auth, "journal": runtime.journal, "throttle": LoginThrottle(),
                                       "sso_label": oidc.spec.label if oidc else None}),
        Route("/logout", LogoutHandler, {"auth": auth, "journal": runtime.journal}),
        Route("/lang/{code}", LanguageHandler, patterns={"code": "[a-z]+"}),
        Route("/ack/{token}", AckLinkHandler, rt, {"token": "[A-Za-z0-9_.=-]+"}),
        Route("/api/v1/readings", ReadingsHandler, {"source": http_source}),
        Route("/api/v1/write", LineProtocolHandler, {"source": http_source}),
        Route("/write", InfluxV1WriteHandler, {"source": http_source}),  # InfluxDB 1.x's write API
        Route("/api/v2/write", InfluxV2WriteHandler, {"source": http_source}),  # InfluxDB 2.x's
        Route("/api/v1/cameras/{camera}", CameraUploadHandler, {"source": http_source, "cameras": runtime.cameras}),
        Route("/api/v1/cameras/{camera}/frames/{time_ns}", CameraFrameHandler, api, {"time_ns": "[0-9]+"}),
        Route("/api/v1/cameras/{camera}/latest", CameraFrameHandler, api),
        Route("/api/v1/devices", DevicesHandler, api),
        Route("/api/v1/latest", LatestHandler, api),
        Route("/api/v1/envelope", EnvelopeHandler, api),
        Route("/api/v1/layouts", LayoutsHandler, api),
        Route("/api/v1/layouts/{name}", LayoutHandler, api),
        Route("/api/v1/alarms", AlarmsHandler, rt),
        Route("/api/v1/alarms/acknowledge", AcknowledgeHandler, rt),
        Route("/api/v1/alarms/shelve", ShelveHandler, rt),
        Route("/api/v1/alarms/journal", JournalHandler, rt),
        Route("/api/v1/alarms/rules", RulesHandler, rt),
        Route("/api/v1/alarms/rules/{name}", RuleHandler, rt),
        Route("/api/v1/alarms/backtest", BacktestHandler, rt),
        Route("/api/v1/devices/{device}/maintenance", MaintenanceHandler, rt),
        Route("/api/v1/notify/reply", ReplyHandler, rt),
        Route("/api/v1/notify/policies/{name}/test", PolicyTestHandler, rt),
        Route("/api/v1/notify/cascades", CascadesHandler, rt),
        Route("/api/v1/me", MeHandler, api),
        Route("/api/v1/users", UsersHandler, api),
        Route("/api/v1/users/{name}", UserHandler, api),
        Route("/api/v1/tokens", TokensHandler, api),
        Route("/api/v1/tokens/{id}", TokenHandler, api),
        Route("/api/v1/embeds", EmbedsHandler, api),
        Route("/api/v1/embeds/{id}", EmbedHandler, api),
        Route("/api/v1/fragments/{layout}/{widget}", FragmentHandler, {"views": light}),
        Route("/embed/{layout}/?", EmbedRedirect, {"light": light}),
        Route("/embed/{layout}/{widget}/?", EmbedRedirect, {"light": light}),
    ]
    if oidc is not None:
        routes += [Route("/login/oidc", OidcLoginHandler, {"client": oidc, "cookie_secure": auth.cookie_secure}),
                   Route("/login/oidc/callback", OidcCallbackHandler,
                         {"auth": auth, "journal": runtime.journal, "client": oidc})]
    doc = {"routes": routes}
    routes += [Route("/api/v1/openapi.json", OpenApiHandler, doc), Route("/api/v1/docs", ApiReferenceHandler, doc)]
    return routes


def oidc_client(runtime: Runtime) -> OidcClient | None:
    """Return the single sign-on client when ``server.oidc`` is configured."""
    spec = runtime.loaded.config.server.oidc
    if spec is None:
        return None
    return OidcClient(spec, runtime.loaded.secret(spec.client_secret_env), runtime.secret)


class OpenApiHandler(tornado.web.RequestHandler):
    """``GET /api/v1/openapi.json``: the OpenAPI 3 document (public: it holds no data)."""

    def initialize(self, routes: list[Route]) -> None:
        self.routes = routes

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document(self.routes)))


class ApiReferenceHandler(OpenApiHandler):
    """``GET /api/v1/docs``: the document as a readable page, rendered here (no script, no CDN)."""

    def get(self) -> None:
        doc = document(self.routes)
        parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Vigie REST API</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
                 "h2{border-bottom:1px solid #ccc;margin-top:2em}code,pre{background:#f4f6f8}"
                 "pre{padding:.6em;overflow:auto;font-size:.85em}.m{font-weight:700;color:#0b3d5c}</style></head><body>",
                 f"<h1>{html.escape(doc['info']['title'])}</h1><p>{html.escape(doc['info']['description'])}</p>",
                 "<p>The machine-readable document: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a>.</p>"]
        for path, item in doc["paths"].items():
            for method, op in item.items():
                parts.append(f"<h2><span class='m'>{method.upper()}</span> <code>{html.escape(path)}</code></h2>"
                             f"<p>{html.escape(op['summary'])}</p>")
                if op.get("description"):
                    parts.append(f"<p><i>{html.escape(op['description'])}</i></p>")
                for p in op.get("parameters", []):
                    parts.append(f"<div><code>{html.escape(p['name'])}</code> ({p['in']}"
                                 f"{', required' if p.get('required') else ''}): "
                                 f"{html.escape(json.dumps({k: v for k, v in p['schema'].items()}))}</div>")
                body = op.get("requestBody")
                if body:
                    (ctype, content), = body["content"].items()
                    parts.append(f"<p>Body ({html.escape(ctype)}):</p><pre>"
                                 f"{html.escape(json.dumps(content['schema'], indent=1)[:6000])}</pre>")
                parts.append("<p>Answers: " + ", ".join(sorted(op["responses"])) + "</p>")
        parts.append("</body></html>")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish("".join(parts))
