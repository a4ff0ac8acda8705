"""OPC-UA variables chosen by browsing a real asyncua server's nested folders.

The plant below has folders, objects, variables with and without a
matching name, a Debug folder, a text variable and a property: a selection
must keep exactly the variables it names, with the device and metric its
templates make, and pick up a variable added to the server at the next
reconnect. ``vigie check-config --browse`` runs as a subprocess against it.

The tests share one plant per module (building asyncua's standard address
space costs seconds per start), on the module's event loop, with every
variable back at its start value; the test that restarts the server has its own.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Server, ua

from app.hub import Hub
from app.ingest.opcua import OpcUaNode, OpcUaSource
from app.ingest.opcua_browse import BrowseSelection, Template
from tests.helpers import until
from tests.servers import free_port
from tests.test_opcua import BatchCollector

NS = "urn:vigie:test:plant"


class Plant:
    """An asyncua server with a plant's nested folders; stopped and started again on the same port on demand."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plant/"
        self.server: Server | None = None
        self.idx = 2
        self.start_values: dict[str, tuple[object, ua.VariantType]] = {}

    async def start(self, *, with_outlet: bool = False) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = self.idx = await server.register_namespace(NS)

        async def folder(parent, path: str):
            return await parent.add_folder(ua.NodeId(path, idx), ua.QualifiedName(path.rsplit(".", 1)[-1], idx))

        async def obj(parent, path: str):
            return await parent.add_object(ua.NodeId(path, idx), ua.QualifiedName(path.rsplit(".", 1)[-1], idx))

        async def var(parent, path: str, value, vtype=ua.VariantType.Double):
            self.start_values[path] = (value, vtype)
            return await parent.add_variable(ua.NodeId(path, idx), ua.QualifiedName(path.rsplit(".", 1)[-1], idx),
                                             value, vtype)

        plant = await folder(server.nodes.objects, "Plant")
        line1 = await folder(plant, "Plant.Line1")
        boiler1 = await obj(line1, "Plant.Line1.Boiler1")
        await var(boiler1, "Plant.Line1.Boiler1.Temp", 61.0)
        await var(boiler1, "Plant.Line1.Boiler1.TempSetpoint", 65.0)
        await var(boiler1, "Plant.Line1.Boiler1.Pressure", 2.1)
        await var(boiler1, "Plant.Line1.Boiler1.DebugTemp", 0.0)  # excluded by name
        await var(boiler1, "Plant.Line1.Boiler1.TempText", "warm", ua.VariantType.String)  # not a number
        boiler2 = await obj(line1, "Plant.Line1.Boiler2")
        await var(boiler2, "Plant.Line1.Boiler2.Temp", 58.0)
        await var(boiler2, "Plant.Line1.Boiler2.Pressure", 1.9)
        if with_outlet:
            await var(boiler2, "Plant.Line1.Boiler2.TempOutlet", 40.0)  # the "new PLC program"
        debug = await folder(line1, "Plant.Line1.Debug")
        await var(debug, "Plant.Line1.Debug.InnerTemp", 1.0)  # in an excluded folder
        line2 = await folder(plant, "Plant.Line2")
        boiler3 = await obj(line2, "Plant.Line2.Boiler3")
        temp3 = await var(boiler3, "Plant.Line2.Boiler3.Temp", 70.0)
        await temp3.add_property(ua.NodeId("Plant.Line2.Boiler3.Temp.TempRange", idx),
                                 ua.QualifiedName("TempRange", idx), 100.0)  # a property: metadata, not a series
        await boiler3.add_property(ua.NodeId("Plant.Line2.Boiler3.TempLimit", idx), ua.QualifiedName("TempLimit", idx),
                                   90.0)  # an object's property: not a series either (HasProperty is not walked)
        await var(plant, "Plant.AmbientTemp", 18.5)  # directly under the root
        await server.start()
        self.server = server

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def reset(self) -> None:
        """Write every variable's start value back (tests sharing the plant see it as started)."""
        assert self.server is not None
        for path, (value, vtype) in self.start_values.items():
            await self.server.write_attribute_value(ua.NodeId(path, self.idx), ua.DataValue(ua.Variant(value, vtype)))

    def node_id(self, path: str) -> str:
        return f"ns={self.idx};s={path}"

    async def write(self, path: str, value: float) -> None:
        assert self.server is not None
        await self.server.write_attribute_value(ua.NodeId(path, self.idx),
                                                ua.DataValue(ua.Variant(value, ua.VariantType.Double)))


on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The async tests run on the module's loop, where the shared plant's tasks live."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_plant() -> AsyncIterator[Plant]:
    p = Plant()
    await p.start()
    yield p
    await p.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def plant(shared_plant: Plant) -> Plant:
    """The module's plant, every variable at its start value, for tests that do not stop it or add variables."""
    await shared_plant.reset()
    return shared_plant


@pytest_asyncio.fixture(loop_scope="module")
async def own_plant() -> AsyncIterator[Plant]:
    """A plant of the test's own, free to be stopped and started again."""
    p = Plant()
    await p.start()
    yield p
    await p.stop()


TEMPS = BrowseSelection(root="0:Objects/2:Plant", include=("*Temp*",), exclude=("*Debug*",), recursive=True,
                        device="{path[-2]}", metric="{name|snake}", unit="°C", tags={"site": "north"})


async def run_source(source: OpcUaSource) -> asyncio.Task:
    task = asyncio.create_task(source.run())
    await until(lambda: source.state == "connected" or task.done(), timeout=10, what="connected")
    assert not task.done(), task
    return task


async def stop_source(source: OpcUaSource, task: asyncio.Task) -> None:
    await source.stop()
    await asyncio.wait_for(task, 5)


@on_module_loop
async def test_a_browse_selection_keeps_the_named_variables_with_templated_names(plant: Plant) -> None:
    hub = Hub()
    collector = BatchCollector()
    hub.add(collector)
    explicit = OpcUaNode(node_id=plant.node_id("Plant.Line1.Boiler1.Pressure"), device="Boiler1", metric="pressure")
    source = OpcUaSource("plant", hub, url=plant.endpoint, nodes=[explicit], browse=[TEMPS],
                         sampling_interval_ms=50, publishing_interval_ms=100, reconnect_max_delay_s=0.2)
    task = await run_source(source)
    try:
        found = {(i.node.device, i.node.metric): i.browse_path for i in source._last_items if i.selection}
        assert found == {
            ("Boiler1", "temp"): "0:Objects/2:Plant/2:Line1/2:Boiler1/2:Temp",
            ("Boiler1", "temp_setpoint"): "0:Objects/2:Plant/2:Line1/2:Boiler1/2:TempSetpoint",
            ("Boiler2", "temp"): "0:Objects/2:Plant/2:Line1/2:Boiler2/2:Temp",
            ("Boiler3", "temp"): "0:Objects/2:Plant/2:Line2/2:Boiler3/2:Temp",
            ("Plant", "ambient_temp"): "0:Objects/2:Plant/2:AmbientTemp",
        }
        health = source.health()
        assert health["nodes"] == 6 and health["browsed_nodes"] == 5 and health["subscribed_nodes"] == 6
        assert health["node_errors"] == {} and health["last_error"] is None

        await plant.write("Plant.Line1.Boiler2.Temp", 59.25)
        r = await until(lambda: collector.find("temp", 59.25), what="Boiler2's temperature")
        assert (r.device, r.unit, r.tags, r.source) == ("Boiler2", "°C", {"site": "north"}, "plant")
        await plant.write("Plant.Line1.Boiler1.Pressure", 2.5)  # the explicit node flows beside the selection
        assert (await until(lambda: collector.find("pressure", 2.5), what="the explicit node")).device == "Boiler1"
        assert not source.dead.total  # the text variable was never subscribed
    finally:
        await stop_source(source, task)


@on_module_loop
async def test_a_variable_added_on_the_server_appears_after_a_reconnect(own_plant: Plant) -> None:
    plant = own_plant  # it restarts the server with one more variable: not the shared one
    hub = Hub()
    collector = BatchCollector()
    hub.add(collector)
    source = OpcUaSource("plant", hub, url=plant.endpoint, nodes=[], browse=[TEMPS], sampling_interval_ms=50,
                         publishing_interval_ms=100, reconnect_max_delay_s=0.2)
    task = await run_source(source)
    try:
        assert source.health()["browsed_nodes"] == 5
        await plant.stop()  # a new PLC program: the server restarts, on the same port, with one more variable
        await until(lambda: source.state == "disconnected", what="disconnected")
        await plant.start(with_outlet=True)
        await until(lambda: source.state == "connected", timeout=10, what="reconnected")
        assert source.health()["browsed_nodes"] == 6 and source.health()["subscribed_nodes"] == 6
        await plant.write("Plant.Line1.Boiler2.TempOutlet", 41.5)
        r = await until(lambda: collector.find("temp_outlet", 41.5), what="the new variable's value")
        assert r.device == "Boiler2"
    finally:
        await stop_source(source, task)


@on_module_loop
async def test_template_errors_duplicates_and_a_missing_root_are_reported_per_node(plant: Plant) -> None:
    b = "0:Objects/2:Plant/2:Line1/2:Boiler"
    selections = [
        # path[-3] is past AmbientTemp's path (Plant/AmbientTemp): that one is reported, the others kept.
        BrowseSelection(root="0:Objects/2:Plant", include=("Temp", "AmbientTemp"), device="{path[-3]}",
                        metric="{path[-2]}_t"),
        # The series Line1/Boiler2_t again: refused, the first selection keeps it.
        BrowseSelection(root=f"{b}2", recursive=False, include=("Temp",), device="Line1", metric="{path[0]}_t"),
        BrowseSelection(root="0:Objects/2:Nowhere", device="{name}"),
        BrowseSelection(root=f"{b}1", recursive=False, include=("Pressure",), device="x/{name}"),  # no / in names
        # Everything below Objects but the plant: nothing, as the Server object's variables (namespace 0) are
        # standard diagnostics, not data.
        BrowseSelection(root="0:Objects", exclude=("Plant",), device="{path[1]}", metric="{name}"),
    ]
    source = OpcUaSource("plant", Hub(), url=plant.endpoint, nodes=[], browse=selections, reconnect_max_delay_s=0.2)
    task = await run_source(source)
    try:
        found = sorted((i.node.device, i.node.metric) for i in source._last_items)
        assert found == [("Line1", "Boiler1_t"), ("Line1", "Boiler2_t"), ("Line2", "Boiler3_t")]
        health = source.health()
        errors = health["node_errors"]
        assert set(errors) == {"0:Objects/2:Plant/2:AmbientTemp", f"{b}2/2:Temp", "browse 0:Objects/2:Nowhere",
                               f"{b}1/2:Pressure"}, errors
        assert "path[-3] is past" in errors["0:Objects/2:Plant/2:AmbientTemp"]
        assert f"Line1/Boiler2_t is already the series of {b}2/2:Temp" in errors[f"{b}2/2:Temp"]
        assert "root not found (BadNoMatch)" in errors["browse 0:Objects/2:Nowhere"]
        assert "path separators" in errors[f"{b}1/2:Pressure"]
        assert health["state"] == "connected" and health["error_kind"] == "nodes" and health["subscribed_nodes"] == 3
    finally:
        await stop_source(source, task)


def test_templates() -> None:
    path = ["Plant", "Line1", "Boiler1", "TempSetpoint"]
    assert Template("{path[-2]}").render(path) == "Boiler1"
    assert Template("{name|snake}").render(path) == "temp_setpoint"
    assert Template("{path[1:3]|lower}").render(path) == "line1.boiler1"
    assert Template("{path[0]}-{path[-2]|upper}").render(path) == "Plant-BOILER1"
    assert Template("{path}").render(path) == "Plant.Line1.Boiler1.TempSetpoint"
    assert Template("{name|snake}").render(["x", "PT100 Value (raw)"]) == "pt100_value_raw"
    with pytest.raises(IndexError, match="past"):
        Template("{path[-5]}").render(path)
    assert Template("boiler-1").render(path) == "boiler-1"  # a literal: fine when one variable is chosen
    for bad, why in (("{nmae}", "unknown field"), ("{name|camel}", "unknown filter"),
                     ("{path[]}", "empty index"), ("{name", "braces"), ("{name[0]}", "no index")):
        with pytest.raises(ValueError, match=why):
            Template(bad)


@on_module_loop
async def test_check_config_browse_prints_what_each_selection_resolves_to(plant: Plant, tmp_path: Path) -> None:
    """``vigie check-config DIR --browse`` (a subprocess, as an operator runs it) connects and lists node -> series."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "vigie.yaml").write_text(textwrap.dedent(f"""\
        store: {{engine: embedded, data_dir: data, spool_dir: spool}}
        opcua:
          - name: plant
            url: {plant.endpoint}
            nodes:
              - {{node_id: "{plant.node_id('Plant.Line1.Boiler1.Pressure')}", device: Boiler1, metric: pressure}}
              - {{browse_path: "0:Objects/2:Plant/2:Gone", device: x, metric: y}}
            browse:
              - root: 0:Objects/2:Plant
                include: ["*Temp*"]
                exclude: ["*Debug*"]
                device: "{{path[-2]}}"
                metric: "{{name|snake}}"
          - name: nobody
            url: opc.tcp://127.0.0.1:{free_port()}/
            timeout_s: 2
            browse: [{{root: "0:Objects", device: "{{name}}"}}]
        """))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "check-config", str(config), "--browse", cwd=Path(__file__).parent.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1, (text, err.decode())  # a node that does not resolve, a server that is not there
    n = plant.node_id
    for line in (
        f"opcua plant ({plant.endpoint}):",
        "  nodes: 2 configured: 1 variable(s)",
        f"    {n('Plant.Line1.Boiler1.Pressure')} -> Boiler1/pressure",
        "  browse 0:Objects/2:Plant (include *Temp*; exclude *Debug*; device '{path[-2]}', metric '{name|snake}'): "
        "5 variable(s)",
        f"    {n('Plant.AmbientTemp')} -> Plant/ambient_temp  (0:Objects/2:Plant/2:AmbientTemp)",
        f"    {n('Plant.Line1.Boiler1.Temp')} -> Boiler1/temp  (0:Objects/2:Plant/2:Line1/2:Boiler1/2:Temp)",
        f"    {n('Plant.Line1.Boiler1.TempSetpoint')} -> Boiler1/temp_setpoint  "
        "(0:Objects/2:Plant/2:Line1/2:Boiler1/2:TempSetpoint)",
        f"    {n('Plant.Line1.Boiler2.Temp')} -> Boiler2/temp  (0:Objects/2:Plant/2:Line1/2:Boiler2/2:Temp)",
        f"    {n('Plant.Line2.Boiler3.Temp')} -> Boiler3/temp  (0:Objects/2:Plant/2:Line2/2:Boiler3/2:Temp)",
        "    skipped 0:Objects/2:Plant/2:Line1/2:Boiler1/2:TempText: not a number (data type or array)",
        "  ! 0:Objects/2:Plant/2:Gone: browse path not found (BadNoMatch)",
    ):
        assert line in text.splitlines(), (line, text)
    assert "opcua nobody" in text and "  cannot connect: " in text, text


def test_browse_selections_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    """A template that cannot work is a config problem with its file, line and key, not a surprise at connect."""
    from app.config import ConfigError, load_config

    (tmp_path / "vigie.yaml").write_text(textwrap.dedent("""\
        opcua:
          - url: opc.tcp://127.0.0.1:4840/
            browse:
              - {root: "0:Objects/2:Plant", device: "{path[-2]}", metric: "{nmae}"}
              - {root: "0:Objects/2:Plant", device: "{name}", recursive: maybe}
              - {device: "{name}"}
              - {root: "0:Objects/2:Plant", metric: "{name|camel}"}
          - url: opc.tcp://127.0.0.1:4841/
        """))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    text = str(err.value)
    assert "opcua[0].browse[0].metric: unknown field {nmae}" in text, text
    assert "opcua[0].browse[1].recursive:" in text, text
    assert "opcua[0].browse[2].root: missing (required)" in text, text
    assert "opcua[0].browse[3].device: missing (required)" in text, text
    assert "opcua[0].browse[3].metric: unknown filter |camel" in text, text
    assert "opcua[1].nodes: give nodes, browse selections, or both" in text, text


@on_module_loop
async def test_a_browse_cut_short_by_its_limit_still_keeps_only_numbers(plant: Plant) -> None:
    """The node limit stops the walk, not the check: a text variable found before the stop is not subscribed."""
    from asyncua import Client

    from app.ingest.opcua_browse import browse

    async with Client(plant.endpoint) as client:
        root = await client.nodes.objects.get_child([f"{plant.idx}:Plant"])
        found, skipped = await browse(client, TEMPS, root.nodeid, limit=13)
    names = [b.path[-1] for b in found]
    assert "stopped after 13 nodes" in skipped and names and "TempText" not in names
    assert any("TempText: not a number" in s for s in skipped)
