"""Limits before work: what a client sends is checked before it costs memory or time.

:class:`LimitedBodyHandler` streams the request body: its ``authorize``
hook (a token, the caller's role) runs before any body byte is read, a
``Content-Length`` over the handler's limit is refused at once, and a
chunked body is cut off with 413 as soon as it passes the limit. The
parsers for documents from users have limits of their own: JSON nesting
is measured without recursion before ``json.loads``, and user YAML may not
use aliases (a few hundred bytes of them expand to gigabytes) nor nest
deeper than :data:`MAX_DEPTH`. Error replies are bounded with :func:`short`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tornado.web
import yaml

MAX_DEPTH = 32
"""Deepest nesting of a JSON or YAML document from a client (a reading needs 3)."""
MAX_ERROR_CHARS = 500
"""Longest message in an error reply."""
MAX_ERRORS = 20
"""Most problems listed in an error reply (the count says how many there were)."""
MAX_PROBLEM_CHARS = 200
"""Longest problem in such a list: with :data:`MAX_ERRORS`, a reply stays a few KB."""
_SLACK = 1 << 20  # the connection's own cut-off, past the handler's: a chunked body gets our 413, not Tornado's 400
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')  # every byte but quotes and brackets
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")


def short(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters (an error reply never echoes a whole body)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def json_depth_problem(body: bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Return why ``body`` nests deeper than ``max_depth``, or None; linear, no recursion.

    Escapes, then everything but quotes and brackets, then strings are
    removed (C-speed steps: about 0.1 s for 10 MB of readings); the innermost
    bracket pairs are then removed ``max_depth`` times: a pair left means a
    deeper nesting. An unbalanced body is left for the JSON parser to report.
    """
    structure = _ESCAPE.sub(b"", body).translate(None, _NOT_STRUCTURE)
    # Two quotes in a row enclose nothing or no gap: dropping them keeps every bracket in or out of its string.
    structure = structure.replace(b'""', b"")
    brackets = b"".join(structure.split(b'"')[::2]).translate(_BRACKETS)
    too_deep = b"(" * (max_depth + 1)  # that many opening brackets in a row: found at once, however long the body
    for _ in range(max_depth):
        if too_deep in brackets:
            break
        shorter = brackets.replace(b"()", b"")
        if not shorter or len(shorter) == len(brackets):
            return None
        brackets = shorter
    if too_deep in brackets or b"()" in brackets:
        return f"JSON nested deeper than {max_depth} levels"
    return None


def load_json(body: bytes, max_depth: int = MAX_DEPTH) -> tuple[Any, str | None]:
    """Return ``(document, None)``, or ``(None, reason)`` for a body that is not acceptable JSON."""
    problem = json_depth_problem(body, max_depth)
    if problem is not None:
        return None, problem
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"invalid JSON: {short(exc, 200)}"
    except RecursionError:  # the last line: the depth check should have refused it
        return None, "JSON nested too deep"


class _UserYamlLoader(yaml.SafeLoader):
    """A safe loader for YAML from clients: no aliases, bounded nesting."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_user_yaml(text: str) -> Any:
    """Parse YAML (or JSON) sent by a client; raise ``yaml.YAMLError`` for aliases or deep nesting."""
    loader = _UserYamlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@tornado.web.stream_request_body
class LimitedBodyHandler(tornado.web.RequestHandler):
    """A handler whose body is checked before it is read: authorization, then size.

    Subclasses give :meth:`body_limit` and may refuse in :meth:`authorize`
    (answering themselves); the methods then read :attr:`body`.
    """

    _chunks: list[bytes]
    _received = 0

    def body_limit(self) -> int:
        """Return the largest body this request may send, in bytes."""
        raise NotImplementedError

    def authorize(self) -> bool:
        """Check who asks, before any body byte is read; answer and return False to refuse."""
        return True

    def refuse(self, status: int, doc: dict[str, Any]) -> None:
        """Answer with a JSON error and close the connection (the unread body is not wanted)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Connection", "close")
        self.finish(json.dumps(doc))

    def prepare(self) -> None:
        self._chunks = []
        if not self.authorize():
            self._skip_body()
            return
        limit = self.body_limit()
        declared = self._content_length()
        if declared is not None and declared > limit:
            self._skip_body()
            self.refuse(413, {"error": f"body of {declared} bytes is over the limit of {limit} bytes"})
            return
        self.request.connection.set_max_body_size(limit + _SLACK)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._received += len(chunk)
        limit = self.body_limit()
        if self._received > limit:
            self._chunks = []
            self.refuse(413, {"error": f"body over the limit of {limit} bytes"})
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        """Return the body received (whole: the methods run once it has arrived)."""
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def _content_length(self) -> int | None:
        try:
            return int(self.request.headers.get("Content-Length", ""))
        except ValueError:
            return None

    def _skip_body(self) -> None:
        """Let a refused request's body be discarded until the connection closes, not answered with 400."""
        declared = self._content_length()
        if declared is not None and declared >= 0:
            self.request.connection.set_max_body_size(declared)
