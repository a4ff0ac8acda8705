"""The ``mqtt`` source kind's config: a broker, its subscriptions, and how each payload is decoded."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import param

from app.ingest.decoders import DEFAULT_METRIC_TEMPLATE, Decoder, Entries, MetricTemplate
from app.ingest.source_spec import BuildContext, SourceSpec
from app.ingest.topics import TemplateError, TopicTemplate
from app.spec import Spec, SpecError, missing_files

if TYPE_CHECKING:
    from app.ingest.base import Source
    from app.ingest.mqtt import TlsOptions


class FieldSpec(Spec):
    """How one JSON field (or name/value entry) becomes a metric."""

    metric = param.String(default=None, allow_None=True, doc="Metric name (default: the field name).")
    unit = param.String(default="")


class EntriesSpec(Spec):
    """Name/value array mode: the keys of each entry (dotted paths allowed)."""

    name = param.String(default="name", doc="Key of the value's name.")
    value = param.String(default="value", doc="Key of the value.")
    quality = param.String(default=None, allow_None=True, doc="Key of the entry's quality (overrides quality_field).")
    timestamp = param.String(default=None, allow_None=True,
                             doc="Key of the entry's time, in timestamp_unit (overrides timestamp_field).")
    unit = param.String(default=None, allow_None=True, doc="Key of the entry's unit.")
    error = param.String(default=None, allow_None=True,
                         doc="Key of the gateway's error code in an entry without a value (a device_error).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if "name" not in params:  # param names every object: keep the key's own default
            with param.edit_constant(self):
                self.name = "name"

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.param)

    def to_spec(self) -> dict[str, Any]:
        out = super().to_spec()
        if self.name == "name":
            out.pop("name", None)
        return out

    def entries(self) -> Entries:
        return Entries(self.name, self.value, self.quality, self.timestamp, self.unit, self.error)


# Keys that only one decoder reads (beside topic, decoder, qos, max_bytes, max_future_s that all take).
JSON_KEYS = ("timestamp_field", "timestamp_unit", "fields", "other_fields", "device_field", "quality_field", "values",
             "entries", "tags_field", "tag_keys", "tag_fields", "unit_field", "errors_field")
NUMBER_KEYS = ("metric", "unit")
LINE_KEYS = ("units", "precision", "metric_template", "measurement_tag", "device_tags")


def _metric_template() -> param.String:
    return param.String(default=DEFAULT_METRIC_TEMPLATE, doc=(
        "line_protocol: the metric's name from {measurement}, {field} and any {tag}; a tag the line lacks is left "
        "out with the text before it. The default keeps measurements apart (mem used_percent and disk used_percent "
        "are mem.used_percent and disk.used_percent); \"{field}\" is the former naming, by field alone."))


def _measurement_tag() -> param.String:
    return param.String(default=None, allow_None=True,
                        doc="line_protocol: also keep the measurement as this tag (none by default).")


def _device_tags() -> param.List:
    return param.List(default=["device", "host"], item_type=str, bounds=(1, None),
                      doc="line_protocol: tags naming the device, the first present wins (when the topic has none).")


class LineProtocolSpec(Spec):
    """How line protocol becomes readings: the metric's name, the device, the measurement."""

    metric_template = _metric_template()
    measurement_tag = _measurement_tag()
    device_tags = _device_tags()
    units = param.Dict(default={}, doc="Metric name (after the template) -> unit.")

    def validate(self) -> list[tuple[tuple, str]]:
        return template_problems(self.metric_template, self.units)

    def options(self) -> dict[str, Any]:
        """Return the decoder's keyword arguments."""
        return {"metric_template": self.metric_template, "measurement_tag": self.measurement_tag,
                "device_tags": tuple(self.device_tags), "units": dict(self.units)}


def template_problems(template: str, units: dict | None = None) -> list[tuple[tuple, str]]:
    try:
        MetricTemplate.parse(template)
    except ValueError as exc:
        return [(("metric_template",), str(exc))]
    return [(("units", k), "expected a unit (a string)") for k, v in (units or {}).items() if not isinstance(v, str)]


class SubscriptionSpec(Spec):
    """A topic template and how its payloads are decoded."""

    name = param.String(default="", doc="A name for vigie decode --subscription (default: the topic template).")
    topic = param.String(default=None, allow_None=True, doc="Template: site/{site}/device/{device}/telemetry")
    decoder = param.Selector(default="json", objects=["json", "number", "line_protocol", "image"],
                             doc="image: binary JPEG/PNG for the camera named by {device}.")
    qos = param.Integer(default=1, bounds=(0, 2))
    timestamp_field = param.String(default="ts", allow_None=True,
                                   doc="JSON: path of the time (meta.time); null: the arrival time.")
    timestamp_unit = param.Selector(default="ms", objects=["s", "ms", "us", "ns", "iso"])
    fields = param.Dict(default={}, doc="JSON: field (or entry name) -> {metric, unit} (or null to drop it).")
    other_fields = param.Selector(default="keep", objects=["keep", "drop"])
    device_field = param.String(default=None, allow_None=True, doc="JSON: path of the device's name (node).")
    quality_field = param.String(default=None, allow_None=True,
                                 doc="JSON: path of the quality (good/uncertain/bad, true/false, an OPC-UA code).")
    values = param.String(default=None, allow_None=True,
                          doc="JSON: path of the values (an object, or with entries an array); default: the message.")
    entries = param.ClassSelector(class_=EntriesSpec, default=None, allow_None=True,
                                  doc="JSON: the values are an array of {name, value} entries ({} for the defaults).")
    tags_field = param.String(default=None, allow_None=True, doc="JSON: path of an object whose tag_keys become tags.")
    tag_keys = param.List(default=[], item_type=str, doc="JSON: the keys of tags_field taken as tags (others ignored).")
    tag_fields = param.Dict(default={}, doc="JSON: tag -> path of its value in the message (site: meta.site).")
    unit_field = param.String(default=None, allow_None=True, doc="JSON: path of the unit of the message's values.")
    errors_field = param.String(default=None, allow_None=True,
                                doc="JSON: path of an object field -> error code: each a device_error dead letter.")
    metric = param.String(default=None, allow_None=True, doc="number: metric when the topic has no {metric}.")
    unit = param.String(default="", doc="number: unit of the value.")
    units = param.Dict(default={}, doc="line_protocol: metric (after metric_template) -> unit.")
    precision = param.Selector(default="ns", objects=["s", "ms", "us", "ns"], doc="line_protocol timestamps.")
    metric_template = _metric_template()
    measurement_tag = _measurement_tag()
    device_tags = _device_tags()
    max_bytes = param.Integer(default=65536, bounds=(1, None))
    max_future_s = param.Number(default=300.0, bounds=(0, None))

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if "name" not in params:  # param names every object: keep the key's own default
            with param.edit_constant(self):
                self.name = ""

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.param)

    @classmethod
    def _convert(cls, p: param.Parameter, value: Any, path: tuple, problems: list) -> Any:
        if p.name == "entries" and value is None:
            return None  # entries: null is the default (no array mode), not an empty spec
        return super()._convert(p, value, path, problems)

    def to_spec(self) -> dict[str, Any]:
        out = super().to_spec()
        if not self.name:
            out.pop("name", None)
        return out

    @property
    def label(self) -> str:
        """Return the subscription's name, or its topic template."""
        return self.name or self.topic or ""

    def _set(self, key: str) -> bool:
        return getattr(self, key) != self.param[key].default

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if not self.topic:
            return [(("topic",), "missing (required)")]
        try:
            TopicTemplate.parse(self.topic)
        except TemplateError as exc:
            problems.append((("topic",), str(exc)))
        for decoder, keys in (("json", JSON_KEYS), ("number", NUMBER_KEYS), ("line_protocol", LINE_KEYS)):
            if self.decoder != decoder:
                problems += [((k,), f"only the {decoder} decoder reads it (this one is {self.decoder})")
                             for k in keys if self._set(k)]
        metrics: dict[str, str] = {}
        for name, spec in (self.fields or {}).items():
            if spec is not None and not isinstance(spec, dict):
                problems.append((("fields", name), "expected {metric: ..., unit: ...} or null"))
            elif isinstance(spec, dict):
                try:
                    FieldSpec.from_spec(spec)
                except SpecError as exc:
                    problems.extend((("fields", name, *p.path), p.message) for p in exc.problems)
                    continue
                metric = spec.get("metric") or name
                if metric in metrics:
                    problems.append((("fields", name), f"metric {metric!r} is also field {metrics[metric]!r}'s: two "
                                     "fields would write one series"))
                metrics[metric] = name
        if self.decoder == "json":
            problems += self._json_problems()
        if self.decoder == "line_protocol":
            problems += template_problems(self.metric_template, self.units)
        return problems

    def _json_problems(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        for key in ("timestamp_field", "device_field", "quality_field", "values", "tags_field", "unit_field",
                    "errors_field", *(("entries", k) for k in ("name", "value", "quality", "timestamp", "unit",
                                                                 "error"))):
            path = getattr(self.entries, key[1]) if isinstance(key, tuple) and self.entries else \
                getattr(self, key) if isinstance(key, str) else None
            if path is not None and not _valid_path(path):
                problems.append(((*key,) if isinstance(key, tuple) else (key,),
                                 f"{path!r} is not a path (keys joined by dots: meta.time)"))
        if bool(self.tags_field) != bool(self.tag_keys):
            problems.append((("tag_keys" if self.tags_field else "tags_field",),
                             "tags_field and tag_keys go together: the object, and the keys allowed from it"))
        for tag, path in self.tag_fields.items():
            if not isinstance(path, str) or not _valid_path(path):
                problems.append((("tag_fields", tag), "expected a path (keys joined by dots: meta.site)"))
        if self.other_fields == "drop" and not any(v is not None for v in self.fields.values()):
            problems.append((("other_fields",), "drop with no fields listed: no value would ever be read"))
        entry_time = bool(self.entries and self.entries.timestamp)
        if self.timestamp_field is None and not entry_time and self._set("timestamp_unit"):
            problems.append((("timestamp_unit",), "no timestamp is read (timestamp_field is null: the arrival time)"))
        if self.entries is not None and self.values is None:
            # The message is the array of entries itself: nothing is beside it.
            if self.timestamp_field is not None and not entry_time:
                problems.append((("timestamp_field",), "the message is the array of entries itself, with no "
                                 f"{self.timestamp_field!r} beside it: set timestamp_field: null (arrival time) or "
                                 "entries.timestamp, or values: the array's path"))
            for key in ("device_field", "quality_field", "tags_field", "unit_field", "errors_field"):
                if getattr(self, key):
                    problems.append(((key,), "the message is the array of entries itself, with nothing beside it: "
                                     "give values: the array's path"))
            if self.tag_fields:
                problems.append((("tag_fields",), "the message is the array of entries itself: give values"))
        return problems

    def decode_options(self) -> dict[str, Any]:
        """Return the options of the JSON decoder."""
        from app.ingest.decoders import FieldMap

        fields = {k: (FieldMap(v.get("metric"), v.get("unit", "")) if v is not None else None)
                  for k, v in self.fields.items()}
        return {"timestamp_field": self.timestamp_field, "timestamp_unit": self.timestamp_unit, "fields": fields,
                "other_fields": self.other_fields, "device_field": self.device_field,
                "quality_field": self.quality_field, "values": self.values,
                "entries": self.entries.entries() if self.entries is not None else None,
                "tags_field": self.tags_field, "tag_keys": tuple(self.tag_keys), "tag_fields": dict(self.tag_fields),
                "unit_field": self.unit_field, "errors_field": self.errors_field}

    def build_decoder(self, cameras: Any = None) -> Decoder:
        """Create the decoder this subscription describes (``image`` needs the camera store)."""
        common = {"max_bytes": self.max_bytes, "max_future_s": self.max_future_s}
        if self.decoder == "image":
            import app.ingest.image  # noqa: F401  (registers the decoder)

            return Decoder.create("image", cameras=cameras, max_bytes=max(self.max_bytes, 5_000_000),
                                  max_future_s=self.max_future_s)
        if self.decoder == "json":
            return Decoder.create("json", **self.decode_options(), **common)
        if self.decoder == "number":
            return Decoder.create("number", metric=self.metric, unit=self.unit, **common)
        return Decoder.create("line_protocol", precision=self.precision, units=self.units,
                              metric_template=self.metric_template, measurement_tag=self.measurement_tag,
                              device_tags=tuple(self.device_tags), **common)


def _valid_path(path: str) -> bool:
    return bool(path) and all(part for part in path.split("."))


class TlsSpec(Spec):
    """TLS to a broker."""

    ca_file = param.String(default=None, allow_None=True)
    cert_file = param.String(default=None, allow_None=True)
    key_file = param.String(default=None, allow_None=True)
    insecure = param.Boolean(default=False, doc="Skip certificate verification (testing only).")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = missing_files(self, ("ca_file", "cert_file", "key_file"))
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(((), "a client certificate needs both cert_file and key_file"))
        return problems

    def options(self) -> TlsOptions:
        """Return the TLS options the MQTT clients take."""
        from app.ingest.mqtt import TlsOptions

        return TlsOptions(self.ca_file, self.cert_file, self.key_file, self.insecure)


class MqttSpec(SourceSpec):
    """One MQTT broker and its subscriptions (config section ``mqtt``)."""

    spec_type = "mqtt"

    name = param.String(default="mqtt", doc="The source's name in health, logs and alarms.")
    host = param.String(default="127.0.0.1")
    port = param.Integer(default=1883, bounds=(1, 65535))
    tls = param.ClassSelector(class_=TlsSpec, default=None, allow_None=True)
    username_env = param.String(default=None, allow_None=True)
    password_env = param.String(default=None, allow_None=True)
    client_id = param.String(default=None, allow_None=True, doc="Stable id ({hostname} is replaced).")
    protocol = param.Selector(default="5", objects=["5", "3.1.1"])
    transport = param.Selector(default="auto", objects=["auto", "gmqtt", "aiomqtt"], doc=(
        "The MQTT client library: gmqtt (a quarter to a third of aiomqtt's CPU per message, bench/README.md) "
        "or aiomqtt (paho underneath); same guarantees with either, but QoS 2 needs aiomqtt. auto: gmqtt, or "
        "aiomqtt when a subscription asks for QoS 2."))
    shared_group = param.String(default=None, allow_None=True, doc="MQTT 5 shared subscription group.")
    session_expiry_s = param.Integer(default=7 * 24 * 3600, bounds=(0, None))
    keepalive_s = param.Integer(default=30, bounds=(5, 3600))
    ack = param.Selector(default="durable", objects=["durable", "on_arrival"], doc=(
        "When to acknowledge a QoS 1 message: once its readings are stored or spooled (durable: a crash "
        "loses nothing), or on arrival (cheaper; what is in flight at a crash is lost)."))
    receive_maximum = param.Integer(default=1000, bounds=(1, 65535), doc=(
        "Unacknowledged messages the broker may send (MQTT 5 Receive Maximum). With 3.1.1, set it to "
        "the broker's max_inflight_messages: the writer flushes when half of it waits for an ack."))
    subscriptions = param.List(default=[], item_type=SubscriptionSpec)

    def validate(self) -> list[tuple[tuple, str]]:
        problems = [(("subscriptions", i, "name"), f"{s.name!r} names an earlier subscription of this broker too")
                    for i, s in enumerate(self.subscriptions)
                    if s.name and any(o.name == s.name for o in self.subscriptions[:i])]
        message = "QoS 2 is not offered with transport: gmqtt (use 0 or 1, or transport: aiomqtt)"
        return problems + [(("subscriptions", i, "qos"), message)
                           for i, s in enumerate(self.subscriptions) if self.transport == "gmqtt" and s.qos > 1]

    def chosen_transport(self) -> str:
        """Return the client library this broker is read with (``auto`` resolved)."""
        if self.transport != "auto":
            return self.transport
        return "aiomqtt" if any(s.qos > 1 for s in self.subscriptions) else "gmqtt"

    def build(self, ctx: BuildContext) -> Source:
        from app.ingest.mqtt import MqttSource, MqttSubscription
        from app.ingest.topics import TopicTemplate

        subs = [MqttSubscription(TopicTemplate.parse(s.topic), s.build_decoder(ctx.cameras), s.qos)
                for s in self.subscriptions]
        return MqttSource(
            self.name, ctx.hub, host=self.host, port=self.port, subscriptions=subs, client_id=self.client_id,
            username=ctx.secret(self.username_env), password=ctx.secret(self.password_env),
            tls=self.tls.options() if self.tls else None, protocol=self.protocol, shared_group=self.shared_group,
            session_expiry_s=self.session_expiry_s, keepalive_s=self.keepalive_s, ack=self.ack,
            receive_maximum=self.receive_maximum, transport=self.chosen_transport(),
        )

    def summary(self) -> str:
        return f"MQTT {self.host}:{self.port}, {len(self.subscriptions)} subscription(s)"


# -- series that two producers could both write --------------------------------------------------------
def _globs_meet(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Return whether some name matches both patterns (characters, and ``*`` for any text)."""

    @functools.cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*" and (meet(i + 1, j) or (j < len(b) and meet(i, j + 1))):
            return True
        if j < len(b) and b[j] == "*" and (meet(i, j + 1) or (i < len(a) and meet(i + 1, j))):
            return True
        return i < len(a) and j < len(b) and a[i] == b[j] != "*" and meet(i + 1, j + 1)

    return meet(0, 0)


def line_protocol_overlaps(producers: list[tuple[tuple, str, str]]) -> list[tuple[tuple, str]]:
    """Return a problem for each two line protocol producers that could write the same series by accident.

    ``producers`` are (config path, label, metric template). Any two can meet on a device (a device name
    comes from a topic level or a tag, any text), so what keeps their series apart is the metric's name:
    when one template leaves the measurement out (``{field}``), a measurement of one producer and another
    measurement of the other become one series whenever their field names match. Templates that both keep
    the measurement can only meet on the same measurement and field, which is the same data.
    """
    problems: list[tuple[tuple, str]] = []
    parsed = []
    for path, label, text in producers:
        try:
            parsed.append((path, label, MetricTemplate.parse(text)))
        except ValueError:
            continue  # reported where the template is
    for n, (_path_a, label_a, a) in enumerate(parsed):
        for path_b, label_b, b in parsed[n + 1:]:
            if a.keeps_measurement and b.keeps_measurement:
                continue
            if any(_globs_meet(x, y) for x in a.pattern() for y in b.pattern()):
                problems.append(((*path_b, "metric_template"), (
                    f"{label_b} ({b.text!r}) and {label_a} ({a.text!r}) can write the same series: a template "
                    "without {measurement} merges different measurements' fields; put {measurement} (or a text "
                    "of its own) in one of them")))
    return problems
