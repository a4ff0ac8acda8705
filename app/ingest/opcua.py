"""OPC-UA ingest with asyncua: one subscription per server, batches to the hub.

Why the raw subscription service instead of asyncua's ``Subscription``:
asyncua 2.1's handler mode creates an asyncio task per notification (even
for a synchronous ``datachange_notification``), and its iterator mode puts
them in a queue that drops the oldest silently when 1000 are waiting
(FIELD-NOTES). Both lose or multiply work on the ingest path. So this source
registers its own synchronous publish callback with
``client.uaclient.create_subscription`` (asyncua's documented low-level
service API) and creates the monitored items itself with its own client
handles. The publish loop calls the callback with the whole
``PublishResult``; every ``DataChangeNotification`` in it becomes one batch
of readings handed to the hub right there, in the same call: no task per
notification, no intermediate queue, nothing to overflow. While the
callback runs, asyncua does not send the next Publish request, so a slow
consumer slows the server down instead of losing data on our side; what the
server itself drops from a full monitored-item queue is flagged by the
Overflow bit of the status code, and counted in ``health()``.

Values: numbers become floats and Booleans 0/1; anything else (text,
arrays, structures, non-finite numbers) is dead-lettered. The reading's time
is the source timestamp, else the server's, else the time of arrival; its
quality is the status code's class. A server nulls the value of a Bad
DataValue (OPC-UA Part 4, 7.7.1), so a Bad notification carries the node's
last value with quality ``bad``, letting the quality change reach the store,
the live view and the alarms.

Why our own reconnect loop: asyncua's ``auto_reconnect`` has hung in the
past (FreeOpcUa/opcua-asyncio#1660) and logs a traceback every second of an
outage. Each attempt here builds a fresh ``Client``, connects, resolves the
nodes, subscribes, then watches the connection: a state change away from
connected, a failed keep-alive read of ``Server/ServerStatus/CurrentTime``
every second, a Bad subscription status, or no publish response for several
keep-alive periods ends the attempt; the client is closed and a new attempt
starts after a capped back-off. Values changed while disconnected are not
replayed: the new subscription starts from the current values. After a
server restart nothing could be; after a mere network cut the server's
queue could be recovered with TransferSubscriptions/Republish, which this
source does not attempt.

What an operator sees of an outage: one WARNING when the connection is
lost (or the first attempt fails), with the reason; the retries at DEBUG;
one INFO when it is back, with the outage's length. asyncua's own client
messages (connects, disconnects, a warning per failed retry, its publish
loop's traceback) restate the same events and are demoted to DEBUG
(``quiet_asyncua_logs``). A server that refuses the user, the password or
the certificate is a different matter, one a person must fix: it is named
as such ("authentication refused by the server: ...", ``error_kind: auth``
in health) and retried on a slower back-off. ``last_error`` is cleared by
a successful connection and kept as ``previous_error``.

Nodes come from the explicit list (NodeIds or browse paths) and from browse
selections (``opcua_browse.py``), browsed again at every connect so the
variables added to the server since the last one are subscribed too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies

from app.hub import Hub
from app.ingest.base import ConnectionState, Source
from app.ingest.opcua_browse import BrowseSelection, Template, browse
from app.model import Quality, Reading, datetime_to_ns, name_problem, now_ns
from app.tasks import Backoff, until_stopped

log = logging.getLogger(__name__)

SECURITY_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("Sign", "SignAndEncrypt")
DEFAULT_APPLICATION_URI = "urn:vigie:client"

_MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Timestamps before this are treated as unset (OPC-UA's "no time" is 1601)."""
_CHUNK = 500
"""Nodes per TranslateBrowsePaths / CreateMonitoredItems call (servers cap both)."""
_FILTER_REFUSED = {
    ua.StatusCodes.BadFilterNotAllowed,
    ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid,
}
"""Codes a server answers when a deadband does not apply (e.g. to a Boolean)."""
_OVERFLOW_BITS = 0x0C80
_OVERFLOW = 0x0480
"""InfoType DataValue (0x400) with the Overflow bit (0x80): the server's item queue dropped values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaNode:
    """One variable to subscribe to, and the series its values feed.

    Give exactly one of ``node_id`` (``"ns=2;s=PumpStation.Flow"``) or
    ``browse_path`` (``"0:Objects/2:PumpStation/2:Flow"``, from the Root
    folder, ``/``-separated ``ns:Name`` browse names).
    """

    node_id: str | None = None
    browse_path: str | None = None
    device: str
    metric: str
    unit: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.node_id) == bool(self.browse_path):
            raise ValueError(f"OPC-UA node {self.device}/{self.metric}: give exactly one of node_id or browse_path")
        if not self.device or not self.metric:
            raise ValueError(f"OPC-UA node {self.label}: device and metric are required")

    @property
    def label(self) -> str:
        """Return how the configuration names the node (its NodeId or browse path)."""
        return self.node_id or self.browse_path or ""


@dataclass(slots=True)
class _Item:
    """A node of the current session, indexed by its monitored-item client handle."""

    node: OpcUaNode
    where: str
    node_id: ua.NodeId | None = None
    selection: BrowseSelection | None = None
    """The browse selection that found it (None: an explicit node)."""
    browse_path: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A node resolved on the server, as ``OpcUaSource.preview`` reports it."""

    group: str
    """``"nodes"`` (the explicit list) or the browse selection's label."""
    node_id: str
    device: str
    metric: str
    address: str
    """How it was found: the configured NodeId, or its browse path from the Root folder."""


def _redact(url: str) -> str:
    """Return the URL without a password, for health and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_AUTH_CODES = frozenset(
    getattr(ua.StatusCodes, name) for name in dir(ua.StatusCodes)
    if name.startswith(("BadCertificate", "BadIdentityToken", "BadSecurityMode", "BadSecurityPolicy"))
    or name in ("BadSecurityChecksFailed", "BadUserAccessDenied", "BadUserSignatureInvalid",
                "BadApplicationSignatureInvalid", "BadNoValidCertificates")
)
"""Status codes by which a server refuses who we are (user, password, certificate, security), not where we are."""


def _auth_refusal(exc: BaseException | None) -> ua.UaStatusCodeError | None:
    """Return the authentication or certificate refusal in ``exc`` or what caused it, if that is what it is."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ua.UaStatusCodeError) and exc.code in _AUTH_CODES:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _duration(seconds: float) -> str:
    """Return a duration for a log line: ``"850 ms"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 07 min"``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


async def certificate_uri(path: str) -> str | None:
    """Return the first URI of a certificate's SubjectAltName (its application URI), if it has one."""
    from asyncua.crypto import uacrypto
    from cryptography import x509

    cert = await uacrypto.load_certificate(path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _time_ns(dt: datetime | None) -> int | None:
    """Return a UTC datetime as ns since the epoch, or None when unset."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt < _MIN_TIME:
        return None
    return datetime_to_ns(dt)


def _status_text(code: ua.StatusCode) -> str:
    try:
        return code.name
    except Exception:
        return f"0x{code.value:08X}"


def _quality(code: ua.StatusCode) -> str:
    if code.is_good():
        return Quality.GOOD
    if code.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _browse_path(path: str) -> ua.BrowsePath:
    """Return a BrowsePath from the Root folder for ``"0:Objects/2:Station/2:Flow"``."""
    rpath = ua.RelativePath()
    for part in path.strip("/").split("/"):
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        element.IsInverse = False
        element.IncludeSubtypes = True
        element.TargetName = ua.QualifiedName.from_string(part)
        rpath.Elements.append(element)
    bpath = ua.BrowsePath()
    bpath.StartingNode = ua.NodeId(ua.ObjectIds.RootFolder)
    bpath.RelativePath = rpath
    return bpath


class OpcUaSource(Source):
    """One OPC-UA server, one subscription with a monitored item per node."""

    source_type = "opcua"
    KEEPALIVE_S = 1.0
    """How often the connection is probed by reading the server's CurrentTime."""
    SUBSCRIPTION_KEEPALIVE_S = 5.0
    """Ask the server for a publish response at least this often, data or not."""
    SESSION_TIMEOUT_S = 60.0
    """A server drops our session this long after we vanish (PLCs have few session slots)."""

    def __init__(
        self,
        name: str,
        hub: Hub,
        *,
        url: str,
        nodes: list[OpcUaNode],
        browse: list[BrowseSelection] | None = None,
        security_policy: str | None = None,
        security_mode: str = "SignAndEncrypt",
        certificate: str | None = None,
        private_key: str | None = None,
        server_certificate: str | None = None,
        username: str | None = None,
        password: str | None = None,
        sampling_interval_ms: float = 500,
        publishing_interval_ms: float = 500,
        deadband: float | None = None,
        queue_size: int = 10,
        timeout_s: float = 4,
        reconnect_max_delay_s: float = 5,
        auth_retry_max_delay_s: float = 60,
        application_uri: str | None = None,
    ) -> None:
        super().__init__(name, hub)
        if not url:
            raise ValueError(f"OPC-UA source {name}: url is required")
        if security_policy is not None:
            if security_policy not in SECURITY_POLICIES:
                raise ValueError(f"OPC-UA security_policy must be one of {', '.join(SECURITY_POLICIES)}, "
                                 f"not {security_policy!r}")
            if not certificate or not private_key:
                raise ValueError(f"OPC-UA source {name}: security_policy {security_policy} needs "
                                 "certificate and private_key")
        if security_mode not in SECURITY_MODES:
            raise ValueError(f"OPC-UA security_mode must be Sign or SignAndEncrypt, not {security_mode!r}")
        self.url = url
        self.nodes = list(nodes)
        self.selections = list(browse or [])
        if not self.nodes and not self.selections:
            raise ValueError(f"OPC-UA source {name}: give nodes, browse selections, or both")
        self.browsed = 0
        """Variables the browse selections found at the last connect."""
        self.browse_skipped: dict[str, list[str]] = {}
        """Per selection label, the variables it found but skipped (not numbers), at the last connect."""
        self.security_policy = security_policy
        self.security_mode = security_mode
        self.certificate = certificate
        self.private_key = private_key
        self.server_certificate = server_certificate
        self._username = username
        self._password = password
        self.sampling_interval_ms = sampling_interval_ms
        self.publishing_interval_ms = publishing_interval_ms
        self.deadband = deadband
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._backoff = Backoff(initial=0.2, cap=reconnect_max_delay_s)
        self._auth_backoff = Backoff(initial=min(5.0, auth_retry_max_delay_s), cap=auth_retry_max_delay_s)
        """A refused identity or certificate is retried slowly: a human must act, and servers may lock accounts."""
        self.subscribed = 0
        self.node_errors: dict[str, str] = {}
        self.server_overflows = 0
        self.connects = 0
        self._configured_uri = application_uri
        self._application_uri: str | None = None
        self.error_kind: str | None = None
        """What ``last_error`` is about: ``"auth"`` (identity or certificate refused), ``"connection"``, ``"nodes"``."""
        self.failed_attempts = 0
        """Connection attempts failed in a row since the last success."""
        self.retry_delay_s: float | None = None
        self._down_since: float | None = None
        self._down_since_ns: int | None = None
        self._reported: str | None = None
        """The error kind already logged at WARNING for the current outage (retries of the same kind: DEBUG)."""
        self._was_connected = False
        self._last_items: list[_Item] = []
        self._last_publish = 0.0
        self._stale_after_s = 30.0
        self._lost: str | None = None
        self._last_values: dict[tuple[str, str], float] = {}
        """Each series' last value (by device and metric), kept across sessions (browsed handles change)."""

    # -- connection loop ----------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe and ingest until stopped; reconnect with a fresh client after a loss."""
        try:
            while not self.stopping:
                attempt = await until_stopped(self._session(), self._stopping, f"opcua-session-{self.name}")
                if self.stopping:
                    break
                exc = None if attempt.cancelled() else attempt.exception()
                self.subscribed = 0
                delay = self._failed(exc)
                if await self.sleep_or_stop(delay):
                    break
        finally:
            self.subscribed = 0
            self.retry_delay_s = None
            self.set_state(ConnectionState.STOPPED)

    def _failed(self, exc: BaseException | None) -> float:
        """Record a failed or ended session; log it once per outage (and per kind); return the wait before retrying.

        The first failure of an outage is a WARNING with the reason; the
        retries that fail the same way are DEBUG, so an outage of an hour is
        two lines (this one and "connection back"), not thousands.
        """
        reason = _describe(exc) if exc else "session ended"
        refusal = _auth_refusal(exc)
        kind = "auth" if refusal is not None else "connection"
        if refusal is not None:
            reason = f"authentication refused by the server: {_status_text(ua.StatusCode(refusal.code))}"
            if self._username:
                reason += f" (user {self._username!r}"
                reason += f", certificate {self.certificate})" if self.security_policy else ")"
            elif self.security_policy:
                reason += f" (certificate {self.certificate})"
        backoff = self._auth_backoff if kind == "auth" else self._backoff
        delay = backoff.next()
        (self._backoff if kind == "auth" else self._auth_backoff).reset()
        self.failed_attempts += 1
        self.retry_delay_s = delay
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._down_since_ns = time.time_ns()
        url = _redact(self.url)
        if kind != self._reported:
            self._reported = kind
            if kind == "auth":
                log.warning("opcua %s: %s at %s; retrying every %s at most until it is fixed", self.name, reason,
                            url, _duration(backoff.cap))
            elif self.state == ConnectionState.CONNECTED:
                log.warning("opcua %s: connection to %s lost: %s", self.name, url, reason)
            else:
                log.warning("opcua %s: cannot connect to %s: %s; retrying", self.name, url, reason)
        else:
            log.debug("opcua %s: attempt %d failed: %s; next in %s", self.name, self.failed_attempts, reason,
                      _duration(delay))
        self.error_kind = kind
        self.set_state(ConnectionState.DISCONNECTED, reason)
        return delay

    def _connected(self) -> None:
        """Record a successful session: one INFO line (with the outage's length after one), errors cleared."""
        total = len(self._last_items)
        where = _redact(self.url)
        if self._down_since is not None:
            outage = _duration(time.monotonic() - self._down_since)
            if self._was_connected:
                log.info("opcua %s: connection to %s back after %s (%d failed attempt(s)); %d of %d node(s) "
                         "subscribed", self.name, where, outage, self.failed_attempts, self.subscribed, total)
            else:
                log.info("opcua %s: connected to %s after %s of failed attempts (%d); %d of %d node(s) subscribed",
                         self.name, where, outage, self.failed_attempts, self.subscribed, total)
        else:
            log.info("opcua %s: connected to %s; %d of %d node(s) subscribed", self.name, where, self.subscribed,
                     total)
        self._down_since = self._down_since_ns = None
        self._reported = None
        self._was_connected = True
        self.failed_attempts = 0
        self.retry_delay_s = None
        self._backoff.reset()
        self._auth_backoff.reset()
        self.clear_error()
        error = self._node_error_summary()
        self.error_kind = "nodes" if error else None
        self.set_state(ConnectionState.CONNECTED, error)

    def log_state_change(self, state: str, error: str | None) -> None:
        """Log only the stop: outages and recoveries are logged by ``_failed`` and ``_connected``."""
        if state == ConnectionState.STOPPED:
            log.info("opcua %s: stopped", self.name)

    async def _session(self) -> None:
        """One connection's life: connect, subscribe, watch; always close the client."""
        quiet_asyncua_logs()
        client = await self._client()
        try:
            await client.connect()
            await self._subscribe(client)
            self.connects += 1
            self._connected()
            await self._watch(client)
        finally:
            await self._close(client)

    async def _client(self) -> Client:
        client = Client(self.url, timeout=self.timeout_s)
        client.name = client.description = f"Vigie ({self.name})"
        client.application_uri = await self._app_uri()
        client.session_timeout = int(self.SESSION_TIMEOUT_S * 1000)
        if self._username:
            client.set_user(self._username)
        if self._password:
            client.set_password(self._password)
        if self.security_policy:
            await client.set_security(
                getattr(security_policies, f"SecurityPolicy{self.security_policy}"),
                self.certificate,  # type: ignore[arg-type]
                self.private_key,  # type: ignore[arg-type]
                server_certificate=self.server_certificate,
                mode=getattr(ua.MessageSecurityMode, self.security_mode),
            )
        return client

    async def _app_uri(self) -> str:
        """Return the application URI sent in CreateSession.

        Servers check it against the URI in the client certificate's
        SubjectAltName (OPC-UA Part 4, 5.6.2): the configured
        ``application_uri``, else the certificate's URI, else Vigie's default.
        A configured URI that differs from the certificate's is used as
        given, with a warning (the server will most likely refuse it).
        """
        if self._application_uri is None:
            cert_uri = await certificate_uri(self.certificate) if self.certificate else None
            if self._configured_uri and cert_uri and cert_uri != self._configured_uri:
                log.warning("opcua %s: application_uri %s differs from the certificate's URI %s: servers check "
                            "that they match (make the certificate with vigie opcua-cert --application-uri)",
                            self.name, self._configured_uri, cert_uri)
            self._application_uri = self._configured_uri or cert_uri or DEFAULT_APPLICATION_URI
        return self._application_uri

    async def preview(self) -> list[Resolved]:
        """Connect once, resolve the nodes and browse the selections, disconnect (``vigie check-config --browse``).

        Raises what connecting raises; the nodes that could not be resolved
        are in ``node_errors`` afterwards.
        """
        quiet_asyncua_logs()
        client = await self._client()
        try:
            await client.connect()
            self.node_errors = {}
            items = await self._resolve(client)
        finally:
            await self._close(client)
        return [Resolved(i.selection.label if i.selection else "nodes", i.node_id.to_string(), i.node.device,
                         i.node.metric, i.browse_path or i.node.label) for i in items if i.node_id is not None]

    async def _close(self, client: Client) -> None:
        """Disconnect within the timeout; drop the socket if the server does not answer."""
        try:
            await asyncio.wait_for(client.disconnect(), self.timeout_s)
        except (Exception, TimeoutError) as exc:
            log.debug("opcua %s: disconnect: %s", self.name, _describe(exc))
            client.disconnect_socket()

    async def _watch(self, client: Client) -> None:
        """Return only by raising: on a state change, a failed keep-alive, a dead subscription."""
        current_time = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime))
        async with client.subscribe_state() as states:
            while True:
                try:
                    state = await states.next_change(self.KEEPALIVE_S)
                except TimeoutError:
                    state = None
                if state is not None and state is not UaClientState.CONNECTED:
                    raise ConnectionError(f"connection lost ({state.value})")
                if self._lost:
                    raise ConnectionError(self._lost)
                if state is None:
                    await asyncio.wait_for(current_time.read_value(), self.timeout_s)
                    silent = time.monotonic() - self._last_publish
                    if silent > self._stale_after_s:
                        raise ConnectionError(f"no publish response for {silent:.0f} s")

    # -- subscription -------------------------------------------------
    async def _resolve(self, client: Client) -> list[_Item]:
        """Return an item per configured node, with its NodeId or an error recorded."""
        items = [_Item(n, f"{n.device}/{n.metric} ({n.label})") for n in self.nodes]
        by_path: list[_Item] = []
        for item in items:
            if item.node.node_id:
                try:
                    item.node_id = ua.NodeId.from_string(item.node.node_id)
                except Exception as exc:
                    self.node_errors[item.node.label] = f"invalid NodeId: {exc}"
            else:
                by_path.append(item)
        for start in range(0, len(by_path), _CHUNK):
            chunk = by_path[start:start + _CHUNK]
            paths = []
            for item in chunk:
                try:
                    paths.append(_browse_path(item.node.browse_path or ""))
                except Exception as exc:
                    self.node_errors[item.node.label] = f"invalid browse path: {exc}"
                    paths.append(None)
            valid = [(item, p) for item, p in zip(chunk, paths, strict=True) if p is not None]
            if not valid:
                continue
            results = await client.uaclient.translate_browsepaths_to_nodeids([p for _, p in valid])
            for (item, _), result in zip(valid, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    item.node_id = result.Targets[0].TargetId
                else:
                    self.node_errors[item.node.label] = f"browse path not found ({_status_text(result.StatusCode)})"
        if self.selections:
            items += await self._browse(client, items)
        return items

    async def _browse(self, client: Client, explicit: list[_Item]) -> list[_Item]:
        """Return an item per variable the browse selections find, named by their templates.

        A name that a template cannot make (an index past the path, a name a
        store cannot hold) or a series already taken (by an explicit node or
        an earlier selection) is recorded in ``node_errors`` and skipped.
        """
        roots = await client.uaclient.translate_browsepaths_to_nodeids([_browse_path(s.root)
                                                                          for s in self.selections])
        taken = {(i.node.device, i.node.metric): i.node.label for i in explicit}
        self.browse_skipped = {}
        out: list[_Item] = []
        for selection, root in zip(self.selections, roots, strict=True):
            if not (root.StatusCode.is_good() and root.Targets):
                self.node_errors[selection.label] = f"root not found ({_status_text(root.StatusCode)})"
                continue
            found, skipped = await browse(client, selection, root.Targets[0].TargetId, _CHUNK)
            self.browse_skipped[selection.label] = skipped
            for reason in skipped:
                log.debug("opcua %s: %s: skipped %s", self.name, selection.label, reason)
            device, metric = Template(selection.device), Template(selection.metric)
            for b in found:
                try:
                    names = device.render(b.path), metric.render(b.path)
                except IndexError as exc:
                    self.node_errors[b.browse_path] = f"{selection.label}: {exc}"
                    continue
                problem = name_problem(names[0], "device") or name_problem(names[1], "metric")
                if problem:
                    self.node_errors[b.browse_path] = f"{selection.label}: {problem}"
                    continue
                if names in taken:
                    self.node_errors[b.browse_path] = (f"{selection.label}: {names[0]}/{names[1]} is already "
                                                       f"the series of {taken[names]}")
                    continue
                taken[names] = b.browse_path
                node = OpcUaNode(node_id=b.node_id.to_string(), device=names[0], metric=names[1],
                                 unit=selection.unit, tags=dict(selection.tags))
                out.append(_Item(node, f"{names[0]}/{names[1]} ({b.browse_path})", b.node_id, selection,
                                 b.browse_path))
        self.browsed = len(out)
        return out

    async def _subscribe(self, client: Client) -> None:
        """Resolve the nodes, create the subscription and its monitored items."""
        self.node_errors = {}
        self.subscribed = 0
        self._lost = None
        items = await self._resolve(client)
        self._last_items = items
        keepalive = max(1, math.ceil(self.SUBSCRIPTION_KEEPALIVE_S * 1000 / max(self.publishing_interval_ms, 1)))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_interval_ms,
            RequestedLifetimeCount=keepalive * 10,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        # The callback is bound to this session's items: a late publish from a
        # closed session can never be routed through the next session's handles.
        result = await client.uaclient.create_subscription(params, partial(self._on_publish, items))
        period_s = (result.RevisedPublishingInterval or self.publishing_interval_ms) / 1000
        self._stale_after_s = 3 * period_s * (result.RevisedMaxKeepAliveCount or keepalive) + self.timeout_s
        self._last_publish = time.monotonic()
        handles = [h for h, item in enumerate(items) if item.node_id is not None]
        failed = await self._monitor(client, result.SubscriptionId, items, handles, self.deadband)
        if self.deadband is not None:
            retry = [h for h, code in failed.items() if code is not None and code.value in _FILTER_REFUSED]
            if retry:  # a deadband does not apply to Booleans and strings: monitor those without one
                failed.update(await self._monitor(client, result.SubscriptionId, items, retry, None))
        for h, code in failed.items():
            if code is not None:
                self.node_errors[items[h].node.label] = f"not monitored ({_status_text(code)})"
        self.subscribed = sum(1 for h in handles if failed.get(h) is None)
        if self.node_errors:
            log.warning("opcua %s: %d of %d nodes unavailable: %s", self.name, len(self.node_errors),
                        len(items), self._node_error_summary())

    async def _monitor(
        self, client: Client, subscription_id: int, items: list[_Item], handles: list[int], deadband: float | None
    ) -> dict[int, ua.StatusCode | None]:
        """Create monitored items for ``handles``; return each handle's failure code (None when created)."""
        out: dict[int, ua.StatusCode | None] = {}
        mfilter = None
        if deadband is not None:
            mfilter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=ua.DeadbandType.Absolute,
                DeadbandValue=float(deadband),
            )
        for start in range(0, len(handles), _CHUNK):
            chunk = handles[start:start + _CHUNK]
            requests = []
            for h in chunk:
                mparams = ua.MonitoringParameters(
                    ClientHandle=h,
                    SamplingInterval=self.sampling_interval_ms,
                    QueueSize=self.queue_size,
                    DiscardOldest=True,
                    Filter=mfilter,
                )
                requests.append(ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=items[h].node_id, AttributeId=ua.AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=mparams,
                ))
            results = await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
                SubscriptionId=subscription_id,
                ItemsToCreate=requests,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
            ))
            for h, res in zip(chunk, results, strict=True):
                out[h] = None if res.StatusCode.is_good() else res.StatusCode
        return out

    def _node_error_summary(self) -> str | None:
        if not self.node_errors:
            return None
        return "; ".join(f"{label}: {reason}" for label, reason in self.node_errors.items())

    # -- notifications ------------------------------------------------
    def _on_publish(self, items: list[_Item], result: ua.PublishResult) -> None:
        """Turn one publish response into one batch for the hub (called by asyncua's publish loop)."""
        self._last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive
        batch: list[Reading] = []
        received = now_ns()
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for mi in notification.MonitoredItems:
                    try:
                        self._convert(items, mi, received, batch)
                    except Exception as exc:  # a bug here must not stop the publish loop
                        self.dead.add(f"handle {mi.ClientHandle}", "convert_error", _describe(exc), repr(mi)[:200])
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    self._lost = f"subscription status {_status_text(status)}"
        self.publish(batch)

    def _convert(self, items: list[_Item], mi: ua.MonitoredItemNotification, received: int,
                 out: list[Reading]) -> None:
        handle = mi.ClientHandle
        if not 0 <= handle < len(items):
            self.dead.add(f"handle {handle}", "unknown_handle", "notification for a handle we did not create")
            return
        item = items[handle]
        dv = mi.Value
        status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        if status.value & _OVERFLOW_BITS == _OVERFLOW:
            self.server_overflows += 1
        raw = dv.Value.Value if dv.Value is not None else None
        if raw is None:
            # A server nulls the value of a Bad DataValue (OPC-UA Part 4, 7.7.1). The
            # reading keeps the node's last value, so the quality change reaches the
            # store, live view and alarms; with no value known yet it is dead-lettered.
            last = self._last_values.get((item.node.device, item.node.metric))
            if last is None or status.is_good():
                self.dead.add(item.where, "no_value", f"no value (status {_status_text(status)})")
                return
            value = last
        elif isinstance(raw, bool):
            value = 1.0 if raw else 0.0
        elif isinstance(raw, int | float):
            value = float(raw)
        else:
            self.dead.add(item.where, "wrong_type", f"value is {type(raw).__name__}, not a number or bool",
                          repr(raw))
            return
        if not math.isfinite(value):
            self.dead.add(item.where, "not_finite", f"value is {value}", repr(raw))
            return
        self._last_values[(item.node.device, item.node.metric)] = value
        time_ns = _time_ns(dv.SourceTimestamp) or _time_ns(dv.ServerTimestamp) or received
        node = item.node
        out.append(Reading(node.device, node.metric, time_ns, value, _quality(status), node.unit, self.name,
                           node.tags))

    # -- health -------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Add the server URL, subscribed node count and unavailable nodes to the base health."""
        h = super().health()
        h.update(
            url=_redact(self.url),
            nodes=len(self._last_items) if self._last_items else len(self.nodes),
            browsed_nodes=self.browsed,
            subscribed_nodes=self.subscribed,
            node_errors=dict(self.node_errors),
            server_queue_overflows=self.server_overflows,
            connects=self.connects,
            error_kind=self.error_kind if self.last_error else None,
            failed_attempts=self.failed_attempts,
            retry_delay_s=self.retry_delay_s,
            disconnected_since_ns=self._down_since_ns,
        )
        return h


class _DemoteToDebug(logging.Filter):
    """Turn an asyncua client record into a DEBUG one, kept only when asyncua's logger is enabled for DEBUG.

    asyncua's client logs every connect and disconnect at INFO, warns at each
    failed retry ("close_secure_channel was called but connection is
    closed") and logs its publish loop's crash with a traceback at ERROR when
    the server goes away. All of it restates what this source reports itself
    (one WARNING when the connection is lost, one INFO when it is back, the
    reason in health), so it is kept for ``asyncua`` at DEBUG only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("asyncua").isEnabledFor(logging.DEBUG)


_CLIENT_LOGGERS = (
    "asyncua.client.client",
    "asyncua.client.ua_client",
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client.UaClient",
    "asyncua.client.ua_session",
    "asyncua.client.ua_session.UaSession",
    "asyncua.uaprotocol",
)
"""asyncua's client-side loggers (some are made per instance, so they are named here, not found)."""
_DEMOTE = _DemoteToDebug()


def quiet_asyncua_logs() -> None:
    """Keep asyncua's client messages at DEBUG; quiet its server's (the simulator's) unless someone chose a level.

    A filter on a logger sees only that logger's own records, so it goes on
    each client-side logger. Vigie's own lines (``app.ingest.opcua``) are
    untouched. Idempotent; called at each connect (and by the PLC simulator).
    """
    logger = logging.getLogger("asyncua")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)
    names = set(_CLIENT_LOGGERS) | {n for n in list(logging.root.manager.loggerDict)
                                    if n.startswith("asyncua.client.")}
    for name in names:
        client_logger = logging.getLogger(name)
        if _DEMOTE not in client_logger.filters:
            client_logger.addFilter(_DEMOTE)
