"""The ``sparkplug`` source kind's config: a broker, the Sparkplug groups to follow, how names are made."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

import param

from app.ingest.mqtt_spec import TlsSpec
from app.ingest.source_spec import BuildContext, SourceSpec

if TYPE_CHECKING:
    from app.ingest.base import Source

_FIELDS = {"group", "edge_node", "device"}


def template_problem(template: str, allowed: set[str]) -> str | None:
    """Return why a device name template cannot be used, or None."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return f"not a template: {exc}"
    unknown = names - allowed
    if unknown:
        return f"unknown field(s) {', '.join(sorted(unknown))}; use {', '.join('{' + a + '}' for a in sorted(allowed))}"
    if "/" in template:
        return "a device name cannot hold '/' (it separates device and metric in a series): use '.' or '-'"
    return None


class SparkplugSpec(SourceSpec):
    """One MQTT broker carrying Sparkplug B (spBv1.0) edge nodes (config section ``sparkplug``)."""

    spec_type = "sparkplug"

    name = param.String(default="sparkplug", doc="The source's name in health, logs and alarms.")
    host = param.String(default="127.0.0.1")
    port = param.Integer(default=1883, bounds=(1, 65535))
    tls = param.ClassSelector(class_=TlsSpec, default=None, allow_None=True)
    username_env = param.String(default=None, allow_None=True)
    password_env = param.String(default=None, allow_None=True)
    client_id = param.String(default=None, allow_None=True, doc="Client id ({hostname} is replaced).")
    protocol = param.Selector(default="5", objects=["5", "3.1.1"])
    keepalive_s = param.Integer(default=30, bounds=(5, 3600))
    groups = param.List(default=["+"], item_type=str, doc="Sparkplug group ids to follow (+: all).")
    device_template = param.String(default="{group}.{edge_node}.{device}", doc=(
        "Vigie device of a Sparkplug device's metrics: {group}, {edge_node}, {device}."))
    node_template = param.String(default="{group}.{edge_node}", doc=(
        "Vigie device of an edge node's own metrics: {group}, {edge_node}."))
    metric_separator = param.String(default=".", doc="Replaces '/' in Sparkplug metric names (folders).")
    rebirth_interval_s = param.Number(default=5.0, bounds=(0, None), doc=(
        "Shortest time between two rebirth requests to one edge node."))
    host_id = param.String(default=None, allow_None=True, doc=(
        "Publish Vigie's Sparkplug STATE as this primary host id (spBv1.0/STATE/<host_id>)."))
    max_bytes = param.Integer(default=1_000_000, bounds=(1, None))

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        for key, allowed in (("device_template", _FIELDS), ("node_template", _FIELDS - {"device"})):
            p = template_problem(getattr(self, key), allowed)
            if p:
                problems.append(((key,), p))
        for key, needed in (("device_template", ("{edge_node}", "{device}")), ("node_template", ("{edge_node}",))):
            missing = [n for n in needed if n not in getattr(self, key)]
            if missing:  # else two devices (or nodes) write the same series, and one death silences both
                problems.append(((key,), f"must contain {' and '.join(missing)}: each Sparkplug "
                                 f"{'device' if key == 'device_template' else 'edge node'} needs its own name"))
        if "/" in self.metric_separator:
            problems.append((("metric_separator",), "cannot hold '/' (the separator Vigie replaces)"))
        for i, g in enumerate(self.groups):
            if not g or (g != "+" and any(c in g for c in "/+#")):
                problems.append((("groups", i), "a group id (no / + #), or + for every group"))
        return problems

    def build(self, ctx: BuildContext) -> Source:
        from app.ingest.sparkplug import SparkplugSource

        return SparkplugSource(
            self.name, ctx.hub, host=self.host, port=self.port, groups=self.groups, client_id=self.client_id,
            username=ctx.secret(self.username_env), password=ctx.secret(self.password_env),
            tls=self.tls.options() if self.tls else None, protocol=self.protocol, keepalive_s=self.keepalive_s,
            device_template=self.device_template, node_template=self.node_template,
            metric_separator=self.metric_separator, rebirth_interval_s=self.rebirth_interval_s,
            host_id=self.host_id, max_bytes=self.max_bytes,
        )

    def summary(self) -> str:
        return f"Sparkplug B {self.host}:{self.port}, group(s) {', '.join(self.groups)}"
