"""Page sessions that never starve ingest: a bound on them, and their building off the event loop.

A page GET makes Bokeh build the session's document (our page function, then
Panel turning it into Bokeh models) synchronously on the event loop: 0.2 s
for the overview, 1-2.5 s for a dashboard on a loaded 2-core machine
(docs/concurrency.md). Ingest, the alarm engine, the store writer and
``/health`` share that loop, so 500 tabs opened at once stopped them for
minutes (MQTT keepalive missed, the broker dropped Vigie).

The :class:`PageGate`:

- runs each document build on a small thread pool of its own
  (``max_concurrent_page_builds`` threads), so the loop keeps serving MQTT,
  ``/health`` and the API between the builder's GIL slices; the session
  itself (its callbacks, its websocket) still lives on the loop, exactly as
  Bokeh creates it;
- answers a page GET with a small "busy, retrying" page (HTTP 503,
  ``Retry-After``) when that many builds are already running or queued, or
  when ``max_sessions`` sessions exist, instead of queueing without bound;
- after sessions are discarded, collects garbage and returns freed heap to
  the system (``malloc_trim``), so a burst of tabs does not leave the
  process at its peak RSS.

Panel's own ``config.nthreads`` does not do this: in Panel 1.9 it runs
callbacks (``onload``, widget events, periodic callbacks) on threads, never
the session's creation.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import random
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import panel.io.server as panel_server
from bokeh.document import Document
from bokeh.server.contexts import ApplicationContext, BokehSessionContext, _RequestProxy
from bokeh.server.session import ServerSession
from bokeh.util.token import get_token_payload
from panel.io.resources import Resources
from panel.io.server import DocHandler
from panel.io.state import set_curdoc, state
from tornado import gen

log = logging.getLogger(__name__)

RETRY_AFTER_S = (3, 11)  # a busy page retries after 3-10 s, at random: a burst of tabs does not come back at once
RELEASE_QUIET_S = 11.0  # discarded sessions' memory is released after this long without a page request (> retry)
SWITCH_INTERVAL_S = 0.001
"""How long a builder thread may hold the GIL while the event loop's thread waits for it.

CPython's default, 5 ms, is paid on every blocking call the loop makes (each
``recv``, ``send``, ``accept``, ``select`` gives the GIL up and waits that
long to get it back from a busy builder): accepting 100 connections took
0.86 s. 1 ms cuts that wait five-fold for a few % more switching.
"""

BUSY_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Vigie: busy</title>
<meta http-equiv="refresh" content="{retry}">
<style>body{{font-family:sans-serif;margin:3em;color:#333}}</style></head>
<body><h1>Vigie is busy</h1>
<p>Many pages are opening at once. This page retries by itself in {retry} seconds.</p>
<p>Le serveur est occupé&nbsp;: cette page réessaie d'elle-même dans {retry} secondes.</p>
</body></html>
"""


def _malloc_trim() -> Any:
    """Return glibc's ``malloc_trim`` (None elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class PageGate:
    """Admission and off-loop building of page sessions for one Panel server."""

    def __init__(self, *, max_builds: int, max_sessions: int) -> None:
        self.max_builds = max_builds
        self.max_sessions = max_sessions
        self.pool = ThreadPoolExecutor(max_workers=max_builds, thread_name_prefix="page-build")
        self.building = 0
        self.built = 0
        self.refused = 0
        self.discarded = 0
        self._contexts: list[ApplicationContext] = []
        self._trim = _malloc_trim()
        self._release_pending = False
        self.resources: Any = None  # the Tornado application's resources(), once installed
        self._last_activity = 0.0
        self.releases = 0

    @property
    def sessions(self) -> int:
        """How many page sessions exist (open, or closed and not yet discarded)."""
        return sum(len(ctx._sessions) + len(ctx._pending_sessions) for ctx in self._contexts)

    def admit(self) -> bool:
        """Take a build slot, or say no (the caller must :meth:`done` after a yes)."""
        self._last_activity = asyncio.get_running_loop().time()
        if self.building >= self.max_builds or self.sessions >= self.max_sessions:
            self.refused += 1
            return False
        self.building += 1
        return True

    def done(self) -> None:
        """Give a build slot back."""
        self.building -= 1

    def install(self, server: Any) -> None:
        """Gate every page of a (not yet started) Panel server."""
        tornado_app = server._tornado
        self.resources = tornado_app.resources
        # Panel's DocHandler.get renders the page (patch_model_css and bundle_resources walk every
        # model: 40 ms mean, up to 0.44 s) on the loop; the builder thread renders it instead.
        panel_server.server_html_page_for_session = _prerendered_page
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        for ctx in tornado_app._applications.values():
            self._contexts.append(ctx)
            ctx.create_session_if_needed = _OffLoopSessions(ctx, self).create_session_if_needed
        for rule in tornado_app.wildcard_router.rules:
            target = rule.target
            if isinstance(target, type) and issubclass(target, DocHandler):  # every page, embed-app's guard too
                rule.target = type("GatedDocHandler", (target,), {"gate": self, "get": _gated_get})

    def health(self) -> dict[str, int]:
        """Return sessions, builds running, and counts since start."""
        return {"sessions": self.sessions, "building": self.building, "max_sessions": self.max_sessions,
                "max_concurrent_page_builds": self.max_builds, "built_total": self.built,
                "busy_total": self.refused, "discarded_total": self.discarded, "releases_total": self.releases}

    def session_discarded(self) -> None:
        """Release the memory of discarded sessions once page building has been quiet for a while."""
        self.discarded += 1
        if not self._release_pending:
            self._release_pending = True
            asyncio.get_running_loop().call_later(RELEASE_QUIET_S, self._release)

    def _release(self) -> None:
        # A session's document is a web of cycles (models ↔ document ↔ callbacks): only a full
        # collection frees it, and glibc keeps freed arenas unless asked to give them back. The
        # collection holds the GIL for 0.2-1.4 s (docs/concurrency.md): never during a burst.
        loop = asyncio.get_running_loop()
        if self.building or loop.time() - self._last_activity < RELEASE_QUIET_S:
            loop.call_later(RELEASE_QUIET_S, self._release)
            return
        self._release_pending = False
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.releases += 1

    def close(self) -> None:
        """Stop the builder threads (builds in progress finish)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _gated_get(handler: Any, *args: Any, **kwargs: Any) -> None:
    """Serve the page if a build slot is free, else the busy page."""
    gate: PageGate = handler.gate
    if not gate.admit():
        retry = random.randrange(*RETRY_AFTER_S)
        handler.set_status(503)
        handler.set_header("Retry-After", str(retry))
        handler.set_header("Cache-Control", "no-store")
        handler.set_header("Content-Type", "text/html; charset=utf-8")
        handler.finish(BUSY_PAGE.format(retry=retry))
        return
    try:
        # Panel's get is wrapped in Tornado's @authenticated: a visitor without a login is redirected
        # to /login at once, and the wrapper then returns None, not a coroutine.
        result = super(type(handler), handler).get(*args, **kwargs)
        if result is not None:
            await result
    finally:
        gate.done()


_pages: weakref.WeakKeyDictionary[Document, tuple[str, str]] = weakref.WeakKeyDictionary()
_render_page = panel_server.server_html_page_for_session


def _prerendered_page(session: Any, resources: Any, title: str, token: str | None = None, **kwargs: Any) -> str:
    """Panel's ``server_html_page_for_session``, answered from the builder thread's rendering when it has one."""
    done = _pages.pop(session.document, None)
    if done is not None and done[0] == (token or session.token):
        return done[1]
    return _render_page(session, resources, title, token=token, **kwargs)


class _OffLoopSessions:
    """Bokeh's ``ApplicationContext.create_session_if_needed`` with the document built on a thread.

    The same steps as Bokeh 3.9's (bokeh/server/contexts.py), except
    ``initialize_document``, which runs on the gate's pool. The document has
    no ``ServerSession`` yet while it is built, so nothing else touches it;
    callbacks it registers (periodic refreshes) are attached to the loop when
    the ``ServerSession`` is created, back on the loop.
    """

    def __init__(self, ctx: ApplicationContext, gate: PageGate) -> None:
        self.ctx = ctx
        self.gate = gate
        self._loop_thread = threading.get_ident()

    async def create_session_if_needed(self, session_id: str, request: Any = None,
                                       token: str | None = None) -> ServerSession:
        ctx = self.ctx
        if not session_id:
            from bokeh.protocol.exceptions import ProtocolError

            raise ProtocolError("Session ID must not be empty")
        if session_id in ctx._sessions:
            return ctx._sessions[session_id]
        if session_id in ctx._pending_sessions:
            return await ctx._pending_sessions[session_id]
        future = ctx._pending_sessions[session_id] = gen.Future()
        try:
            session = await self._create(session_id, request, token)
        except BaseException as exc:
            del ctx._pending_sessions[session_id]
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        del ctx._pending_sessions[session_id]
        future.set_result(session)
        return session

    def _build(self, doc: Document, token: str | None) -> None:
        """On a builder thread: run the page function, then render the page's HTML (it walks every model)."""
        self.ctx._application.initialize_document(doc)
        if token is not None and self.gate.resources is not None:
            page = SimpleNamespace(document=doc, token=token)
            with set_curdoc(doc):
                _pages[doc] = (token, _render_page(page, resources=Resources.from_bokeh(self.gate.resources()),
                                                   title=doc.title, token=token, template=doc.template,
                                                   template_variables=doc.template_variables))

    async def _create(self, session_id: str, request: Any, token: str | None) -> ServerSession:
        ctx = self.ctx
        doc = Document()
        session_context = BokehSessionContext(session_id, ctx.server_context, doc, logout_url=ctx._logout_url)
        if request is not None:
            payload = get_token_payload(token) if token else {}
            if "cookies" in payload and "headers" in payload and "Cookie" not in payload["headers"]:
                payload["headers"]["Cookie"] = "; ".join(f"{k}={v}" for k, v in payload["cookies"].items())
            session_context._request = _RequestProxy(request, arguments=payload.get("arguments"),
                                                     cookies=payload.get("cookies"), headers=payload.get("headers"))
        session_context._token = token
        doc._session_context = weakref.ref(session_context)
        try:
            await ctx._application.on_session_created(session_context)
        except Exception:
            log.exception("session creation hooks failed")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.gate.pool, self._build, doc, token)
        # Panel claimed the document for the builder thread; from now on it belongs to the loop's.
        state._thread_id_[doc] = threading.get_ident()
        doc.on_session_destroyed(lambda _ctx: self.gate.session_discarded())
        session = ServerSession(session_id, doc, io_loop=ctx._loop, token=token)
        ctx._sessions[session_id] = session
        session_context._set_session(session)
        ctx._session_contexts[session_id] = session_context
        self.gate.built += 1
        return session
