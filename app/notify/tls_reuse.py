"""One TLS context per verification setting for apprise's mail, instead of one per mail.

Apprise's SMTP client (``apprise.plugins.email.smtp``) calls
``ssl.create_default_context()`` for every mail, even a plain one that never
uses it. Loading the system's certificate store is about 50 ms here: most
of the time from an alarm to its mail accepted by a local SMTP server
(bench/alarms.py --only notify: 42 ms of a 45 ms send). Python's documentation
advises reusing contexts; apprise does not, so Vigie gives apprise's mail
module a stand-in ``ssl`` whose ``create_default_context`` returns a
:class:`_LazyContext`: it records the two settings apprise may change
(``check_hostname``, ``verify_mode``) and, only when a connection is
actually wrapped, uses a real context made once per pair of settings.
Verification is unchanged: a context that verifies is never one that was
told not to.
"""

from __future__ import annotations

import ssl
import threading
from types import ModuleType
from typing import Any

_contexts: dict[tuple[bool, int], ssl.SSLContext] = {}
_lock = threading.Lock()


def _context(check_hostname: bool, verify_mode: int) -> ssl.SSLContext:
    key = (check_hostname, int(verify_mode))
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = check_hostname  # before verify_mode: CERT_NONE needs it off
            ctx.verify_mode = ssl.VerifyMode(verify_mode)
            _contexts[key] = ctx
        return ctx


class _LazyContext:
    """What apprise's mail gets from ``create_default_context()``: settings now, a real context when used."""

    def __init__(self) -> None:
        self.check_hostname = True
        self.verify_mode = ssl.CERT_REQUIRED

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return _context(self.check_hostname, self.verify_mode).wrap_socket(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else apprise or smtplib may read, from the real one
        return getattr(_context(self.check_hostname, self.verify_mode), name)


class _SslForApprise(ModuleType):
    """The ``ssl`` module as apprise's mail module sees it: the same, but for ``create_default_context``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a purpose, a CA file...: not what apprise's mail asks; no reuse
            return ssl.create_default_context(*args, **kwargs)
        return _LazyContext()


def reuse_tls_contexts() -> None:
    """Give apprise's SMTP client the reusing ``ssl`` (idempotent; a no-op when apprise's layout differs)."""
    try:
        from apprise.plugins.email import smtp
    except ImportError:  # another apprise layout: it keeps its own behaviour
        return
    if getattr(smtp, "ssl", None) is ssl:
        smtp.ssl = _SslForApprise("ssl")
