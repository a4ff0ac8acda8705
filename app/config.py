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
from app.ingest.mqtt_spec import LineProtocolSpec, line_protocol_overlaps
from app.ingest.source_spec import SourceSpec, source_kinds
from app.notify.specs import ContactsSection, EscalationSection, cross_problems
from app.spec import Problem, Spec, SpecError, did_you_mean
from app.store.history_policy import HistoryPolicy, policy_problems
from app.web.oidc_spec import OidcSpec


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
    oidc = param.ClassSelector(class_=OidcSpec, default=None, allow_None=True,
                               doc="Log in through an OpenID Connect identity provider (docs/access.md).")
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
    line_protocol = param.ClassSelector(class_=LineProtocolSpec, default=None, allow_None=True, doc=(
        "How /api/v1/write, /write and /api/v2/write name series: metric_template, measurement_tag, device_tags, "
        "units."))

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.line_protocol = self.line_protocol or LineProtocolSpec()


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


class SiteSpec(Spec):
    """One site of the ``sites`` section: where it is and what it is called (the overview's map and list)."""

    lat = param.Number(default=None, allow_None=True, bounds=(-90, 90), doc="Latitude (degrees).")
    lon = param.Number(default=None, allow_None=True, bounds=(-180, 180), doc="Longitude (degrees).")
    title = param.String(default=None, allow_None=True, doc="Name shown (default: the site tag itself).")
    dashboard = param.String(default=None, allow_None=True,
                             doc="Layout opened by the site's dashboard link (default: a layout saying "
                                 "site: <name>, else layouts/site-<name>.yaml, else one generated from its series).")

    def validate(self) -> list[tuple[tuple, str]]:
        if (self.lat is None) != (self.lon is None):
            return [(("lon" if self.lon is None else "lat",), "give both lat and lon, or neither")]
        return []


class NameSpec(Spec):
    """What a device or a metric is called on the pages (``devices`` / ``metrics`` sections), instead of its id."""

    title = param.String(default="", doc="Name shown (default: the id itself).")
    title_fr = param.String(default="", doc="Name shown in French (default: title).")


@dataclass(frozen=True)
class SeriesNames:
    """The display names of devices and metrics: one lookup for every page that names a series."""

    devices: dict[str, NameSpec] = field(default_factory=dict)
    metrics: dict[str, NameSpec] = field(default_factory=dict)

    def name(self, kind: str, ident: str, lang: str = "en") -> str:
        """Return the name of device or metric ``ident`` (``kind``: "devices" or "metrics") in ``lang``."""
        spec = getattr(self, kind).get(ident)
        if spec is None:
            return ident
        return ((getattr(spec, f"title_{lang}", "") if lang != "en" else "") or spec.title) or ident

    def label(self, key: str, unit: str = "", lang: str = "en") -> str:
        """Return ``Device · Metric (unit)`` for series ``device/metric`` (plain text: escape it for HTML)."""
        device, _, metric = key.partition("/")
        text = f"{self.name('devices', device, lang)} · {self.name('metrics', metric, lang)}"
        return f"{text} ({unit})" if unit else text


def _names(section: dict | None) -> dict[str, NameSpec]:
    from app.dashboard.spec import split_titles

    return {str(k): NameSpec.from_spec(split_titles(v if isinstance(v, dict) else {"title": v}))
            for k, v in (section or {}).items()}


class OverviewSection(Spec):
    """The overview page (silent devices) and the wall display."""

    silent_after_s = param.Number(default=300.0, bounds=(1, None),
                                  doc="A device whose usual interval is not known yet (fewer than 3 readings) and "
                                      "no no-data rule or expected_interval_s covers is silent after this.")
    silent_factor = param.Number(default=3.0, bounds=(1, 1000),
                                 doc="Else a device is silent after this many times its usual interval.")
    silent_min_s = param.Number(default=30.0, bounds=(0, None),
                                doc="...but never before this (a 1 s sensor late by a few seconds is not silent).")
    wall_layouts = param.List(default=[], item_type=str,
                              doc="Layouts /wall rotates through when its link names none (default: every layout).")
    wall_every_s = param.Number(default=30.0, bounds=(1, 3600), doc="Seconds each layout stays on the wall.")


class VigieConfig(Spec):
    """The whole configuration; each source kind adds its section (a list) from the registry, below."""

    server = param.ClassSelector(class_=ServerSpec, default=None, allow_None=True)
    store = param.ClassSelector(class_=StoreSpec, default=None, allow_None=True)
    http = param.ClassSelector(class_=HttpIngestSpec, default=None, allow_None=True)
    cameras = param.ClassSelector(class_=CamerasSpec, default=None, allow_None=True)
    alarms = param.ClassSelector(class_=AlarmsSection, default=None, allow_None=True)
    map = param.ClassSelector(class_=MapSpecConfig, default=None, allow_None=True)
    contacts = param.ClassSelector(class_=ContactsSection, default=None, allow_None=True)
    escalation = param.ClassSelector(class_=EscalationSection, default=None, allow_None=True)
    overview = param.ClassSelector(class_=OverviewSection, default=None, allow_None=True)
    sites = param.Dict(default={}, doc="Sites by their site tag: {lat, lon, title, dashboard} (the overview's map).")
    devices = param.Dict(default={}, doc="Device names by device id: a name, or {title, title_fr} "
                                         "(or title: {en, fr}); pages show them instead of the ids.")
    metrics = param.Dict(default={}, doc="Metric names by metric id, as devices (History legends: "
                                         "'Device · Metric (unit)').")

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
        self.overview = self.overview or OverviewSection()

    def validate(self) -> list[tuple[tuple, str]]:
        problems = cross_problems(self.contacts, self.escalation, self.alarms.rules) + self._series_problems()
        for name, entry in (self.sites or {}).items():
            try:
                SiteSpec.from_spec(entry, ("sites", name))
            except SpecError as exc:
                problems += [(p.path, p.message) for p in exc.problems]
        from app.dashboard.spec import split_titles

        for section in ("devices", "metrics"):
            for name, entry in (getattr(self, section) or {}).items():
                if isinstance(entry, str):
                    continue
                try:
                    NameSpec.from_spec(split_titles(entry), (section, name))
                except SpecError as exc:
                    problems += [(p.path, p.message) for p in exc.problems]
        return problems

    def series_names(self) -> SeriesNames:
        """Return the ``devices`` and ``metrics`` names, each entry checked (by :meth:`validate`) and built."""
        return SeriesNames(_names(self.devices), _names(self.metrics))

    def site_specs(self) -> dict[str, SiteSpec]:
        """Return the ``sites`` section, each entry checked (by :meth:`validate`) and built."""
        return {str(name): SiteSpec.from_spec(entry) for name, entry in (self.sites or {}).items()}

    def _series_problems(self) -> list[tuple[tuple, str]]:
        """Line protocol producers whose metric templates could write one series by accident."""
        producers = [(("mqtt", i, "subscriptions", j), f"mqtt {m.name!r} subscription {s.label!r}", s.metric_template)
                     for i, m in enumerate(getattr(self, "mqtt", [])) for j, s in enumerate(m.subscriptions)
                     if s.decoder == "line_protocol"]
        if self.http.enabled:
            producers.insert(0, (("http", "line_protocol"), "the HTTP line protocol endpoints",
                                 self.http.line_protocol.metric_template))
        return line_protocol_overlaps(producers)

    def sources(self) -> list[SourceSpec]:
        """Return every configured source, of every kind."""
        return [spec for kind in source_kinds() for spec in getattr(self, kind)]


for _section, _kind in source_kinds().items():
    VigieConfig.param.add_parameter(_section, param.List(default=[], item_type=_kind, doc=_kind.__doc__))


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
