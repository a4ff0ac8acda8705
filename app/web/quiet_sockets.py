"""A closed tab must not leave tracebacks in the log: Panel's websocket writes, each one accounted for.

Panel's ``dispatch_tornado`` starts one write per frame of a message
(header, metadata, content, each buffer) and returns the futures, to be
awaited later. When the tab is closed while an update is on its way, the
first write finds the broken pipe and closes the stream; the next write
then raises at once, so Panel's function raises with the futures of the
writes already started in hand: nobody ever awaits them, and asyncio logs
"Task exception was never retrieved ... WebSocketClosedError" with two
tracebacks at ERROR level, for an ordinary event (tests/test_browser.py
closes twenty tabs under live updates). This is Panel's function with each
write guarded: a refused write ends the message, and every started write's
outcome is retrieved when it completes. A write that failed because the
socket is gone stays what it is, a closed tab.
"""

from __future__ import annotations

import json
from asyncio import Future
from typing import Any

import panel.io.document as panel_document
from tornado.websocket import WebSocketClosedError, WebSocketHandler


def _retrieve(future: Future) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved; Panel logs real failures where it awaits them


def _dispatch_tornado(conn: Any, events: Any = None, msg: Any = None) -> list[Future]:
    """Panel's ``dispatch_tornado`` (panel/io/document.py), each write guarded and retrieved."""
    socket = conn._socket
    ws_conn = getattr(socket, "ws_connection", False)
    if not ws_conn or ws_conn.is_closing():
        return []
    if msg is None:
        if not events:
            return []
        msg = conn.protocol.create("PATCH-DOC", events)
    frames: list[tuple[Any, bool]] = [(msg.header_json, False), (msg.metadata_json, False), (msg.content_json, False)]
    for buffer in msg._buffers:
        frames += [(json.dumps(buffer.ref), False), (buffer.to_bytes(), True)]
    futures: list[Future] = []
    for payload, binary in frames:
        try:
            future = WebSocketHandler.write_message(socket, payload, binary=binary)
        except WebSocketClosedError:
            break  # the socket closed under this message: the rest of it has nowhere to go
        future.add_done_callback(_retrieve)
        futures.append(future)
    return futures


def install() -> None:
    """Wrap Panel's websocket writes once per process."""
    if panel_document.dispatch_tornado is not _dispatch_tornado:
        panel_document.dispatch_tornado = _dispatch_tornado
