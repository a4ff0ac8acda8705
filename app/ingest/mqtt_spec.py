"""The ``mqtt`` source kind's config: a broker, its subscriptions, and how each payload is decoded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param

from app.ingest.decoders import Decoder
from app.ingest.source_spec import BuildContext, SourceSpec
from app.ingest.topics import TemplateError, TopicTemplate
from app.spec import Spec, SpecError, missing_files

if TYPE_CHECKING:
    from app.ingest.base import Source
    from app.ingest.mqtt import TlsOptions


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
    transport = param.Selector(default="gmqtt", objects=["gmqtt", "aiomqtt"], doc=(
        "The MQTT client library: gmqtt (the default: a quarter to a third of aiomqtt's CPU per message, "
        "bench/README.md) or aiomqtt (paho underneath). Same guarantees with either; QoS 2 needs aiomqtt."))
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
        message = "QoS 2 is not offered with transport: gmqtt (use 0 or 1, or transport: aiomqtt)"
        return [(("subscriptions", i, "qos"), message)
                for i, s in enumerate(self.subscriptions) if self.transport == "gmqtt" and s.qos > 1]

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
            receive_maximum=self.receive_maximum, transport=self.transport,
        )

    def summary(self) -> str:
        return f"MQTT {self.host}:{self.port}, {len(self.subscriptions)} subscription(s)"
