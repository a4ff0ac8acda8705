"""OPC-UA ingest against a real asyncua server: the simulated pumping-station PLC.

The tests share one ``PumpStationServer`` per module (building asyncua's
standard address space costs seconds per start), each with its own
``OpcUaSource`` subscribed to it; the test that stops and restarts the server
has its own. Values are written on the server side with ``set_value`` (which
also holds them against the simulation loop; the hold is let go after each
test), and the readings are awaited against a deadline, never slept for.
The async tests and the server run on the module's event loop, so the
server's tasks live on the loop the tests use.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from app.demo.plc_sim import DEFAULT_NODES, PumpStationModel, PumpStationServer
from app.hub import Hub
from app.ingest.opcua import OpcUaNode, OpcUaSource
from app.model import Reading
from tests.helpers import until
from tests.servers import free_port

DEVICE = "pump-station-1"

on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The async tests run on the module's loop, where the shared server's tasks live."""


class BatchCollector:
    """A hub consumer that keeps every batch it is given, to see readings and batch sizes."""

    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []

    def accept(self, batch: Sequence[Reading]) -> None:
        self.batches.append(list(batch))

    @property
    def readings(self) -> list[Reading]:
        return [r for b in self.batches for r in b]

    def find(self, metric: str, value: float) -> Reading | None:
        """Return the last reading of ``metric`` with ``value``, if any arrived."""
        for r in reversed(self.readings):
            if r.metric == metric and r.value == value:
                return r
        return None


def ns(dt: datetime) -> int:
    """Return a UTC datetime as ns since the epoch, exactly (microsecond precision)."""
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_plc() -> AsyncIterator[PumpStationServer]:
    server = PumpStationServer(port=free_port(), period_s=0.2, seed=7)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def plc(shared_plc: PumpStationServer) -> PumpStationServer:
    """The module's PLC, for tests that only subscribe and write values, as a fresh one would start.

    The model goes back to its start (same seed), its values are published
    with a good status, and nothing is held: what an earlier test wrote or
    held is not seen.
    """
    shared_plc.model = PumpStationModel(rng=random.Random(7))
    for name, value in shared_plc.model.values().items():
        await shared_plc.set_value(name, value)
        shared_plc.release(name)
    return shared_plc


@pytest_asyncio.fixture(loop_scope="module")
async def own_plc() -> AsyncIterator[PumpStationServer]:
    """A PLC of the test's own, free to be stopped and started again."""
    server = PumpStationServer(port=free_port(), period_s=0.2, seed=7)
    await server.start()
    yield server
    await server.stop()


@asynccontextmanager
async def subscribed(plc: PumpStationServer, nodes: list[OpcUaNode],
                     **options: Any) -> AsyncIterator[tuple[OpcUaSource, BatchCollector]]:
    """Run an OpcUaSource on the PLC until connected; stop it (promptly) on exit."""
    hub = Hub()
    collector = BatchCollector()
    hub.add(collector)
    options = {"sampling_interval_ms": 50, "publishing_interval_ms": 100, "reconnect_max_delay_s": 0.5} | options
    source = OpcUaSource("pump", hub, url=plc.endpoint, nodes=nodes, **options)
    task = asyncio.create_task(source.run(), name="opcua-under-test")
    try:
        await until(lambda: source.state == "connected" or task.done(), timeout=10, what="connected")
        assert not task.done(), task
        yield source, collector
    finally:
        await source.stop()
        await asyncio.wait_for(task, 3)  # stop() must make run() return promptly
        assert source.state == "stopped"


async def arrives(collector: BatchCollector, metric: str, value: float, timeout: float = 5) -> Reading:
    return await until(lambda: collector.find(metric, value), timeout=timeout, what=f"{metric}={value}")


def node(metric: str, *, node_id: str | None = None, browse_path: str | None = None, unit: str = "") -> OpcUaNode:
    return OpcUaNode(node_id=node_id, browse_path=browse_path, device=DEVICE, metric=metric, unit=unit)


@on_module_loop
async def test_value_change_arrives_with_source_timestamp_quality_and_unit(plc: PumpStationServer) -> None:
    async with subscribed(plc, DEFAULT_NODES) as (source, collector):
        # The initial values of all seven nodes come in one publish, handed over as one batch.
        await until(lambda: collector.batches, what="initial values")
        assert {r.metric for r in collector.batches[0]} == {n.metric for n in DEFAULT_NODES}
        assert source.health()["subscribed_nodes"] == 7

        stamp = await plc.set_value("WetWellLevel", 3.217)
        r = await arrives(collector, "wet_well_level", 3.217)
        assert (r.device, r.unit, r.quality, r.source) == (DEVICE, "m", "good", "pump")
        assert r.tags == {"site": "station-nord"}
        assert abs(r.time_ns - ns(stamp)) < 1_000_000

        # A time set by the PLC itself (its own clock, in the past) is the reading's time.
        plc_time = datetime.now(UTC) - timedelta(minutes=3)
        await plc.set_value("InflowRate", 151.5, source_time=plc_time)
        r = await arrives(collector, "inflow_rate", 151.5)
        assert abs(r.time_ns - ns(plc_time)) < 1_000_000 and r.unit == "m³/h"

        # A Bad status: the server nulls the value (OPC-UA Part 4, 7.7.1), the
        # reading keeps the last value, with quality bad and the new time.
        stamp = await plc.set_value("WetWellLevel", 3.5, status="BadSensorFailure")
        r = await until(lambda: next((r for r in collector.readings if r.quality == "bad"), None),
                        what="a bad reading")
        assert (r.metric, r.value) == ("wet_well_level", 3.217) and abs(r.time_ns - ns(stamp)) < 1_000_000

        await plc.set_value("WetWellLevel", 3.25, status="UncertainLastUsableValue")
        assert (await arrives(collector, "wet_well_level", 3.25)).quality == "uncertain"

        await plc.set_value("Pump2Running", True)
        assert (await arrives(collector, "pump2_running", 1.0)).quality == "good"
        assert not source.dead.total


@on_module_loop
async def test_text_values_are_dead_lettered_and_numbers_still_flow(plc: PumpStationServer) -> None:
    nodes = [node("mode", browse_path="0:Objects/2:PumpStation/2:OperatingMode"),
             node("power", node_id=plc.node_id("PowerDraw"), unit="kW")]
    async with subscribed(plc, nodes) as (source, collector):
        await until(lambda: source.dead.counts["wrong_type"], what="a dead letter")
        letter = source.dead.recent[-1]
        assert letter.where == f"{DEVICE}/mode (0:Objects/2:PumpStation/2:OperatingMode)"
        assert "str" in letter.reason and "AUTO" in letter.preview
        await plc.set_value("OperatingMode", "MANUAL")
        await until(lambda: source.dead.counts["wrong_type"] == 2, what="a second dead letter")
        await plc.set_value("PowerDraw", 7.25)
        await arrives(collector, "power", 7.25)
        assert not any(r.metric == "mode" for r in collector.readings)


@on_module_loop
async def test_nodes_by_node_id_and_by_browse_path(plc: PumpStationServer) -> None:
    nodes = [
        node("inflow_by_id", node_id=plc.node_id("InflowRate"), unit="m³/h"),
        node("inflow_by_path", browse_path="0:Objects/2:PumpStation/2:InflowRate", unit="m³/h"),
        node("pump1_by_id", node_id="ns=2;s=PumpStation.Pump1Running"),
    ]
    async with subscribed(plc, nodes) as (source, collector):
        assert source.health()["subscribed_nodes"] == 3
        stamp = await plc.set_value("InflowRate", 123.4)
        by_id = await arrives(collector, "inflow_by_id", 123.4)
        by_path = await arrives(collector, "inflow_by_path", 123.4)
        assert by_id.time_ns == by_path.time_ns and abs(by_id.time_ns - ns(stamp)) < 1_000_000
        assert by_id.unit == by_path.unit == "m³/h"
        await plc.set_value("Pump1Running", False)
        await arrives(collector, "pump1_by_id", 0.0)
        await plc.set_value("Pump1Running", True)
        await arrives(collector, "pump1_by_id", 1.0)


@on_module_loop
async def test_absolute_deadband_filters_small_changes(plc: PumpStationServer) -> None:
    nodes = [node("level", browse_path="0:Objects/2:PumpStation/2:WetWellLevel", unit="m"),
             node("pump1", browse_path="0:Objects/2:PumpStation/2:Pump1Running")]
    async with subscribed(plc, nodes, deadband=1.0) as (source, collector):
        assert source.health()["subscribed_nodes"] == 2
        await plc.set_value("WetWellLevel", 3.0)  # the simulation starts near 1.4 m
        await arrives(collector, "level", 3.0)
        await plc.set_value("WetWellLevel", 3.5)  # within the deadband
        # (asyncua's server compares with the previous value, the spec with the
        # last reported one: this step passes either way)
        await plc.set_value("WetWellLevel", 5.0)
        await arrives(collector, "level", 5.0)  # notifications keep their order: 3.5 would be here by now
        assert collector.find("level", 3.5) is None
        await plc.set_value("Pump1Running", True)  # Booleans are monitored too
        await plc.set_value("Pump1Running", False)
        await arrives(collector, "pump1", 0.0)


@on_module_loop
async def test_server_restart_resumes_without_restarting_the_source(own_plc: PumpStationServer) -> None:
    plc = own_plc  # it stops and starts the server: not the shared one
    nodes = [node("level", browse_path="0:Objects/2:PumpStation/2:WetWellLevel", unit="m")]
    async with subscribed(plc, nodes) as (source, collector):
        await plc.set_value("WetWellLevel", 1.11)
        await arrives(collector, "level", 1.11)

        await plc.stop()
        await until(lambda: source.state == "disconnected", timeout=5, what="disconnected")
        # Still down after a failed reconnect attempt: health says so, and why.
        await until(lambda: "refused" in (source.last_error or "").lower() or "111" in (source.last_error or ""),
                    timeout=5, what="a refused reconnect")
        health = source.health()
        assert health["state"] == "disconnected" and health["subscribed_nodes"] == 0

        await plc.start()  # same port, a fresh server
        await until(lambda: source.state == "connected", timeout=10, what="reconnected")
        health = source.health()
        assert health["subscribed_nodes"] == 1 and health["connects"] == 2
        stamp = await plc.set_value("WetWellLevel", 2.22)
        r = await arrives(collector, "level", 2.22)
        assert abs(r.time_ns - ns(stamp)) < 1_000_000


@on_module_loop
async def test_missing_nodes_are_reported_and_the_others_flow(plc: PumpStationServer) -> None:
    nodes = [
        node("level", browse_path="0:Objects/2:PumpStation/2:WetWellLevel", unit="m"),
        node("ghost_by_id", node_id="ns=2;s=PumpStation.DoesNotExist"),
        node("ghost_by_path", browse_path="0:Objects/2:PumpStation/2:NoSuchThing"),
        node("malformed", node_id="ns=2;q=what"),
    ]
    async with subscribed(plc, nodes) as (source, collector):
        health = source.health()
        assert health["state"] == "connected"
        assert health["subscribed_nodes"] == 1 and health["nodes"] == 4
        errors: dict[str, str] = health["node_errors"]
        assert "BadNodeIdUnknown" in errors["ns=2;s=PumpStation.DoesNotExist"]
        assert "BadNoMatch" in errors["0:Objects/2:PumpStation/2:NoSuchThing"]
        assert "invalid NodeId" in errors["ns=2;q=what"]
        last_error: str = health["last_error"]
        assert "ns=2;s=PumpStation.DoesNotExist" in last_error and "NoSuchThing" in last_error

        await plc.set_value("WetWellLevel", 0.77)
        r = await arrives(collector, "level", 0.77)
        assert r.unit == "m"
        assert not any(r.metric.startswith(("ghost", "malformed")) for r in collector.readings)


def test_a_node_needs_exactly_one_address() -> None:
    make: Callable[..., OpcUaNode] = node
    with pytest.raises(ValueError, match="exactly one"):
        make("m")
    with pytest.raises(ValueError, match="exactly one"):
        make("m", node_id="ns=2;s=X", browse_path="0:Objects")
