"""The platform's configuration: ``config/*.yaml`` plus secrets from the environment.

Every YAML file of the config directory contributes top-level sections
(``server``, ``store``, ``http``, ``mqtt``, ``opcua``; later issues add
``alarms``, ``contacts``...). A section may appear in one file only. Values
are validated by :class:`~app.spec.Spec` classes; every problem is reported
with its file, line and key path. Secrets never live in these files: a key
ending in ``_env`` names the environment variable holding the secret, and a
variable that is not set is a config error, found before anything starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import param
import yaml

from app.alarms.grammar import ExpressionError
from app.alarms.rules import AlarmRule, CompositeRule
from app.ingest.decoders import Decoder
from app.ingest.topics import TemplateError, TopicTemplate
from app.notify.specs import ContactsSection, EscalationSection, cross_problems
from app.spec import Problem, Spec, SpecError, did_you_mean
from app.store.history_policy import HistoryPolicy, policy_problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """A problem located in a file, at a line, under a key path."""

    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        line = f":{self.line}" if self.line else ""
        return f"{self.file}{line}: {self.where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; ``problems`` says every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _secret(env_name: str | None, env: dict[str, str] | os._Environ) -> str | None:
    return env.get(env_name) if env_name else None


# -- section specs -------------------------------------------------------
class ServerSpec(Spec):
    """The web server."""

    address = param.String(default="127.0.0.1", doc="Address to listen on (0.0.0.0 for all).")
    port = param.Integer(default=5006, bounds=(1, 65535), doc="HTTP port.")
    allow_websocket_origin = param.List(default=[], item_type=str, doc="Extra host:port origins allowed.")
    editing = param.Boolean(default=None, allow_None=True,
                            doc="Removed: who may edit is a user's role now (vigie user add NAME --role ROLE).")
    anonymous_read = param.Boolean(default=False,
                                   doc="Let visitors who are not logged in see the pages (read-only: a public wall "
                                       "display). Off: every page asks for a login.")
    access_file = param.String(default="var/access.sqlite",
                               doc="Users, login sessions, API tokens and embed links (SQLite; relative: to the "
                                   "data root).")
    session_hours = param.Number(default=12.0, bounds=(0.1, 24 * 90),
                                 doc="A login session ends after this long without use.")
    cookie_secure = param.Selector(default="auto", objects=["auto", "always"],
                                   doc="The login cookie's Secure flag: auto (when the request came over HTTPS) "
                                       "or always (behind a TLS-terminating proxy).")
    frame_ancestors = param.List(default=[], item_type=str,
                                 doc="Origins allowed to frame /embed pages (Content-Security-Policy).")
    layouts_dir = param.String(default="layouts",
                               doc="Dashboard layouts directory (relative: to the config directory's parent).")
    timezone = param.String(default="UTC", doc="Time zone pages show times in (IANA name: Europe/Paris).")
    max_body_bytes = param.Integer(default=1_000_000, bounds=(1, None),
                                   doc="Largest body of any other request (layout saves, alarm actions, pages): "
                                       "413 or 400 over it, before it is read.")
    secret_env = param.String(default=None, allow_None=True,
                              doc="Variable holding the secret (32+ bytes) that signs login cookies, embed and "
                                  "acknowledgement links (unset: one made once and kept in var/secret.key).")
    idle_session_s = param.Number(default=15.0, bounds=(1.0, 3600.0),
                                  doc="How long a page session with no open connection (a closed tab) is kept "
                                      "before its callbacks and memory are released.")
    max_sessions = param.Integer(default=200, bounds=(1, None),
                                 doc="Page sessions held at once (open tabs, and closed ones not yet released); "
                                     "beyond, a page GET gets a small 'busy, retrying' page (HTTP 503).")
    max_concurrent_page_builds = param.Integer(default=1, bounds=(1, 64),
                                               doc="Page sessions built at the same time, each on a thread of its "
                                                   "own, off the event loop that runs ingest; beyond, a page GET "
                                                   "gets the 'busy, retrying' page.")

    def validate(self) -> list[tuple[tuple, str]]:
        from app.security import validate_origins

        problems: list[tuple[tuple, str]] = []
        if self.editing is not None:
            problems.append((("editing",), "removed: editing now needs a login with the analyst role (vigie user add "
                                           "NAME --role analyst); for a public read-only display set anonymous_read: "
                                           "true"))
        try:
            validate_origins(self.frame_ancestors)
        except ValueError as exc:
            problems.append((("frame_ancestors",), str(exc)))
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            problems.append((("timezone",), f"unknown time zone {self.timezone!r} (an IANA name: Europe/Paris, UTC)"))
        return problems


class StoreSpec(Spec):
    """Where readings are stored."""

    engine = param.Selector(default="embedded", objects=["embedded", "influx"])
    data_dir = param.String(default="var/data", doc="Embedded engine: directory of its database file.")
    url = param.String(default="http://127.0.0.1:8086", doc="InfluxDB: base URL.")
    database = param.String(default="vigie", doc="InfluxDB: database (v1) or DBRP-mapped bucket.")
    measurement = param.String(default="telemetry", doc="InfluxDB: measurement readings are written to.")
    retention_policy = param.String(default=None, allow_None=True)
    api = param.Selector(default="v1", objects=["v1", "v2"], doc="v1: /write + /query; v2: /api/v2/write.")
    org = param.String(default=None, allow_None=True, doc="InfluxDB 2.x/3.x organisation (api v2).")
    bucket = param.String(default=None, allow_None=True, doc="InfluxDB 2.x/3.x bucket (api v2).")
    username_env = param.String(default=None, allow_None=True, doc="Variable holding the user name.")
    password_env = param.String(default=None, allow_None=True, doc="Variable holding the password.")
    token_env = param.String(default=None, allow_None=True, doc="Variable holding the API token.")
    spool_dir = param.String(default="var/spool", doc="Where batches wait while the database is down.")
    rejected_dir = param.String(default="var/rejected",
                                doc="Where readings the database refused are kept, with the reason (JSON lines).")
    batch_size = param.Integer(default=5000, bounds=(1, 1_000_000))
    flush_interval_s = param.Number(default=0.25, bounds=(0.01, 60))
    rollups = param.List(default=["1m", "1h"], item_type=str,
                         doc="Resolutions kept as min/max/sum/count per series and bucket (each divides a day "
                             "or is whole days); charts of long ranges read the coarsest that fills their buckets.")
    retention = param.Dict(default={}, doc="How long each resolution is kept: raw or a rollup -> duration "
                                           "(90d, 2y) or forever, e.g. {raw: 90d, 1m: 2y, 1h: forever}. "
                                           "Unnamed resolutions are kept forever.")
    maintenance_interval_s = param.Number(default=300.0, bounds=(1, 86_400),
                                          doc="Embedded engine: how often compaction, rollups and retention run "
                                              "(also whenever compact_rows readings wait).")
    compact_rows = param.Integer(default=250_000, bounds=(1, 50_000_000),
                                 doc="Embedded engine: readings written since the last compaction that start one.")

    def policy(self) -> HistoryPolicy:
        """Return the rollups and retention as the stores take them."""
        return HistoryPolicy.from_config(self.rollups, {str(k): v for k, v in self.retention.items()})

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        problems += [((key,), message) for key, message in policy_problems(
            self.rollups, {str(k): v for k, v in self.retention.items()})]
        if self.engine == "influx" and self.api == "v2":
            problems += [((k,), "required with api: v2") for k in ("org", "token_env") if not getattr(self, k)]
        if bool(self.username_env) != bool(self.password_env):
            problems.append((("password_env" if self.username_env else "username_env",),
                             "give both username_env and password_env, or neither"))
        return problems


class HttpIngestSpec(Spec):
    """The HTTP ingestion API."""

    enabled = param.Boolean(default=True)
    token_env = param.String(default="VIGIE_INGEST_TOKEN",
                             doc="Variable holding the bearer token; unset disables the endpoint.")
    max_body_bytes = param.Integer(default=10_000_000, bounds=(1, None),
                                   doc="Largest body of /api/v1/readings and /api/v1/write: 413 over it, "
                                       "refused from its Content-Length before it is read.")
    max_image_bytes = param.Integer(default=5_000_000, bounds=(1, None),
                                    doc="Largest picture posted to /api/v1/cameras/<camera> (413 over it).")
    max_json_depth = param.Integer(default=32, bounds=(3, 1000),
                                   doc="Deepest nesting of a JSON body (400 deeper: a reading needs 3).")
    timestamp_unit = param.Selector(default="ms", objects=["s", "ms", "us", "ns", "iso"])


class FieldSpec(Spec):
    """How one JSON field becomes a metric."""

    metric = param.String(default=None, allow_None=True, doc="Metric name (default: the field name).")
    unit = param.String(default="")


class SubscriptionSpec(Spec):
    """A topic template and how its payloads are decoded."""

    topic = param.String(default=None, allow_None=True, doc="Template: site/{site}/device/{device}/telemetry")
    decoder = param.Selector(default="json", objects=["json", "number", "line_protocol", "image"],
                             doc="image: binary JPEG/PNG for the camera named by {device}.")
    qos = param.Integer(default=1, bounds=(0, 2))
    timestamp_field = param.String(default="ts", allow_None=True, doc="JSON: field holding the time (null: arrival).")
    timestamp_unit = param.Selector(default="ms", objects=["s", "ms", "us", "ns", "iso"])
    fields = param.Dict(default={}, doc="JSON: field -> {metric, unit} (or null to drop it).")
    other_fields = param.Selector(default="keep", objects=["keep", "drop"])
    device_field = param.String(default=None, allow_None=True, doc="JSON: field naming the device.")
    quality_field = param.String(default=None, allow_None=True)
    metric = param.String(default=None, allow_None=True, doc="number: metric when the topic has no {metric}.")
    unit = param.String(default="", doc="number: unit of the value.")
    units = param.Dict(default={}, doc="line_protocol: metric -> unit.")
    precision = param.Selector(default="ns", objects=["s", "ms", "us", "ns"], doc="line_protocol timestamps.")
    max_bytes = param.Integer(default=65536, bounds=(1, None))
    max_future_s = param.Number(default=300.0, bounds=(0, None))

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if not self.topic:
            return [(("topic",), "missing (required)")]
        try:
            TopicTemplate.parse(self.topic)
        except TemplateError as exc:
            problems.append((("topic",), str(exc)))
        for name, spec in (self.fields or {}).items():
            if spec is not None and not isinstance(spec, dict):
                problems.append((("fields", name), "expected {metric: ..., unit: ...} or null"))
            elif isinstance(spec, dict):
                try:
                    FieldSpec.from_spec(spec)
                except SpecError as exc:
                    problems.extend((("fields", name, *p.path), p.message) for p in exc.problems)
        return problems

    def build_decoder(self, cameras: Any = None) -> Decoder:
        """Create the decoder this subscription describes (``image`` needs the camera store)."""
        from app.ingest.decoders import FieldMap

        common = {"max_bytes": self.max_bytes, "max_future_s": self.max_future_s}
        if self.decoder == "image":
            import app.ingest.image  # noqa: F401  (registers the decoder)

            return Decoder.create("image", cameras=cameras, max_bytes=max(self.max_bytes, 5_000_000),
                                  max_future_s=self.max_future_s)
        if self.decoder == "json":
            fields = {k: (FieldMap(v.get("metric"), v.get("unit", "")) if v is not None else None)
                      for k, v in self.fields.items()}
            return Decoder.create("json", timestamp_field=self.timestamp_field, timestamp_unit=self.timestamp_unit,
                                  fields=fields, other_fields=self.other_fields, device_field=self.device_field,
                                  quality_field=self.quality_field, **common)
        if self.decoder == "number":
            return Decoder.create("number", metric=self.metric, unit=self.unit, **common)
        return Decoder.create("line_protocol", precision=self.precision, units=self.units, **common)


class AlarmsSection(Spec):
    """Alarm rules: each a ``type:`` of :mod:`app.alarms.rules` (threshold when the type is left out)."""

    rules = param.List(default=[], item_type=AlarmRule)
    tick_s = param.Number(default=1.0, bounds=(0.05, 60),
                          doc="How often the clock judges silence, delays and shelve expiry.")
    journal_file = param.String(default="var/alarms.sqlite",
                                doc="The alarm journal and state (SQLite; relative: to the data root).")
    journal_days = param.Number(default=400, bounds=(1, None), doc="How long the alarm journal keeps events.")
    mqtt_topic_prefix = param.String(default=None, allow_None=True,
                                     doc="Publish each alarm's state, retained, under <prefix>/alarms/<rule>/<series> "
                                         "on the first MQTT broker (none: not published).")

    def validate(self) -> list[tuple[tuple, str]]:
        names = [r.name for r in self.rules if r.name]
        problems = [(("rules",), f"rule name {n!r} is used twice") for n in sorted({n for n in names
                                                                                   if names.count(n) > 1})]
        known = set(names)
        for i, rule in enumerate(self.rules):
            if isinstance(rule, CompositeRule):
                try:
                    unknown = sorted(rule.parsed().names() - known)
                except ExpressionError:
                    continue
                if unknown:
                    problems.append((("rules", i, "expression"), f"no rule named {', '.join(map(repr, unknown))}"
                                     + did_you_mean(unknown[0], sorted(known))))
        return problems


class CamerasSpec(Spec):
    """Where webcam images are kept."""

    directory = param.String(default="cameras", doc="Directory (relative: to the data root).")
    keep = param.Integer(default=20, bounds=(1, 10_000), doc="Images kept per camera.")
    max_bytes = param.Integer(default=5_000_000, bounds=(1, None), doc="Largest image accepted.")


class MapSpecConfig(Spec):
    """The map widgets' background."""

    tile_url = param.String(default=None, allow_None=True,
                            doc="XYZ tile URL ({z}/{x}/{y}); none by default, so maps work offline.")


def _missing_files(spec: Spec, keys: tuple[str, ...]) -> list[tuple[tuple, str]]:
    """Report the given file keys whose file does not exist (Vigie opens them from its working directory)."""
    return [((k,), f"file not found: {getattr(spec, k)} (a relative path is taken from the directory Vigie runs in)")
            for k in keys if getattr(spec, k) and not Path(getattr(spec, k)).is_file()]


class TlsSpec(Spec):
    """TLS to a broker."""

    ca_file = param.String(default=None, allow_None=True)
    cert_file = param.String(default=None, allow_None=True)
    key_file = param.String(default=None, allow_None=True)
    insecure = param.Boolean(default=False, doc="Skip certificate verification (testing only).")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = _missing_files(self, ("ca_file", "cert_file", "key_file"))
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(((), "a client certificate needs both cert_file and key_file"))
        return problems


class MqttSpec(Spec):
    """One MQTT broker and its subscriptions."""

    name = param.String(default="mqtt")
    host = param.String(default="127.0.0.1")
    port = param.Integer(default=1883, bounds=(1, 65535))
    tls = param.ClassSelector(class_=TlsSpec, default=None, allow_None=True)
    username_env = param.String(default=None, allow_None=True)
    password_env = param.String(default=None, allow_None=True)
    client_id = param.String(default=None, allow_None=True, doc="Stable id ({hostname} is replaced).")
    protocol = param.Selector(default="5", objects=["5", "3.1.1"])
    shared_group = param.String(default=None, allow_None=True, doc="MQTT 5 shared subscription group.")
    session_expiry_s = param.Integer(default=7 * 24 * 3600, bounds=(0, None))
    keepalive_s = param.Integer(default=30, bounds=(5, 3600))
    expected_interval_s = param.Number(default=None, allow_None=True, bounds=(1, None), doc=(
        "How often this broker's series report: a no-data rule without its own timeout_s raises after this."))
    ack = param.Selector(default="durable", objects=["durable", "on_arrival"], doc=(
        "When to acknowledge a QoS 1 message: once its readings are stored or spooled (durable: a crash "
        "loses nothing), or on arrival (cheaper; what is in flight at a crash is lost)."))
    receive_maximum = param.Integer(default=1000, bounds=(1, 65535), doc=(
        "Unacknowledged messages the broker may send (MQTT 5 Receive Maximum). With 3.1.1, set it to "
        "the broker's max_inflight_messages: the writer flushes when half of it waits for an ack."))
    subscriptions = param.List(default=[], item_type=SubscriptionSpec)

    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in cls.param]  # ``name`` is a real key here


class NodeSpec(Spec):
    """One OPC-UA variable."""

    node_id = param.String(default=None, allow_None=True, doc="e.g. ns=2;i=5 or ns=2;s=Pump1.Speed")
    browse_path = param.String(default=None, allow_None=True, doc="e.g. 0:Objects/2:PumpStation/2:Flow")
    device = param.String(default=None, allow_None=True)
    metric = param.String(default=None, allow_None=True)
    unit = param.String(default="")
    tags = param.Dict(default={})

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if bool(self.node_id) == bool(self.browse_path):
            problems.append(((), "give exactly one of node_id or browse_path"))
        for key in ("device", "metric"):
            if not getattr(self, key):
                problems.append(((key,), "missing (required)"))
        return problems


class OpcUaSpec(Spec):
    """One OPC-UA server and the nodes to subscribe to."""

    name = param.String(default="opcua")
    url = param.String(default=None, allow_None=True, doc="opc.tcp://host:4840/path")
    expected_interval_s = param.Number(default=None, allow_None=True, bounds=(1, None), doc=(
        "How often this server's series report: a no-data rule without its own timeout_s raises after this."))
    security_policy = param.Selector(default=None, objects=[None, "Basic256Sha256", "Aes128Sha256RsaOaep",
                                                             "Aes256Sha256RsaPss"])
    security_mode = param.Selector(default="SignAndEncrypt", objects=["Sign", "SignAndEncrypt"])
    certificate = param.String(default=None, allow_None=True)
    private_key = param.String(default=None, allow_None=True)
    server_certificate = param.String(default=None, allow_None=True)
    username_env = param.String(default=None, allow_None=True)
    password_env = param.String(default=None, allow_None=True)
    sampling_interval_ms = param.Number(default=500.0, bounds=(0, None))
    publishing_interval_ms = param.Number(default=500.0, bounds=(10, None))
    deadband = param.Number(default=None, allow_None=True, bounds=(0, None), doc="Absolute deadband.")
    queue_size = param.Integer(default=10, bounds=(1, 10_000),
                               doc="Values the server keeps per item between publishes (raise for fast signals).")
    timeout_s = param.Number(default=4.0, bounds=(0.1, 300), doc="Request timeout (connect, read, disconnect).")
    reconnect_max_delay_s = param.Number(default=5.0, bounds=(0.1, 3600),
                                         doc="Longest wait between reconnection attempts (the wait doubles to it).")
    nodes = param.List(default=[], item_type=NodeSpec)

    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in cls.param]

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = [] if self.url else [(("url",), "missing (required)")]
        if self.security_policy:
            problems += [((k,), f"required with security_policy {self.security_policy}")
                         for k in ("certificate", "private_key") if not getattr(self, k)]
        elif self.certificate or self.private_key:
            problems.append((("security_policy",), "certificate / private_key given but no security_policy"))
        return problems + _missing_files(self, ("certificate", "private_key", "server_certificate"))


class VigieConfig(Spec):
    """The whole configuration."""

    server = param.ClassSelector(class_=ServerSpec, default=None, allow_None=True)
    store = param.ClassSelector(class_=StoreSpec, default=None, allow_None=True)
    http = param.ClassSelector(class_=HttpIngestSpec, default=None, allow_None=True)
    mqtt = param.List(default=[], item_type=MqttSpec)
    opcua = param.List(default=[], item_type=OpcUaSpec)
    cameras = param.ClassSelector(class_=CamerasSpec, default=None, allow_None=True)
    alarms = param.ClassSelector(class_=AlarmsSection, default=None, allow_None=True)
    map = param.ClassSelector(class_=MapSpecConfig, default=None, allow_None=True)
    contacts = param.ClassSelector(class_=ContactsSection, default=None, allow_None=True)
    escalation = param.ClassSelector(class_=EscalationSection, default=None, allow_None=True)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.server = self.server or ServerSpec()
        self.store = self.store or StoreSpec()
        self.http = self.http or HttpIngestSpec()
        self.cameras = self.cameras or CamerasSpec()
        self.alarms = self.alarms or AlarmsSection()
        self.map = self.map or MapSpecConfig()
        self.contacts = self.contacts or ContactsSection()
        self.escalation = self.escalation or EscalationSection()

    def validate(self) -> list[tuple[tuple, str]]:
        return cross_problems(self.contacts, self.escalation, self.alarms.rules)


@dataclass
class LoadedConfig:
    """A validated config, where it came from, and the secrets it needs."""

    config: VigieConfig
    directory: Path | None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # section -> the file that defines it

    def section_file(self, section: str, default: str) -> Path:
        """Return the file holding a section, or where a new one goes (``default`` in the config directory)."""
        if section in self.files:
            return self.files[section]
        return (self.directory or Path.cwd()) / default

    def layouts_dir(self) -> Path:
        """Return the layouts directory, relative paths taken from the config's parent."""
        path = Path(self.config.server.layouts_dir)
        if path.is_absolute():
            return path
        return (self.directory.parent if self.directory else Path.cwd()) / path

    def layouts_report(self) -> tuple[int, str]:
        """Return how many layouts the layouts directory holds, and a sentence saying where (and what to do).

        A config directory copied elsewhere (as users do to start their own) finds no layouts beside its new
        parent: that must be said, not shown as an empty list of dashboards.
        """
        where = self.layouts_dir()
        count = len(list(where.glob("*.yaml"))) if where.is_dir() else 0
        if count:
            return count, f"{count} layout(s) in {where}"
        origin = "absolute" if Path(self.config.server.layouts_dir).is_absolute() else \
            f"relative to {self.directory.parent if self.directory else Path.cwd()}"
        return 0, (f"no layouts in {where} (server.layouts_dir {self.config.server.layouts_dir!r}, {origin}): "
                   "the dashboards list will be empty; copy a layouts/ directory there or set server.layouts_dir")

    def secret(self, env_name: str | None) -> str | None:
        """Return the value of a secret variable (checked at load time)."""
        return _secret(env_name, self.env)


# -- loading -------------------------------------------------------------
def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path of a composed YAML document to its line (1-based)."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = (*path, k.value)
            out[key] = k.start_mark.line + 1
            _lines(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*path, i), out)
    return out


def _secret_problems(data: Any, path: tuple, env: dict[str, str]) -> list[Problem]:
    """Find ``*_env`` keys whose variable is not set."""
    problems = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and k.endswith("_env") and isinstance(v, str) and v not in env:
                if k == "token_env" and path == ("http",):
                    continue  # an unset ingest token disables the endpoint, by design
                problems.append(Problem((*path, k), f"environment variable {v} is not set"))
            else:
                problems.extend(_secret_problems(v, (*path, k), env))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            problems.extend(_secret_problems(v, (*path, i), env))
    return problems


def load_config(directory: str | Path | None, env: dict[str, str] | None = None) -> LoadedConfig:
    """Load and validate every ``*.yaml`` of ``directory``; raise :class:`ConfigError`."""
    env = dict(os.environ if env is None else env)
    if directory is None:
        return LoadedConfig(VigieConfig(), None, env)
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), None, "(directory)", "not a directory")])
    merged: dict[str, Any] = {}
    origin: dict[str, tuple[str, dict[tuple, int]]] = {}
    problems: list[ConfigProblem] = []
    sections = VigieConfig.keys()
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        text = path.read_text(encoding="utf-8")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.append(ConfigProblem(str(path), mark.line + 1 if mark else None, "(syntax)",
                                          str(getattr(exc, "problem", exc))))
            continue
        if data is None:
            continue
        lines = _lines(node) if node is not None else {}
        if not isinstance(data, dict):
            problems.append(ConfigProblem(str(path), 1, "(top level)", "expected a mapping of sections"))
            continue
        for key, value in data.items():
            if key not in sections and key not in _LATER_SECTIONS:
                problems.append(ConfigProblem(str(path), lines.get((key,)), str(key),
                                              f"unknown section{did_you_mean(str(key), sections)}"))
                continue
            if key in merged:
                problems.append(ConfigProblem(str(path), lines.get((key,)), str(key),
                                              f"section already defined in {origin[key][0]}"))
                continue
            merged[key] = value
            origin[key] = (str(path), lines)
    known = {k: v for k, v in merged.items() if k in sections}

    def locate(p: Problem) -> ConfigProblem:
        section = p.path[0] if p.path else None
        file, lines = origin.get(section, (str(directory), {}))
        line = None
        for n in range(len(p.path), 0, -1):
            line = lines.get(tuple(p.path[:n]))
            if line:
                break
        return ConfigProblem(file, line, p.where, p.message)

    problems.extend(locate(p) for p in _secret_problems(known, (), env))
    try:
        config = VigieConfig.from_spec(known)
    except SpecError as exc:
        problems.extend(locate(p) for p in exc.problems)
        config = None
    if problems or config is None:
        raise ConfigError(problems)
    return LoadedConfig(config, directory, env, {k: Path(f) for k, (f, _lines) in origin.items()})


# Sections owned by later features; accepted so config directories can carry them.
_LATER_SECTIONS = ("users", "devices")
