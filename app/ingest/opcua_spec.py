"""The ``opcua`` source kind's config: a server, its security, and the variables to subscribe to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import param

from app.ingest.source_spec import BuildContext, SourceSpec
from app.spec import Spec, missing_files

if TYPE_CHECKING:
    from app.ingest.base import Source


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


class BrowseSpec(Spec):
    """Variables chosen by browsing below a root, named by templates over their browse path (opcua_browse.py)."""

    root = param.String(default=None, allow_None=True, doc="Browse path of the folder to walk, e.g. 0:Objects/2:Plant")
    include = param.List(default=["*"], item_type=str, doc="Name patterns to keep (a pattern with / matches the "
                                                           "path below the root).")
    exclude = param.List(default=[], item_type=str, doc="Name patterns to skip (a matching folder is skipped whole).")
    recursive = param.Boolean(default=True, doc="Walk sub-folders and objects (else the root's own variables only).")
    max_depth = param.Integer(default=10, bounds=(1, 100))
    device = param.String(default=None, allow_None=True, doc='e.g. "{path[-2]}": the variable\'s parent\'s name')
    metric = param.String(default="{name}", doc='e.g. "{name|snake}"')
    unit = param.String(default="")
    tags = param.Dict(default={})

    def validate(self) -> list[tuple[tuple, str]]:
        from app.ingest.opcua_browse import Template

        problems: list[tuple[tuple, str]] = []
        for key in ("root", "device"):
            if not getattr(self, key):
                problems.append(((key,), "missing (required)"))
        for key in ("device", "metric"):
            if getattr(self, key):
                try:
                    Template(getattr(self, key))
                except ValueError as exc:
                    problems.append(((key,), str(exc)))
        return problems


class OpcUaSpec(SourceSpec):
    """One OPC-UA server and the nodes to subscribe to (config section ``opcua``)."""

    spec_type = "opcua"

    name = param.String(default="opcua", doc="The source's name in health, logs and alarms.")
    url = param.String(default=None, allow_None=True, doc="opc.tcp://host:4840/path")
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
    auth_retry_max_delay_s = param.Number(default=60.0, bounds=(0.1, 86400), doc=(
        "Longest wait between attempts while the server refuses the user, password or certificate."))
    application_uri = param.String(default=None, allow_None=True, doc=(
        "The client's application URI; servers check it against the certificate's (default: the certificate's "
        "URI, else urn:vigie:client)."))
    nodes = param.List(default=[], item_type=NodeSpec)
    browse = param.List(default=[], item_type=BrowseSpec,
                        doc="Variables chosen by browsing, beside or instead of nodes.")

    def validate(self) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = [] if self.url else [(("url",), "missing (required)")]
        if not self.nodes and not self.browse:
            problems.append((("nodes",), "give nodes, browse selections, or both"))
        if self.security_policy:
            problems += [((k,), f"required with security_policy {self.security_policy}")
                         for k in ("certificate", "private_key") if not getattr(self, k)]
        elif self.certificate or self.private_key:
            problems.append((("security_policy",), "certificate / private_key given but no security_policy"))
        return problems + missing_files(self, ("certificate", "private_key", "server_certificate"))

    def build(self, ctx: BuildContext) -> Source:
        from app.ingest.opcua import OpcUaNode, OpcUaSource
        from app.ingest.opcua_browse import BrowseSelection

        nodes = [OpcUaNode(node_id=n.node_id, browse_path=n.browse_path, device=n.device, metric=n.metric,
                           unit=n.unit, tags=dict(n.tags)) for n in self.nodes]
        selections = [BrowseSelection(root=b.root, device=b.device, metric=b.metric, include=tuple(b.include),
                                      exclude=tuple(b.exclude), recursive=b.recursive, max_depth=b.max_depth,
                                      unit=b.unit, tags=dict(b.tags)) for b in self.browse]
        return OpcUaSource(
            self.name, ctx.hub, url=self.url, nodes=nodes, browse=selections, security_policy=self.security_policy,
            security_mode=self.security_mode, certificate=self.certificate, private_key=self.private_key,
            server_certificate=self.server_certificate, username=ctx.secret(self.username_env),
            password=ctx.secret(self.password_env), sampling_interval_ms=self.sampling_interval_ms,
            publishing_interval_ms=self.publishing_interval_ms, deadband=self.deadband,
            queue_size=self.queue_size, timeout_s=self.timeout_s, reconnect_max_delay_s=self.reconnect_max_delay_s,
            auth_retry_max_delay_s=self.auth_retry_max_delay_s, application_uri=self.application_uri,
        )

    def summary(self) -> str:
        browse = f", {len(self.browse)} browse selection(s)" if self.browse else ""
        return f"OPC-UA {self.url}, {len(self.nodes)} node(s){browse}"
