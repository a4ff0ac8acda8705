"""Demo simulators that publish over real MQTT, so the demo exercises the real ingest path.

Each kind of device is a small model with ``step(dt_s)`` and a reading, free of
MQTT so its dynamics can be tested alone; ``Simulators`` owns one of each per
device and publishes their readings every period on one client connection, at
QoS 1. Simulated time runs at wall-clock speed: one period advances every
model by ``period_s`` seconds.

Formats (the demo config and the decoders depend on them):

- dams: ``site/{site}/device/dam-N/telemetry``, JSON
  ``{"ts": <epoch ms>, "water_level": m, "inflow": m³/s, "rainfall": mm/h}``
- GPS trackers: ``fleet/truck-N/gps``, JSON ``{"ts", "lat", "lon", "speed": km/h}``
- IIoT servers: ``servers/srv-N/metrics``, line protocol
  ``system cpu=12.5,mem=43.1,disk=71.2 <epoch ns>``
- rain gauge: ``site/{site}/device/rain-gauge-1/value/battery``, a plain number
  of volts (``3.71``), every ``BATTERY_EVERY`` periods.

A seed makes every model reproducible; each model draws from its own random
stream (seeded from the seed and its device name), so adding a truck does not
change how the dams behave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass

import aiomqtt

from app.demo.publisher import SimulatedPublisher

log = logging.getLogger(__name__)

CITY_CENTRE = (45.19, 5.72)
"""Latitude and longitude the trucks drive around (Grenoble)."""
DAM_SITES = ("vallon-nord", "vallon-sud", "vallon-est", "vallon-ouest", "vallon-haut")
BATTERY_EVERY = 10
"""The rain gauge reports its battery once every this many periods."""
KM_PER_DEG_LAT = 111.32


def _rng(seed: int | str | None, name: str) -> random.Random:
    """Return a random stream of its own for one model."""
    return random.Random(None if seed is None else f"{seed}:{name}")


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass(slots=True)
class RainEvent:
    """A shower: intensity rises and falls as a half sine over its duration."""

    peak_mm_h: float
    duration_s: float
    elapsed_s: float = 0.0

    @property
    def intensity(self) -> float:
        """Return the rainfall now, in mm/h."""
        if self.done:
            return 0.0
        return self.peak_mm_h * math.sin(math.pi * self.elapsed_s / self.duration_s)

    @property
    def done(self) -> bool:
        """Return whether the shower is over."""
        return self.elapsed_s >= self.duration_s


class Dam:
    """A flood-control reservoir: a water balance with lagged runoff in and gated release out.

    Rain feeds the catchment, whose runoff reaches the reservoir with a
    first-order lag (``runoff_lag_s``); the gates release the base flow plus
    more as the level rises above its base, and a spillway takes over above
    the crest, so the level rises during a shower, peaks after it, and drains
    back slowly. Sizes are scaled so a shower of a few minutes moves the level
    by a metre or more: a demo has minutes, not days.
    """

    SUBSTEP_S = 5.0

    def __init__(self, site: str, device: str, rng: random.Random) -> None:
        self.site = site
        self.device = device
        self.rng = rng
        self.base_level = rng.uniform(8.0, 15.0)
        self.floor = self.base_level - 3.0
        """Lowest operating level (m); the reading never goes below."""
        self.crest = self.base_level + 6.0
        """Spillway crest (m); above it the spillway releases fast."""
        self.top = self.crest + 1.0
        """Top of the dam (m); the level never goes above."""
        self.base_inflow = rng.uniform(2.0, 6.0)
        self.runoff_gain = rng.uniform(0.6, 1.4)  # m³/s of runoff per mm/h of rain
        self.runoff_lag_s = rng.uniform(60.0, 120.0)
        self.area_m2 = rng.uniform(3000.0, 6000.0)
        self.gate_gain = rng.uniform(10.0, 20.0)  # m³/s more release per metre above base
        self.mean_dry_s = rng.uniform(300.0, 900.0)
        self.level = self.base_level + rng.uniform(-0.2, 0.2)
        self.inflow = self.base_inflow
        self.rain: RainEvent | None = None

    @property
    def rainfall(self) -> float:
        """Return the rainfall now, in mm/h."""
        return self.rain.intensity if self.rain else 0.0

    @property
    def fill(self) -> float:
        """Return the level as a fraction of floor-to-crest, for drawing (0 empty, 1 at the crest)."""
        return _clamp((self.level - self.floor) / (self.crest - self.floor), 0.0, 1.0)

    def outflow(self) -> float:
        """Return what the gates and the spillway release now, in m³/s."""
        q = max(0.5, self.base_inflow + self.gate_gain * (self.level - self.base_level))
        if self.level > self.crest:
            q += 60.0 * (self.level - self.crest) ** 1.5
        return q

    def start_rain(self, peak_mm_h: float, duration_s: float) -> None:
        """Start a shower now (the random weather does this too)."""
        self.rain = RainEvent(peak_mm_h, duration_s)

    def step(self, dt_s: float) -> None:
        """Advance weather, runoff and water balance by ``dt_s`` seconds."""
        remaining = dt_s
        while remaining > 1e-9:
            dt = min(self.SUBSTEP_S, remaining)
            remaining -= dt
            if self.rain is None and self.rng.random() < dt / self.mean_dry_s:
                self.start_rain(self.rng.uniform(5.0, 40.0), self.rng.uniform(120.0, 600.0))
            target = self.base_inflow + self.runoff_gain * self.rainfall
            self.inflow += (target - self.inflow) * (1.0 - math.exp(-dt / self.runoff_lag_s))
            self.level += (self.inflow - self.outflow()) * dt / self.area_m2
            self.level = _clamp(self.level, self.floor, self.top)
            if self.rain is not None:
                self.rain.elapsed_s += dt
                if self.rain.done:
                    self.rain = None

    def reading(self) -> dict[str, float]:
        """Return what the dam's sensors read now, with their noise."""
        g = self.rng.gauss
        rain = self.rainfall
        return {
            "water_level": round(_clamp(self.level + g(0.0, 0.005), self.floor, self.top), 3),
            "inflow": round(max(0.0, self.inflow * (1.0 + g(0.0, 0.02))), 2),
            "rainfall": round(max(0.0, rain * (1.0 + g(0.0, 0.05))), 1) if rain > 0 else 0.0,
        }


class Tracker:
    """A truck driving round a closed loop around the city centre, stopping now and then.

    The loop is a circle bent by two harmonics (so it looks like streets, not a
    compass); the truck moves along it at its own speed, which eases towards
    a target speed picked every minute or so, sometimes zero (traffic lights).
    """

    ACCEL_KMH_PER_S = 5.0  # about 1.4 m/s²

    def __init__(self, device: str, rng: random.Random, centre: tuple[float, float] = CITY_CENTRE) -> None:
        self.device = device
        self.rng = rng
        self.centre = centre
        self.radius_km = rng.uniform(1.5, 4.0)
        self.harmonics = [(rng.uniform(0.05, 0.15), k, rng.uniform(0.0, 2 * math.pi)) for k in (2, 3)]
        self.theta = rng.uniform(0.0, 2 * math.pi)
        self.direction = rng.choice((1, -1))
        self.speed_kmh = rng.uniform(20.0, 50.0)
        self.target_kmh = self.speed_kmh
        self.until_new_target_s = rng.uniform(20.0, 90.0)

    def _xy_km(self, theta: float) -> tuple[float, float]:
        r = self.radius_km * (1.0 + sum(a * math.sin(k * theta + phase) for a, k, phase in self.harmonics))
        return r * math.cos(theta), r * math.sin(theta)

    @property
    def lat(self) -> float:
        """Return the latitude now."""
        return self.centre[0] + self._xy_km(self.theta)[1] / KM_PER_DEG_LAT

    @property
    def lon(self) -> float:
        """Return the longitude now."""
        return self.centre[1] + self._xy_km(self.theta)[0] / (KM_PER_DEG_LAT * math.cos(math.radians(self.centre[0])))

    def step(self, dt_s: float) -> None:
        """Drive for ``dt_s`` seconds."""
        self.until_new_target_s -= dt_s
        if self.until_new_target_s <= 0:
            self.target_kmh = 0.0 if self.rng.random() < 0.15 else self.rng.uniform(20.0, 70.0)
            self.until_new_target_s = self.rng.uniform(20.0, 90.0)
        change = _clamp(self.target_kmh - self.speed_kmh, -self.ACCEL_KMH_PER_S * dt_s, self.ACCEL_KMH_PER_S * dt_s)
        self.speed_kmh += change
        # Arc length to angle: divide by the loop's local speed |dP/dθ|.
        distance_km = self.speed_kmh * dt_s / 3600.0
        x0, y0 = self._xy_km(self.theta)
        x1, y1 = self._xy_km(self.theta + 1e-4)
        per_rad = math.hypot(x1 - x0, y1 - y0) / 1e-4
        self.theta = (self.theta + self.direction * distance_km / per_rad) % (2 * math.pi)

    def reading(self) -> dict[str, float]:
        """Return what the GPS reads now: ~3 m of position noise, a noisy speed."""
        noise_deg = 3.0 / 1000.0 / KM_PER_DEG_LAT
        speed = self.speed_kmh + self.rng.gauss(0.0, 0.5) if self.speed_kmh > 0 else 0.0
        return {
            "lat": round(self.lat + self.rng.gauss(0.0, noise_deg), 6),
            "lon": round(self.lon + self.rng.gauss(0.0, noise_deg), 6),
            "speed": round(max(0.0, speed), 1),
        }


class IiotServer:
    """A server's CPU, memory and disk use in %: mean-reverting walks, CPU bursts, a disk filling until log rotation."""

    def __init__(self, device: str, rng: random.Random) -> None:
        self.device = device
        self.rng = rng
        self.cpu_base = rng.uniform(10.0, 35.0)
        self.cpu = self.cpu_base
        self.burst_s = 0.0
        self.mem_base = rng.uniform(35.0, 65.0)
        self.mem = self.mem_base
        self.disk = rng.uniform(40.0, 70.0)
        self.disk_growth_per_s = rng.uniform(0.0002, 0.0008)  # 0.7-2.9 % an hour

    def step(self, dt_s: float) -> None:
        """Advance the walks by ``dt_s`` seconds."""
        g, sq = self.rng.gauss, math.sqrt(dt_s)
        if self.burst_s > 0:
            self.burst_s -= dt_s
        elif self.rng.random() < dt_s / 120.0:
            self.burst_s = self.rng.uniform(10.0, 30.0)
        cpu_target = 85.0 if self.burst_s > 0 else self.cpu_base
        self.cpu = _clamp(self.cpu + (cpu_target - self.cpu) * min(1.0, 0.2 * dt_s) + g(0.0, 3.0) * sq, 0.5, 100.0)
        self.mem = _clamp(self.mem + (self.mem_base - self.mem) * min(1.0, 0.01 * dt_s) + g(0.0, 0.3) * sq,
                          5.0, 98.0)
        self.disk += self.disk_growth_per_s * dt_s * self.rng.uniform(0.5, 1.5)
        if self.disk > 90.0:  # log rotation frees space: a sawtooth, not a disk stuck full
            self.disk -= self.rng.uniform(15.0, 25.0)

    def line(self, time_ns: int) -> str:
        """Return the reading as one line of InfluxDB line protocol."""
        return f"system cpu={self.cpu:.1f},mem={self.mem:.1f},disk={self.disk:.1f} {time_ns}"


class RainGauge:
    """A solar-powered rain gauge whose battery charges by day and drains by night."""

    DAY_S = 1200.0  # a demo day: twenty minutes

    def __init__(self, site: str, device: str, rng: random.Random) -> None:
        self.site = site
        self.device = device
        self.rng = rng
        self.clock_s = rng.uniform(0.0, self.DAY_S)

    @property
    def battery_v(self) -> float:
        """Return the battery voltage now."""
        return 3.8 + 0.2 * math.sin(2 * math.pi * self.clock_s / self.DAY_S)

    def step(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass."""
        self.clock_s += dt_s

    def value(self) -> str:
        """Return the battery reading as its plain-number payload."""
        return f"{self.battery_v + self.rng.gauss(0.0, 0.01):.2f}"


class Simulators(SimulatedPublisher):
    """Every demo device, published over one MQTT connection at QoS 1 every period.

    ``run()`` connects, publishes until ``stop()``, and reconnects with
    back-off when the broker goes away; the models pause meanwhile, and a
    period cut short by the disconnect is finished after reconnecting.
    ``dams`` stays readable while running, for the webcam simulator.
    """

    label = "simulators"
    client_prefix = "vigie-sim"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        period_s: float = 1.0,
        seed: int | str | None = None,
        dams: int = 5,
        trackers: int = 3,
        servers: int = 1,
    ) -> None:
        super().__init__(host, port, period_s)
        self.dams = [
            Dam(DAM_SITES[i] if i < len(DAM_SITES) else f"vallon-{i + 1}", f"dam-{i + 1}", _rng(seed, f"dam-{i + 1}"))
            for i in range(dams)
        ]
        self.trackers = [Tracker(f"truck-{i + 1}", _rng(seed, f"truck-{i + 1}")) for i in range(trackers)]
        self.servers = [IiotServer(f"srv-{i + 1}", _rng(seed, f"srv-{i + 1}")) for i in range(servers)]
        self.rain_gauge = RainGauge(DAM_SITES[0], "rain-gauge-1", _rng(seed, "rain-gauge-1"))
        self.ticks = 0
        """Periods simulated so far."""
        self._pending: deque[tuple[str, str]] = deque()

    @property
    def backlog(self) -> int:
        """Return how many messages of the current period still wait for the broker."""
        return len(self._pending)

    def tick(self, time_ns: int) -> list[tuple[str, str]]:
        """Return this period's messages (stamped ``time_ns``), then advance every model one period."""
        ts_ms = time_ns // 1_000_000
        out: list[tuple[str, str]] = []
        for dam in self.dams:
            out.append((f"site/{dam.site}/device/{dam.device}/telemetry", json.dumps({"ts": ts_ms, **dam.reading()})))
        for truck in self.trackers:
            out.append((f"fleet/{truck.device}/gps", json.dumps({"ts": ts_ms, **truck.reading()})))
        for srv in self.servers:
            out.append((f"servers/{srv.device}/metrics", srv.line(time_ns)))
        if self.ticks % BATTERY_EVERY == 0:
            gauge = self.rain_gauge
            out.append((f"site/{gauge.site}/device/{gauge.device}/value/battery", gauge.value()))
        for model in (*self.dams, *self.trackers, *self.servers, self.rain_gauge):
            model.step(self.period_s)
        self.ticks += 1
        return out

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if not self._pending:
                self._pending.extend(self.tick(time.time_ns()))
            # Taken off the list only once acknowledged: a tick cut short by a disconnect resumes after it.
            while self._pending:
                topic, payload = self._pending[0]
                await client.publish(topic, payload, qos=1)
                self._pending.popleft()
                self.published += 1
            next_at += self.period_s
            now = loop.time()
            if next_at < now:  # fell behind (slow broker): skip the missed periods rather than burst
                next_at = now
            await asyncio.sleep(next_at - now)
