"""The web server: Panel pages, the health endpoint, the HTTP ingestion API.

Everything runs on one asyncio loop. :func:`run_server` starts the runtime
(and any extra actors, such as the demo's broker and simulators) once,
starts the Panel/Bokeh server on the same loop, waits for SIGINT/SIGTERM,
then stops in order: web server, ingest and writer (the runtime), extras.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from typing import Any, Protocol

import panel as pn
import tornado.httputil
import tornado.web

from app import security
from app.config import ServerSpec
from app.dashboard.layouts import LayoutStore
from app.ingest.http import HttpSource
from app.pagegate import PageGate
from app.pages.access import access_page
from app.pages.alarm_rules import alarm_rules_page
from app.pages.alarms import alarms_page
from app.pages.contacts import contacts_page
from app.pages.dashboards import dashboard_page, dashboards_list_page
from app.pages.embed import embed_page, guard_embed_app
from app.pages.history import history_page
from app.pages.light_embed import LightViews
from app.pages.overview import overview_page
from app.pages.services import PageServices
from app.pages.system import system_page
from app.pages.wall import wall_page
from app.runtime import Runtime
from app.web import quiet_sockets, redact, routes
from app.web.access import allowed
from app.web.auth import WebAuth
from app.web.metrics import LoopLag, MetricsHandler

log = logging.getLogger(__name__)
access = logging.getLogger("tornado.access")


class Actor(Protocol):
    """Something with an async start and stop (broker, simulators)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class HealthHandler(tornado.web.RequestHandler):
    """``GET /health``: up and ready or not (200/503); the detail only to admins and local clients.

    The detail names the broker, the client id, the subscriptions and shows
    rejected payloads: only an admin (session or token with ``health:detail``)
    or a client on this machine (127.0.0.1 or ::1, not through a proxy: the
    operator's own probes) sees it.
    """

    def initialize(self, runtime: Runtime, gate: PageGate | None = None) -> None:
        self.runtime = runtime
        self.gate = gate

    def detailed(self) -> bool:
        return self.settings["vigie_auth"].probe_or_allowed(self, "health:detail")[0]

    def get(self) -> None:
        doc = self.runtime.health()
        if self.gate is not None:
            doc["pages"] = self.gate.health()
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_status(200 if doc["status"] == "ok" else 503)
        log_health_change(self.application.settings, doc)
        self.finish(json.dumps(doc if self.detailed() else {"status": doc["status"]}, default=str))


def _degraded_because(doc: dict[str, Any]) -> str:
    """Return what makes a health document degraded, in a few words (sources not connected, the store)."""
    parts = [f"{name} {h['state']}" + (f" ({h['last_error']})" if h.get("last_error") else "")
             for name, h in doc.get("sources", {}).items() if h["state"] not in ("connected", "stopped")]
    store = doc.get("store") or {}
    if store.get("available") is False:
        parts.append("store unavailable" + (f" ({store['last_error']})" if store.get("last_error") else ""))
    return "; ".join(parts) or "?"


def log_health_change(settings: dict[str, Any], doc: dict[str, Any]) -> None:
    """Log the health status when it changes between probes: WARNING when degraded, INFO when ok again.

    A monitoring probe asks every few seconds; a 503 on each of them is the
    same news, so the access log leaves /health out and this logs once per
    change (the first probe's status counts as a change from "ok").
    """
    status = doc["status"]
    previous = settings.get("vigie_health_status", "ok")
    if status == previous:
        return
    settings["vigie_health_status"] = status
    if status == "ok":
        log.info("health: ok again (was %s)", previous)
    else:
        log.warning("health: %s: %s", status, _degraded_because(doc))


def attach_http_source(runtime: Runtime) -> HttpSource:
    """Create the HTTP ingestion source from the config and add it to the runtime.

    It takes the shared token of ``http.token_env`` (a gateway's), and API tokens with the ``ingest`` scope.
    """
    spec = runtime.loaded.config.http
    token = runtime.loaded.secret(spec.token_env) if spec.enabled else None
    accounts = runtime.accounts

    def token_allows(text: str) -> bool:
        return allowed(accounts.token_identity(text), "ingest")

    source = HttpSource("http", runtime.hub, token=token, token_allows=token_allows if spec.enabled else None,
                        max_body_bytes=spec.max_body_bytes,
                        max_image_bytes=spec.max_image_bytes, max_json_depth=spec.max_json_depth,
                        timestamp_unit=spec.timestamp_unit, line_protocol=spec.line_protocol.options())
    runtime.add_source(source)
    return source


def _page(build: Any, *args: Any) -> Any:
    """Return a plain function building a page (Panel serves functions, not partials)."""

    def app() -> Any:
        return build(*args)

    app.__name__ = build.__name__
    return app


def make_server(runtime: Runtime, http_source: HttpSource, spec: ServerSpec, port: int | None = None):
    """Create (not start) the Panel server on the current loop.

    Its page gate is ``server.page_gate``; its event-loop lag monitor,
    ``server.loop_lag``, is created stopped: :func:`run_server` starts and stops it.
    """
    gate = PageGate(max_builds=spec.max_concurrent_page_builds, max_sessions=spec.max_sessions)
    lag = LoopLag()
    layouts = LayoutStore(runtime.loaded.layouts_dir())
    count, sentence = runtime.loaded.layouts_report()
    (log.info if count else log.warning)(sentence)
    auth = WebAuth(runtime.accounts, runtime.secret, anonymous_read=spec.anonymous_read,
                   cookie_secure=spec.cookie_secure, session_s=spec.session_hours * 3600)
    services = PageServices.of(runtime)  # what pages may use: not the runtime itself
    light = LightViews(services, layouts)
    patterns = [
        (r"/health", HealthHandler, {"runtime": runtime, "gate": gate}),
        (r"/metrics", MetricsHandler, {"runtime": runtime, "gate": gate, "lag": lag}),
        *(route.tornado() for route in routes.table(runtime, layouts, auth, http_source, light)),
    ]
    port = spec.port if port is None else port
    origins = [f"localhost:{port}", f"127.0.0.1:{port}", *spec.allow_websocket_origin]
    pages = {
        "/": _page(overview_page, services, layouts, auth),
        "/dashboards": _page(dashboards_list_page, services, layouts, auth),
        "/dashboard": _page(dashboard_page, services, layouts, auth),
        "/alarms": _page(alarms_page, services, auth),
        "/alarm-rules": _page(alarm_rules_page, services, auth),
        "/history": _page(history_page, services, auth),
        "/system": _page(system_page, services, auth),
        "/access": _page(access_page, services, layouts, auth),
        "/contacts": _page(contacts_page, services, auth),
        "/embed-app": _page(embed_page, services, layouts, auth),
        "/wall": _page(wall_page, services, layouts, auth),
    }
    # Every page loads the scripts of every widget kind: a widget added in the editor (a table's Tabulator on
    # a dashboard that had none) otherwise finds its component missing, and the whole grid goes blank.
    pn.extension("tabulator")
    quiet_sockets.install()  # a closed tab's pending writes: no "never retrieved" traceback
    redact.install()  # a token given in a URL is masked in every line Tornado logs
    server = pn.serve(
        pages,
        port=port,
        address=spec.address,
        websocket_origin=origins,
        extra_patterns=patterns,
        show=False,
        start=False,
        # Tornado's default is 100 MiB, buffered before any handler runs; the streaming handlers
        # (ingest, layout saves) set their own limits before they read.
        http_server_kwargs={"max_body_size": spec.max_body_bytes},
        title="Vigie",
        # Every page and its websocket go through the login (app/web/auth.py); Bokeh signs its session
        # tokens with the server secret, so the embed link a websocket's token carries cannot be forged.
        auth_provider=auth.provider(),
        secret_key=runtime.secret,
        sign_sessions=True,
        cookie_secret=runtime.secret.decode(),
        # A closed tab's session (its dashboard, its wake-ups) is released idle_session_s after it left.
        unused_session_lifetime_milliseconds=int(spec.idle_session_s * 1000),
        check_unused_sessions_milliseconds=max(500, int(spec.idle_session_s * 500)),
    )
    tiles = security.origin_of(runtime.loaded.config.map.tile_url)
    server._tornado.settings["vigie_auth"] = auth
    server.vigie_auth = auth
    security.install(server._tornado, security.FramingPolicy(spec.frame_ancestors, [tiles] if tiles else []))
    guard_embed_app(server._tornado, layouts)
    gate.install(server)  # page sessions bounded, and built off the loop that runs ingest
    server.page_gate = gate
    server.loop_lag = lag
    server._tornado.settings["log_function"] = access_log
    return server


QUIET_PATHS = ("/api/v1/fragments/", "/api/v1/cameras/", "/api/v1/readings", "/api/v1/write", "/api/v1/latest",
               "/health", "/metrics", "/static/", "/write", "/api/v2/write")
"""Requests made often (light embeds, camera frames, ingest, probes and scrapes): logged only when they fail."""


def access_log(handler: tornado.web.RequestHandler) -> None:
    """Log requests as Tornado does, except the frequent successful ones (a portal's viewers, ingest).

    Tornado logs every request at INFO: thousands of light-embed viewers or a
    gateway posting readings would flood the log (and cost CPU) with lines
    that say nothing; failures and slow requests are still logged.
    """
    status = handler.get_status()
    request = handler.request
    elapsed_ms = 1000.0 * request.request_time()
    if status < 400 and elapsed_ms < 1000 and request.path.startswith(QUIET_PATHS):
        return
    if request.path == "/health" and status in (200, 503):
        return  # a degraded or recovered health is logged once per change by log_health_change
    failed = status >= 500
    log_method = access.info if status < 400 else access.error if failed else access.warning
    # InfluxDB 1.x clients may send the ingest token as the p query argument: app/web/redact.py masks it.
    log_method("%d %s %.2fms", status, handler._request_summary(), elapsed_ms)


async def run_server(runtime: Runtime, *, port: int | None = None, extras: Sequence[Actor] = (),
                     stop_event: asyncio.Event | None = None) -> None:
    """Run everything until SIGINT/SIGTERM (or ``stop_event``), then stop cleanly."""
    stop_event = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    started: list[Actor] = []
    server = None
    try:
        for actor in extras:
            await actor.start()
            started.append(actor)
        http_source = attach_http_source(runtime)
        await runtime.start()
        server = make_server(runtime, http_source, runtime.loaded.config.server, port)
        # After make_server: Panel installs a SIGINT handler that stops the loop outright;
        # ours replaces it so shutdown runs in order.
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop_event.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        server.start()
        server.loop_lag.start()
        log.info("serving on http://%s:%s/", runtime.loaded.config.server.address, server.port)
        await stop_event.wait()
        log.info("stopping")
    finally:
        if server is not None:
            await server.loop_lag.stop()
            server.stop()
            server.page_gate.close()
        await runtime.stop()
        for actor in reversed(started):
            await actor.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
