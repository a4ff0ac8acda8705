"""Map: where each tracked device is, with a faint trail of its recent positions.

Works with no internet by default: the points are drawn on a plain Bokeh
figure in Web Mercator (axes labelled in degrees, equal aspect, a light
background), and no request leaves the server. Tiles are opt-in: a
``tile_url`` on the widget or server-wide (``ctx.tile_url``), e.g. a tile
server on the same network. The figure is built once; a refresh replaces the
small point and trail sources only when a position changed.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, WMTSTileSource
from bokeh.plotting import figure

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext, WidgetView
from app.globs import literal, matches
from app.i18n import N_, fmt_number, t

EARTH_RADIUS_M = 6378137.0
MAX_LAT = 85.051129  # Web Mercator's limit
POINT_COLOR = "#1565c0"
_TILE_VARS = re.compile(r"\{([xyzXYZ])\}")


def mercator(lat: np.ndarray | float, lon: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Return Web Mercator x, y (metres) of latitudes and longitudes in degrees."""
    lat = np.clip(np.asarray(lat, dtype=float), -MAX_LAT, MAX_LAT)
    lon = np.asarray(lon, dtype=float)
    x = np.radians(lon) * EARTH_RADIUS_M
    y = np.log(np.tan(math.pi / 4 + np.radians(lat) / 2)) * EARTH_RADIUS_M
    return x, y


def bokeh_tile_url(url: str) -> str:
    """Return an XYZ tile URL with Bokeh's ``{X}{Y}{Z}`` placeholders (``{x}`` is common elsewhere)."""
    return _TILE_VARS.sub(lambda m: "{" + m.group(1).upper() + "}", url)


def base_figure(tile_url: str | None = None, attribution: str = "", min_height: int = 150) -> figure:
    """Return an empty map: Web Mercator axes in degrees, the plain offline background, or the tiles given.

    The map widget and the overview's site map share it.
    """
    fig = figure(x_axis_type="mercator", y_axis_type="mercator", match_aspect=True, sizing_mode="stretch_both",
                 min_height=min_height, tools="pan,wheel_zoom,reset,save", active_scroll="wheel_zoom",
                 toolbar_location="above", background_fill_color="#f4f6f8", border_fill_color="#ffffff")
    fig.x_range.range_padding = fig.y_range.range_padding = 0.15
    fig.x_range.default_span = fig.y_range.default_span = 2000.0  # metres, when one point alone
    fig.grid.grid_line_color = "#dde3e8"
    fig.axis.major_label_text_color = "#666666"
    if tile_url:
        fig.add_tile(WMTSTileSource(url=bokeh_tile_url(tile_url), attribution=html.escape(attribution)))
    return fig


class MapSpec(WidgetSpec):
    """Devices placed by their latitude and longitude series, with their recent trail."""

    spec_type = "map"
    label = N_("Map")

    devices = param.List(default=["*"], item_type=str, doc="Device name patterns (glob: *, ?, [abc]).")
    lat_metric = param.String(default="lat", doc="Metric holding the latitude (degrees).")
    lon_metric = param.String(default="lon", doc="Metric holding the longitude (degrees).")
    label_metric = param.String(default=None, allow_None=True,
                                doc="Metric whose value is written next to each device (optional).")
    tile_url = param.String(default=None, allow_None=True,
                            doc="XYZ tile URL, e.g. http://tiles.local/{z}/{x}/{y}.png (default: no tiles, "
                                "works offline; the server-wide tile URL if one is set).")
    tile_attribution = param.String(default="", doc="Credit the tile provider requires (plain text).")
    trail_points = param.Integer(default=30, bounds=(0, 1000), doc="Recent positions drawn as a trail (0: none).")

    def series_keys(self) -> list[str]:
        names = literal(self.devices)
        return [f"{d}/{m}" for d in names for m in (self.lat_metric, self.lon_metric)]

    def device_patterns(self) -> list[str]:
        """Return the devices shown (their new readings wake the dashboard)."""
        return list(self.devices)

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.devices:
            problems.append((("devices",), "give at least one pattern ('*' for every device)"))
        for key in ("lat_metric", "lon_metric"):
            if not getattr(self, key):
                problems.append(((key,), "missing (required)"))
        if self.tile_url:
            problems += [(("tile_url",), m) for m in tile_url_problems(self.tile_url)]
        return problems

    def view(self, ctx: WidgetContext) -> MapView:
        """Return the live view."""
        return MapView(self, ctx)


def tile_url_problems(url: str) -> list[str]:
    """Return what is wrong with an XYZ tile URL (empty when usable)."""
    problems = []
    if not url.startswith(("http://", "https://", "/")):
        problems.append("must start with http://, https:// or / (a path on this server)")
    found = {m.lower() for m in _TILE_VARS.findall(url)}
    if found != {"x", "y", "z"}:
        problems.append("must contain {x}, {y} and {z}")
    return problems


class MapView(WidgetView):
    """Holds the figure and two sources; swaps their data only when positions changed."""

    spec: MapSpec

    def build(self) -> pn.viewable.Viewable:
        self._version = -1
        self._nkeys = -1
        self._devices: list[str] = []
        self.points = ColumnDataSource({"x": [], "y": [], "device": [], "lat": [], "lon": [], "label": []})
        self.trails = ColumnDataSource({"xs": [], "ys": [], "device": []})
        fig = base_figure(self.spec.tile_url or self.ctx.tile_url, self.spec.tile_attribution)
        fig.multi_line("xs", "ys", source=self.trails, line_color=POINT_COLOR, line_alpha=0.3, line_width=2)
        dots = fig.scatter("x", "y", source=self.points, size=11, fill_color=POINT_COLOR, line_color="#ffffff",
                           line_width=2)
        fig.text("x", "y", text="label", source=self.points, x_offset=8, y_offset=-6, text_font_size="9pt",
                 text_color="#263238")
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[(t("Device", self.lang), "@device"),
                                                            ("lat", "@lat{0.00000}"), ("lon", "@lon{0.00000}")]))
        self.figure = fig
        self.refresh()
        return pn.pane.Bokeh(fig, sizing_mode="stretch_both", min_height=150)

    def _match(self) -> None:
        """Find the devices with both position series (only when series were added)."""
        live = self.ctx.live
        keys = live.keys()
        if len(keys) == self._nkeys:
            return
        self._nkeys = len(keys)
        lat, lon = self.spec.lat_metric, self.spec.lon_metric
        devices = []
        for key in keys:
            ring = live.get(key)
            if ring is None or ring.metric != lat or not matches(ring.device, self.spec.devices):
                continue
            if live.get(f"{ring.device}/{lon}") is not None:
                devices.append(ring.device)
        self._devices = devices
        if self.notes.visible:
            self.check_series()

    def _label(self, device: str) -> str:
        metric = self.spec.label_metric
        ring = self.ctx.live.get(f"{device}/{metric}") if metric else None
        latest = ring.latest() if ring else None
        if latest is None:
            return device
        return f"{device} {fmt_number(latest.value, self.lang, 1)} {latest.unit}".rstrip()

    def _trail(self, device: str) -> tuple[list[float], list[float]]:
        """Return the device's recent positions in Mercator, pairing lat and lon by timestamp."""
        n = self.spec.trail_points
        lat_ring = self.ctx.live.get(f"{device}/{self.spec.lat_metric}")
        lon_ring = self.ctx.live.get(f"{device}/{self.spec.lon_metric}")
        if not n or lat_ring is None or lon_ring is None:
            return [], []
        lat_t, lat_v = lat_ring.window()
        lon_t, lon_v = lon_ring.window()
        _, i, j = np.intersect1d(lat_t[-n:], lon_t[-n:], assume_unique=False, return_indices=True)
        x, y = mercator(lat_v[-n:][i], lon_v[-n:][j])
        return x.tolist(), y.tolist()

    def refresh(self) -> None:
        live = self.ctx.live
        if live.version == self._version:
            return
        self._version = live.version
        self._match()
        rows: dict[str, list] = {"x": [], "y": [], "device": [], "lat": [], "lon": [], "label": []}
        trails: dict[str, list] = {"xs": [], "ys": [], "device": []}
        for device in self._devices:
            lat = live.get(f"{device}/{self.spec.lat_metric}").latest()  # type: ignore[union-attr]
            lon = live.get(f"{device}/{self.spec.lon_metric}").latest()  # type: ignore[union-attr]
            if lat is None or lon is None or not (math.isfinite(lat.value) and math.isfinite(lon.value)):
                continue
            x, y = mercator(lat.value, lon.value)
            for k, v in (("x", float(x)), ("y", float(y)), ("device", device), ("lat", lat.value),
                         ("lon", lon.value), ("label", self._label(device))):
                rows[k].append(v)
            if self.spec.trail_points:
                xs, ys = self._trail(device)
                trails["xs"].append(xs)
                trails["ys"].append(ys)
                trails["device"].append(device)
        if rows != dict(self.points.data):
            self.points.data = rows
        if trails != dict(self.trails.data):
            self.trails.data = trails
