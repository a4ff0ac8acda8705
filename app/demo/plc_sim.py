"""A simulated pumping-station PLC, served over real OPC-UA by asyncua.

The demo and the tests need an OPC-UA server that behaves like a small
wastewater lift station, so the OPC-UA ingest path is exercised end to end
(sessions, subscriptions, browse paths, status codes, server restarts)
instead of being mocked.

The model: sewage flows into a wet well (``InflowRate``, a slow daily-like
swing with noise and the odd storm surge). Pump 1 runs on a variable-speed
drive: it starts when the level rises above ``P1_START_M`` and stops below
``P1_STOP_M``; while running its speed follows the level between 60 % and
100 %. Pump 2 is a fixed-speed assist pump with higher start and stop levels.
Discharge pressure follows the static head plus a friction term growing with
the square of the flow, and power draw follows the affinity laws (speed
cubed). Simulated time runs at wall-clock speed.

Variables live under ``Objects/PumpStation`` in the namespace registered
first (index 2), with string NodeIds ``ns=2;s=PumpStation.<Name>``, so they
can be addressed both ways.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asyncua import Server, ua

from app.ingest.opcua import OpcUaNode, quiet_asyncua_logs

log = logging.getLogger(__name__)

WELL_AREA_M2 = 2.0
"""Wet well floor area: small, so a cycle takes a minute or two in the demo."""
P1_START_M, P1_STOP_M = 2.0, 0.6
P2_START_M, P2_STOP_M = 2.6, 1.2
P1_MAX_M3H = 220.0
P2_M3H = 160.0
P1_RATED_KW, P2_RATED_KW, AUX_KW = 15.0, 11.0, 0.4
STATIC_HEAD_BAR = 1.2
SPEED_RAMP_PCT_S = 10.0

VARIABLES: dict[str, tuple[str, ua.VariantType]] = {
    "WetWellLevel": ("m", ua.VariantType.Double),
    "InflowRate": ("m³/h", ua.VariantType.Double),
    "Pump1Running": ("", ua.VariantType.Boolean),
    "Pump1Speed": ("%", ua.VariantType.Double),
    "Pump2Running": ("", ua.VariantType.Boolean),
    "DischargePressure": ("bar", ua.VariantType.Double),
    "PowerDraw": ("kW", ua.VariantType.Double),
    "OperatingMode": ("", ua.VariantType.String),
}
"""Variable name -> (unit, OPC-UA type), in address-space order.

``OperatingMode`` (``"AUTO"``, or ``"STORM"`` during a surge) is text, as
PLCs expose: it is not in ``DEFAULT_NODES``, and a client subscribed to it
must reject it (tests use it for that).
"""

_METRICS = {
    "WetWellLevel": "wet_well_level",
    "InflowRate": "inflow_rate",
    "Pump1Running": "pump1_running",
    "Pump1Speed": "pump1_speed",
    "Pump2Running": "pump2_running",
    "DischargePressure": "discharge_pressure",
    "PowerDraw": "power_draw",
}

DEFAULT_NODES: list[OpcUaNode] = [
    OpcUaNode(
        node_id=None,
        browse_path=f"0:Objects/2:PumpStation/2:{name}",
        device="pump-station-1",
        metric=_METRICS[name],
        unit=unit,
        tags={"site": "station-nord"},
    )
    for name, unit in ((name, VARIABLES[name][0]) for name in _METRICS)
]
"""The demo's subscription: every variable, by browse path (matches config/sources.yaml)."""


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass(slots=True)
class PumpStationModel:
    """The station's physics, free of OPC-UA so it can be stepped and tested alone."""

    level_m: float = 1.4
    inflow_m3h: float = 110.0
    p1_running: bool = False
    p1_speed_pct: float = 0.0
    p2_running: bool = False
    pressure_bar: float = 0.3
    power_kw: float = AUX_KW
    t_s: float = 0.0
    storm_left_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def step(self, dt_s: float) -> None:
        """Advance the station by ``dt_s`` seconds."""
        self.t_s += dt_s
        # Inflow: a 5-minute "day" swing, noise, and a storm surge now and then.
        if self.storm_left_s <= 0 and self.rng.random() < dt_s / 600:
            self.storm_left_s = self.rng.uniform(30, 90)
        surge = 220.0 if self.storm_left_s > 0 else 0.0
        self.storm_left_s = max(0.0, self.storm_left_s - dt_s)
        target = 110.0 + 50.0 * math.sin(2 * math.pi * self.t_s / 300.0) + surge
        self.inflow_m3h += (target - self.inflow_m3h) * min(1.0, dt_s / 5.0) + self.rng.gauss(0, 2.0) * dt_s
        self.inflow_m3h = max(0.0, self.inflow_m3h)

        # Level switches with hysteresis, as a PLC would wire them.
        if self.level_m >= P1_START_M:
            self.p1_running = True
        elif self.level_m <= P1_STOP_M:
            self.p1_running = False
        if self.level_m >= P2_START_M:
            self.p2_running = True
        elif self.level_m <= P2_STOP_M:
            self.p2_running = False

        # Pump 1's drive ramps towards a speed set by the level.
        if self.p1_running:
            frac = _clamp((self.level_m - P1_STOP_M) / (P1_START_M - P1_STOP_M), 0.0, 1.0)
            speed_target = 60.0 + 40.0 * frac
        else:
            speed_target = 0.0
        step = SPEED_RAMP_PCT_S * dt_s
        self.p1_speed_pct += _clamp(speed_target - self.p1_speed_pct, -step, step)

        outflow = P1_MAX_M3H * self.p1_speed_pct / 100.0 + (P2_M3H if self.p2_running else 0.0)
        self.level_m += (self.inflow_m3h - outflow) / 3600.0 * dt_s / WELL_AREA_M2
        self.level_m = _clamp(self.level_m, 0.0, 4.0)

        flow_frac = outflow / (P1_MAX_M3H + P2_M3H)
        if outflow > 0:
            pressure = STATIC_HEAD_BAR + 1.6 * flow_frac**2
        else:
            pressure = 0.3  # the check valve holds a little
        self.pressure_bar += (pressure - self.pressure_bar) * min(1.0, dt_s / 1.5)
        self.power_kw = (
            AUX_KW
            + P1_RATED_KW * (self.p1_speed_pct / 100.0) ** 3
            + (P2_RATED_KW if self.p2_running else 0.0)
            + abs(self.rng.gauss(0, 0.05))
        )

    def values(self) -> dict[str, float | bool | str]:
        """Return the variables as the PLC publishes them."""
        return {
            "WetWellLevel": round(self.level_m, 3),
            "InflowRate": round(self.inflow_m3h, 1),
            "Pump1Running": self.p1_running,
            "Pump1Speed": round(self.p1_speed_pct, 1),
            "Pump2Running": self.p2_running,
            "DischargePressure": round(self.pressure_bar + self.rng.gauss(0, 0.005), 3),
            "PowerDraw": round(self.power_kw, 2),
            "OperatingMode": "STORM" if self.storm_left_s > 0 else "AUTO",
        }


class PumpStationServer:
    """The simulated PLC: an asyncua server plus the task that updates its variables.

    ``start()`` builds a fresh asyncua ``Server`` each time, so the same object
    can be stopped and started again on the same port (tests restart it); the
    model's state carries over, as a PLC's would across a network outage.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        namespace: str = "urn:vigie:pumpstation",
        period_s: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.namespace = namespace
        self.period_s = period_s
        self.model = PumpStationModel(rng=random.Random(seed))
        self.ns_index: int | None = None
        self._server: Server | None = None
        self._nodeids: dict[str, ua.NodeId] = {}
        self._held: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        """Return the endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}/vigie/pumpstation/"

    @property
    def running(self) -> bool:
        """Return whether the server is listening."""
        return self._server is not None

    def node_id(self, name: str) -> str:
        """Return the string NodeId of a variable (``ns=2;s=PumpStation.<name>``)."""
        if name not in VARIABLES:
            raise KeyError(f"no variable {name!r}; known: {', '.join(VARIABLES)}")
        return f"ns={self.ns_index or 2};s=PumpStation.{name}"

    async def start(self) -> None:
        """Build the address space, listen, and start the update loop."""
        if self._server is not None:
            return
        quiet_asyncua_logs()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Vigie pump station simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(self.namespace)
        station = await server.nodes.objects.add_object(
            ua.NodeId("PumpStation", idx), ua.QualifiedName("PumpStation", idx)
        )
        values = self.model.values()
        now = datetime.now(UTC)
        for name, (unit, vtype) in VARIABLES.items():
            node = await station.add_variable(
                ua.NodeId(f"PumpStation.{name}", idx), ua.QualifiedName(name, idx), values[name], vtype
            )
            if unit:
                await node.write_attribute(
                    ua.AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(f"{name} in {unit}")))
                )
            self._nodeids[name] = node.nodeid
            await server.write_attribute_value(
                node.nodeid, ua.DataValue(ua.Variant(values[name], vtype), SourceTimestamp=now, ServerTimestamp=now)
            )
        await server.start()
        self.ns_index = idx
        self._server = server
        self._task = asyncio.create_task(self.run(), name=f"plc-sim-{self.port}")
        log.info("pump station simulator listening on %s", self.endpoint)

    async def stop(self) -> None:
        """Cancel the update loop, then close the server and its client connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            log.info("pump station simulator on %s stopped", self.endpoint)

    async def run(self) -> None:
        """Step the model every period and publish its variables (not the held ones)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.period_s)
            now = time.monotonic()
            self.model.step(now - last)
            last = now
            stamp = datetime.now(UTC)
            for name, value in self.model.values().items():
                if name not in self._held:
                    await self._write(name, value, ua.StatusCode(ua.StatusCodes.Good), stamp)

    async def set_value(
        self,
        name: str,
        value: float | bool | str,
        status: ua.StatusCode | int | str | None = None,
        source_time: datetime | None = None,
    ) -> datetime:
        """Write a variable by hand (tests, fault injection) and hold it there.

        The update loop stops overwriting a held variable until ``release(name)``,
        so what the test wrote is what clients see. ``status`` takes a
        ``ua.StatusCode``, a code number, or a name such as ``"BadSensorFailure"``.
        The value takes the variable's own type (a bool or int for a Boolean,
        a number for a Double); anything else raises ``TypeError``, as the
        server would refuse it (``BadTypeMismatch``) without telling.
        Returns the source timestamp written.
        """
        if name not in VARIABLES:
            raise KeyError(f"no variable {name!r}; known: {', '.join(VARIABLES)}")
        if status is None:
            code = ua.StatusCode(ua.StatusCodes.Good)
        elif isinstance(status, ua.StatusCode):
            code = status
        elif isinstance(status, str):
            code = ua.StatusCode(getattr(ua.StatusCodes, status))
        else:
            code = ua.StatusCode(status)
        stamp = source_time or datetime.now(UTC)
        self._held.add(name)
        await self._write(name, value, code, stamp)
        return stamp

    def release(self, name: str) -> None:
        """Let the update loop drive a held variable again."""
        self._held.discard(name)

    async def _write(self, name: str, value: float | bool | str, status: ua.StatusCode, stamp: datetime) -> None:
        if self._server is None:
            raise RuntimeError("the pump station server is not running")
        vtype = VARIABLES[name][1]
        if vtype is ua.VariantType.Boolean and isinstance(value, bool | int):
            variant = ua.Variant(bool(value), vtype)
        elif vtype is ua.VariantType.Double and isinstance(value, int | float) and not isinstance(value, bool):
            variant = ua.Variant(float(value), vtype)
        elif vtype is ua.VariantType.String and isinstance(value, str):
            variant = ua.Variant(value, vtype)
        else:
            raise TypeError(f"{name} is {vtype.name}, not {type(value).__name__}")
        dv = ua.DataValue(variant, StatusCode=status, SourceTimestamp=stamp, ServerTimestamp=datetime.now(UTC))
        await self._server.write_attribute_value(self._nodeids[name], dv)
