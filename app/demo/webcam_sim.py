"""Demo webcams: a drawn picture of each simulated dam, published as PNG over MQTT.

Each frame shows the reservoir against the dam wall, its water surface at
the simulated level (so a shower visibly raises the lake, and water pours
over the spillway above the crest), rain streaks while it rains, and an
overlay with the camera name, level and time. Frames go through the real
ingest path: ``site/{site}/camera/{device}-cam/image``, binary PNG, QoS 1,
for the ``image`` decoder under the template ``site/{site}/camera/{device}/image``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiomqtt
from PIL import Image, ImageDraw, ImageFont

from app.demo.publisher import SimulatedPublisher
from app.demo.simulate import Dam

log = logging.getLogger(__name__)

TOPIC = "site/{site}/camera/{device}-cam/image"
"""Where a dam's camera publishes (``{device}`` is the dam's device, e.g. ``dam-1``)."""
TEMPLATE = "site/{site}/camera/{device}/image"
"""The ingest template that names the camera ``<dam>-cam``."""

SKY = (176, 206, 232)
HILL = (112, 140, 92)
BED = (120, 104, 84)
WATER = (38, 96, 168)
SURFACE = (90, 150, 210)
CONCRETE = (170, 170, 165)
CONCRETE_EDGE = (110, 110, 105)
RAIN = (225, 232, 240)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font: nothing to install
    except (TypeError, OSError):  # built without FreeType
        return ImageFont.load_default()


class DamCamera:
    """Draws the picture a camera facing a dam would take, from the dam model's state."""

    def __init__(self, dam: Dam, width: int = 320, height: int = 200, seed: int | str | None = None,
                 tz: str = "UTC") -> None:
        if width < 80 or height < 60:
            raise ValueError(f"frame {width}x{height} is too small (at least 80x60)")
        self.dam = dam
        self.zone = ZoneInfo(tz)  # the site's time zone: the stamp agrees with the caption and the pages
        self.width = width
        self.height = height
        self.name = f"{dam.device}-cam"
        self.topic = TOPIC.format(site=dam.site, device=dam.device)
        self._rng = random.Random(None if seed is None else f"{seed}:{self.name}")
        self._font = _font(max(10, height // 16))

    def surface_y(self, level: float) -> float:
        """Return the image row of the water surface for a level (floor low, crest high, top above)."""
        d, h = self.dam, self.height
        y_floor, y_crest = h * 0.80, h * 0.35
        frac = (level - d.floor) / (d.crest - d.floor)
        frac = min(max(frac, -0.1), (d.top - d.floor) / (d.crest - d.floor))
        return y_floor - frac * (y_floor - y_crest)

    def render(self, time_ns: int | None = None) -> bytes:
        """Return one PNG frame of the dam as it is now."""
        time_ns = time.time_ns() if time_ns is None else time_ns
        d, w, h = self.dam, self.width, self.height
        img = Image.new("RGB", (w, h), SKY)
        draw = ImageDraw.Draw(img)
        wall_x = int(w * 0.72)
        y_crest = self.surface_y(d.crest)
        y_top = self.surface_y(d.top)
        # Valley: hills behind, the lake bed below the lowest operating level.
        draw.polygon([(0, h * 0.30), (w * 0.25, h * 0.18), (w * 0.5, h * 0.28), (w * 0.8, h * 0.15), (w, h * 0.25),
                      (w, h), (0, h)], fill=HILL)
        draw.polygon([(0, h * 0.95), (wall_x, h * 0.88), (wall_x, h), (0, h)], fill=BED)
        # Water up to the level, held by the wall.
        y_water = self.surface_y(d.level)
        draw.rectangle([0, y_water, wall_x, h * 0.92], fill=WATER)
        draw.line([(0, y_water), (wall_x, y_water)], fill=SURFACE, width=max(1, h // 100))
        # The wall: a concrete trapezoid, its crest (spillway) marked.
        draw.polygon([(wall_x, y_top), (wall_x + w * 0.06, y_top), (wall_x + w * 0.22, h), (wall_x, h)],
                     fill=CONCRETE, outline=CONCRETE_EDGE)
        draw.line([(wall_x - 3, y_crest), (wall_x + 6, y_crest)], fill=CONCRETE_EDGE, width=2)
        if d.level > d.crest:  # over the spillway: water pours down the downstream face
            draw.polygon([(wall_x, y_water), (wall_x + w * 0.07, y_water), (wall_x + w * 0.24, h),
                          (wall_x + w * 0.17, h)], fill=SURFACE)
        if d.rainfall > 0:
            streaks = int(min(200, 10 + 6 * d.rainfall))
            for _ in range(streaks):
                x, y = self._rng.uniform(0, w), self._rng.uniform(0, h)
                draw.line([(x, y), (x - 2, y + 7)], fill=RAIN, width=1)
        self._overlay(draw, time_ns)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=6)
        return buf.getvalue()

    def stamp(self, time_ns: int) -> str:
        """Return the date and time a frame shows, in the camera's time zone (as the widget's caption does)."""
        local = datetime.fromtimestamp(time_ns / 1e9, tz=UTC).astimezone(self.zone)
        return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or str(self.zone))

    def _overlay(self, draw: ImageDraw.ImageDraw, time_ns: int) -> None:
        stamp = self.stamp(time_ns)
        lines = (f"{self.name}  {self.dam.level:.2f} m", stamp)
        pad, y = 4, 4
        for text in lines:
            left, top, right, bottom = draw.textbbox((pad, y), text, font=self._font)
            draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(0, 0, 0))
            draw.text((pad, y), text, fill=(255, 255, 255), font=self._font)
            y = bottom + 3


class WebcamSimulator(SimulatedPublisher):
    """One camera per dam, each publishing a PNG frame every period on one MQTT connection.

    The dams are the demo simulators' own (``Simulators.dams``), read and never
    stepped here, so the pictures follow the telemetry. ``run()`` reconnects
    with back-off like :class:`app.demo.simulate.Simulators`; frames due
    while the broker is away are not sent later (an old picture is worthless).
    """

    label = "webcam simulator"
    client_prefix = "vigie-cam"

    def __init__(self, host: str, port: int, dams: list[Dam], period_s: float = 5.0, *, width: int = 320,
                 height: int = 200, seed: int | str | None = None, tz: str = "UTC") -> None:
        super().__init__(host, port, period_s)
        self.cameras = [DamCamera(d, width, height, seed, tz) for d in dams]

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            now_ns = time.time_ns()
            for camera in self.cameras:
                await client.publish(camera.topic, camera.render(now_ns), qos=1)
                self.published += 1
            next_at += self.period_s
            now = loop.time()
            if next_at < now:
                next_at = now
            await asyncio.sleep(next_at - now)
