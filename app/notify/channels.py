"""Delivery channels: mail, SMS and chat through apprise, voice through an HTTP gateway; one interface.

A channel is a subclass registered under a short name (``channel_type``).
:meth:`Channel.prepare` turns a message for a contact into a *job*: a
module-level function and plain arguments, which block (apprise does) and
can run in another process. The notifier runs jobs in a bounded pool of
worker processes (or threads) with a timeout each, and owns retries and
fallbacks, so no channel writes its own. A failure raises
:class:`DeliveryError` with a reason and whether trying again may help.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar

import apprise

from app.notify.specs import ContactSpec, EscalationSection
from app.notify.tls_reuse import reuse_tls_contexts

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A delivery failed: ``reason`` for the journal, ``retry`` whether another attempt may succeed."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason, retry)  # both in args: it crosses from a worker process by pickling
        self.reason = reason
        self.retry = retry


class _LastWarning(logging.Handler):
    """Keep apprise's last warning per thread: the reason of a failed notify() (it returns only a status)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_thread: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.by_thread[record.thread or 0] = record.getMessage()[:300]

    def pop(self) -> str:
        return self.by_thread.pop(threading.get_ident(), "")


_apprise_reasons = _LastWarning()
logging.getLogger("apprise").addHandler(_apprise_reasons)


def redact(address: str) -> str:
    """Return an address as the journal and the pages show it: enough to recognise, not to reuse."""
    if "://" in address:
        return address.split("://", 1)[0] + "://…"
    if "@" in address:
        user, _, domain = address.partition("@")
        return f"{user[:2]}…@{domain}"
    return address[:4] + "…" + address[-2:] if len(address) > 6 else "…"


def warm_up(urls: list[str]) -> None:
    """Load apprise's plugins for these URLs now (at start-up, in a thread).

    The first ``notify`` of a scheme imports its plugin: about a second of
    holding the interpreter, measured to delay alarm evaluation by 800 ms
    when it happened mid-cascade (bench/alarms.py --only notify). It also
    makes apprise's mail reuse its TLS contexts (:mod:`app.notify.tls_reuse`).
    """
    reuse_tls_contexts()
    a = apprise.Apprise()
    for url in urls:
        a.add(url)
    for server in a:
        try:
            server.url()  # builds what notify() would, without sending
        except Exception:  # a warm-up must never stop start-up
            log.debug("apprise warm-up of %s failed", type(server).__name__, exc_info=True)


def apprise_send(urls: list[str], title: str, body: str) -> None:
    """Send through apprise URLs, or raise :class:`DeliveryError` with apprise's reason (a job)."""
    for url in urls:
        a = apprise.Apprise()
        if not a.add(url):
            raise DeliveryError("apprise does not understand the URL", retry=False)
        _apprise_reasons.pop()
        if not a.notify(body=body, title=title):
            raise DeliveryError(_apprise_reasons.pop() or "apprise reported a failure")


def http_post_json(url: str, doc: dict[str, Any], headers: dict[str, str], timeout_s: float) -> None:
    """POST a JSON document; raise :class:`DeliveryError` unless the answer is 2xx (a job)."""
    req = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json", **headers},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            r.read(1000)
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"gateway answered {e.code}", retry=e.code >= 500 or e.code == 429) from None
    except OSError as e:
        raise DeliveryError(f"gateway unreachable: {e}") from None


class Channel:
    """How messages reach a contact by one means."""

    channel_type: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Channel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.channel_type:
            Channel.registry[cls.channel_type] = cls

    def __init__(self, spec: EscalationSection, secret: Any) -> None:
        self.spec = spec
        self.secret = secret  # name of a variable -> its value (LoadedConfig.secret)

    def address(self, contact: ContactSpec) -> str | None:
        """Return where this contact is reached (None: they cannot be by this channel)."""
        raise NotImplementedError

    def prepare(self, contact: ContactSpec, title: str, body: str, extra: dict[str, str]) -> Job:
        """Return the job delivering this message (or raise :class:`DeliveryError`)."""
        raise NotImplementedError

    @classmethod
    def create(cls, name: str, spec: EscalationSection, secret: Any) -> Channel:
        """Return the channel of a name: a registered one, else apprise URLs of that scheme."""
        kind = cls.registry.get(name)
        if kind is None:
            return SchemeChannel(spec, secret, name)
        return kind(spec, secret)


Job = tuple[Callable[..., None], tuple[Any, ...]]


class MailChannel(Channel):
    """Mail through apprise's mailto/mailtos (``escalation.mail_url``; ``to=`` the contact)."""

    channel_type = "mail"

    def address(self, contact: ContactSpec) -> str | None:
        return contact.mail

    def prepare(self, contact: ContactSpec, title: str, body: str, extra: dict[str, str]) -> Job:
        base = self.secret(self.spec.mail_url_env) or self.spec.mail_url
        if not base or not contact.mail:
            raise DeliveryError("no mail server or no address", retry=False)
        sep = "&" if "?" in base else "?"
        return apprise_send, ([f"{base}{sep}to={urllib.parse.quote(contact.mail)}"], title, body)


class SmsChannel(Channel):
    """SMS through an apprise URL to a gateway (``escalation.sms_url``, ``{phone}`` replaced)."""

    channel_type = "sms"

    def address(self, contact: ContactSpec) -> str | None:
        return contact.phone

    def prepare(self, contact: ContactSpec, title: str, body: str, extra: dict[str, str]) -> Job:
        template = self.secret(self.spec.sms_url_env) or self.spec.sms_url
        if not template or not contact.phone:
            raise DeliveryError("no SMS gateway or no phone number", retry=False)
        return apprise_send, ([template.replace("{phone}", urllib.parse.quote(contact.phone, safe=""))], "", body)


class VoiceChannel(Channel):
    """A call through a voice gateway: POST JSON {to, text, lang, ack_url, callback_url} (docs/notifications.md)."""

    channel_type = "voice"

    def address(self, contact: ContactSpec) -> str | None:
        return contact.phone

    def prepare(self, contact: ContactSpec, title: str, body: str, extra: dict[str, str]) -> Job:
        if not self.spec.voice_url or not contact.phone:
            raise DeliveryError("no voice gateway or no phone number", retry=False)
        doc = {"to": contact.phone, "text": extra.get("spoken", body), "lang": contact.language,
               "ack_url": extra.get("ack_url", ""), "callback_url": extra.get("callback_url", "")}
        token = self.secret(self.spec.voice_token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http_post_json, (self.spec.voice_url, doc, headers, self.spec.timeout_s)


class SchemeChannel(Channel):
    """The contact's own apprise URLs of one scheme (``slack``, ``matrix``, ``json``...)."""

    def __init__(self, spec: EscalationSection, secret: Any, scheme: str) -> None:
        super().__init__(spec, secret)
        self.scheme = scheme

    def urls(self, contact: ContactSpec) -> list[str]:
        urls = list(contact.apprise) + (self.secret(contact.apprise_env) or "").split()
        return [u for u in urls if u.split("://", 1)[0] == self.scheme]

    def address(self, contact: ContactSpec) -> str | None:
        urls = self.urls(contact)
        return urls[0] if urls else None

    def prepare(self, contact: ContactSpec, title: str, body: str, extra: dict[str, str]) -> Job:
        urls = self.urls(contact)
        if not urls:
            raise DeliveryError(f"no {self.scheme} URL", retry=False)
        return apprise_send, (urls, title, body)
