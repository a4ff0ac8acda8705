"""Status grid, table, map, webcam and alarm widgets; the camera store, the image decoder and the webcam simulator.

Views are built on a real live cache and checked through the data they
derive (cell states, table rows, map coordinates, the picture shown), with
no browser. Image ingest runs through a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import uuid

import pytest
from bokeh.document import Document
from bokeh.models import TileRenderer
from PIL import Image

from app.api import camera_frame_url
from app.cameras import CameraStore, sniff_image
from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext
from app.dashboard.widgets.alarms import AlarmsSpec
from app.dashboard.widgets.map import MapSpec, mercator
from app.dashboard.widgets.status_grid import STATE_COLORS, StatusGridSpec
from app.dashboard.widgets.table import TableSpec
from app.dashboard.widgets.webcam import WebcamSpec
from app.demo.simulate import Dam
from app.demo.webcam_sim import TEMPLATE, DamCamera, WebcamSimulator
from app.hub import Hub
from app.ingest.deadletters import DeadLetters
from app.ingest.decoders import Context, Decoder
from app.ingest.image import ImageDecoder
from app.ingest.mqtt import MqttSource, MqttSubscription
from app.ingest.topics import TopicTemplate
from app.live import LiveCache
from app.model import Reading, now_ns
from app.spec import SpecError
from tests.helpers import Collector, publish, until

S = 10**9


def png(color: tuple[int, int, int] = (200, 0, 0), size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(color: tuple[int, int, int] = (0, 0, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


def cache(*readings: Reading) -> LiveCache:
    live = LiveCache(capacity=50)
    live.accept(list(readings))
    return live


def renders(view) -> None:
    """Build the Bokeh models, as a session would (catches bad options without a browser)."""
    view.panel.get_root(Document())


# -- status grid ----------------------------------------------------------

def test_status_grid_colours_devices_by_state():
    now = now_ns()
    live = cache(
        Reading("dam-1", "level", now, 12.0), Reading("dam-1", "inflow", now - 900 * S, 3.0),
        Reading("dam-2", "level", now - 600 * S, 11.0),
        Reading("pump-1", "flow", now, 1.0, quality="bad"),
        Reading("pump-2", "flow", now, 1.0, quality="uncertain"),
        Reading("srv-1", "cpu", now, 5.0),
    )
    view = StatusGridSpec(id="g", devices=["dam-*", "pump-?"], stale_after_s=300, columns=3).view(
        WidgetContext(live))
    renders(view)
    states = {device: state for device, state, _ in view.cells}
    assert states == {"dam-1": "ok", "dam-2": "stale", "pump-1": "bad", "pump-2": "uncertain"}  # srv-1 filtered out
    html_text = view.html.object
    assert "data-device='dam-2' data-state='stale'" in html_text and STATE_COLORS["stale"] in html_text
    assert STATE_COLORS["bad"] in html_text and STATE_COLORS["ok"] in html_text
    assert "repeat(3," in html_text and "10 min" in html_text  # dam-2's age

    live.accept([Reading("dam-2", "level", now_ns(), 11.1)])
    view.refresh()
    assert dict((d, s) for d, s, _ in view.cells)["dam-2"] == "ok"


def test_status_grid_uses_the_alarm_engine_state_and_escapes_names():
    class Alarms:
        def device_state(self, device: str) -> str | None:
            return {"dam-1": "alarm", "dam-2": "warning"}.get(device)

    now = now_ns()
    live = cache(Reading("dam-1", "level", now - 3600 * S, 1.0), Reading("dam-2", "level", now, 1.0),
                 Reading("<b>x</b>", "v", now, 1.0))
    view = StatusGridSpec(id="g").view(WidgetContext(live, lang="fr", alarms=Alarms()))
    states = {device: state for device, state, _ in view.cells}
    assert states == {"dam-1": "alarm", "dam-2": "warning", "<b>x</b>": "ok"}
    assert "<b>x</b>" not in view.html.object and "&lt;b&gt;x&lt;/b&gt;" in view.html.object
    assert "normal" in view.html.object  # the "ok" label, translated


def test_status_grid_only_rerenders_when_a_cell_changed():
    live = LiveCache()
    view = StatusGridSpec(id="g").view(WidgetContext(live))
    assert view.cells == [] and "No data yet" in view.html.object
    live.accept([Reading("d", "m", now_ns() - 7200 * S, 1.0)])  # ages in hours: stable across ticks
    view.refresh()
    first = view.html.object
    sent = []
    view.html.div.on_change("text", lambda attr, old, new: sent.append(new))
    view.refresh()
    view.refresh()
    assert sent == [] and view.html.object is first
    live.accept([Reading("d", "m", now_ns(), 2.0)])  # fresh now: the cell changes, and only then is it sent
    view.refresh()
    assert len(sent) == 1 and "data-state='ok'" in sent[0]


# -- table ----------------------------------------------------------------

def test_table_rows_are_formatted_per_language_and_patched(monkeypatch):
    now = now_ns()
    live = cache(Reading("dam-1", "water_level", now - 30 * S, 1234.5, unit="m"),
                 Reading("dam-1", "inflow", now, 3.25, unit="m³/s", quality="uncertain"),
                 Reading("srv-1", "cpu", now, 12.0))
    view = TableSpec(id="t", series=["dam-1/*"], decimals=1).view(WidgetContext(live, lang="fr"))
    renders(view)
    table = view.table
    assert table.titles["value"] == "Valeur" and table.show_index is False and table.disabled is True
    assert table.value.values.tolist() == [
        ["dam-1/inflow", "3,2", "m³/s", "< 10 s", "incertaine"],  # sorted by key; 3.25 rounds half-even
        ["dam-1/water_level", "1\u202f234,5", "m", "30 s", "bonne"],
    ]
    frame = table.value
    patches = []
    original_patch = table.patch

    def spy(value, **kw):
        patches.append(value)
        return original_patch(value, **kw)

    monkeypatch.setattr(table, "patch", spy)
    live.accept([Reading("dam-1", "water_level", now_ns(), 1240.0, unit="m")])
    view.refresh()
    assert table.value is frame  # patched in place, not replaced
    assert table.value.loc[1, "value"] == "1\u202f240,0" and table.value.loc[1, "age"] == "< 10 s"
    assert patches and set(patches[-1]) == {"value", "age"}
    patches.clear()
    view.refresh()
    assert patches == []  # nothing changed, nothing sent

    live.accept([Reading("dam-1", "rainfall", now_ns(), 0.0, unit="mm/h")])  # a new series: a new frame
    view.refresh()
    assert table.value is not frame
    assert table.value["series"].tolist() == ["dam-1/inflow", "dam-1/rainfall", "dam-1/water_level"]


def test_table_columns_choice_and_unknown_series_note():
    live = cache(Reading("a", "x", now_ns(), 1.0))
    view = TableSpec(id="t", series=["a/x", "b/y"], columns=["value", "series", "time"]).view(WidgetContext(live))
    assert list(view.table.value.columns) == ["value", "series", "time"]
    assert view.table.value.loc[0, "series"] == "a/x"
    assert view.notes.visible and "Unknown series" in view.notes.object and "b/y" in view.notes.object
    live.accept([Reading("b", "y", now_ns(), 2.0)])
    view.refresh()
    assert not view.notes.visible
    with pytest.raises(SpecError, match="columns"):
        TableSpec.from_spec({"type": "table", "id": "t", "columns": ["value", "colour"]})


# -- map ------------------------------------------------------------------

def test_map_moves_points_after_a_new_gps_reading():
    t0 = now_ns() - 10 * S
    live = cache(Reading("truck-1", "lat", t0, 45.19), Reading("truck-1", "lon", t0, 5.72),
                 Reading("truck-1", "speed", t0, 42.0, unit="km/h"),
                 Reading("truck-2", "lat", t0, 45.20), Reading("truck-2", "lon", t0, 5.70),
                 Reading("dam-1", "level", t0, 12.0))
    view = MapSpec(id="m", devices=["truck-*"], label_metric="speed", trail_points=5).view(WidgetContext(live))
    renders(view)
    assert not view.figure.select(type=TileRenderer)  # offline by default: no tile source at all
    data = view.points.data
    assert data["device"] == ["truck-1", "truck-2"]
    x, y = mercator(45.19, 5.72)
    assert data["x"][0] == pytest.approx(float(x)) and data["y"][0] == pytest.approx(float(y))
    assert data["label"][0] == "truck-1 42.0 km/h" and data["label"][1] == "truck-2"

    before = view.points.data
    view.refresh()
    assert view.points.data is before  # nothing new: the source is left alone

    t1 = t0 + 5 * S
    live.accept([Reading("truck-1", "lat", t1, 45.20), Reading("truck-1", "lon", t1, 5.73)])
    view.refresh()
    data = view.points.data
    x1, y1 = mercator(45.20, 5.73)
    assert data["x"][0] == pytest.approx(float(x1)) and data["y"][0] == pytest.approx(float(y1))
    assert data["x"][1] == pytest.approx(float(mercator(45.20, 5.70)[0]))  # truck-2 stayed
    trail = view.trails.data
    assert trail["device"] == ["truck-1", "truck-2"]
    assert trail["xs"][0] == pytest.approx([float(x), float(x1)]) and len(trail["xs"][1]) == 1


def test_map_tiles_only_when_asked_and_unknown_device_note():
    live = cache(Reading("truck-1", "lat", now_ns(), 45.0), Reading("truck-1", "lon", now_ns(), 5.0))
    spec = MapSpec(id="m", devices=["truck-1", "truck-9"], tile_url="http://tiles.local/{z}/{x}/{y}.png",
                   tile_attribution="© <OSM>")
    view = spec.view(WidgetContext(live))
    (tiles,) = view.figure.select(type=TileRenderer)
    assert tiles.tile_source.url == "http://tiles.local/{Z}/{X}/{Y}.png"
    assert tiles.tile_source.attribution == "© &lt;OSM&gt;"
    assert view.notes.visible and "truck-9/lat" in view.notes.object
    server_wide = MapSpec(id="m").view(WidgetContext(live, tile_url="/tiles/{z}/{x}/{y}.png"))
    assert server_wide.figure.select(type=TileRenderer)
    with pytest.raises(SpecError, match=r"tile_url.*\{x\}"):
        MapSpec.from_spec({"type": "map", "id": "m", "tile_url": "http://tiles.local/{z}.png"})


# -- camera store -----------------------------------------------------------

def test_camera_store_keeps_the_last_n_frames(tmp_path):
    store = CameraStore(tmp_path / "cams", keep=3)
    assert store.latest("dam-1-cam") is None and store.cameras() == []
    for i in range(5):
        path = store.put("dam-1-cam", 1_000 + i, png((i * 40, 0, 0)))
        assert path == tmp_path / "cams" / "dam-1-cam" / f"{1_000 + i}.png"
    store.put("gate.cam", 7, jpeg())
    assert [t for t, _, _ in store.history("dam-1-cam")] == [1004, 1003, 1002]
    time_ns, path, ctype = store.latest("dam-1-cam")
    assert (time_ns, ctype) == (1004, "image/png") and path.read_bytes() == png((160, 0, 0))
    assert store.latest("gate.cam")[1].suffix == ".jpg" and store.latest("gate.cam")[2] == "image/jpeg"
    assert store.cameras() == ["dam-1-cam", "gate.cam"]
    assert sorted(p.name for p in (tmp_path / "cams" / "dam-1-cam").iterdir()) == ["1002.png", "1003.png",
                                                                                    "1004.png"]  # no temp files
    other = CameraStore(tmp_path / "cams", keep=3)  # another process writing the same directory
    other.put("dam-1-cam", 2_000, png())
    assert store.latest("dam-1-cam")[0] == 2_000
    assert store.read("dam-1-cam")[1] == png()


@pytest.mark.parametrize("camera", ["../evil", "a/b", ".hidden", "..", "", "x" * 65, "a\\b", "-rf"])
def test_camera_store_rejects_unsafe_names(tmp_path, camera):
    store = CameraStore(tmp_path)
    with pytest.raises(ValueError, match="camera name"):
        store.put(camera, 1, png())
    with pytest.raises(ValueError, match="camera name"):
        store.latest(camera)
    assert list(tmp_path.iterdir()) == []


def test_camera_store_rejects_what_is_not_an_image(tmp_path):
    store = CameraStore(tmp_path, max_bytes=10_000)
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        store.put("cam", 1, b"<script>alert(1)</script>")
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        store.put("cam", 1, b"GIF89a....")
    with pytest.raises(ValueError, match="empty"):
        store.put("cam", 1, b"")
    with pytest.raises(ValueError, match="larger than the limit"):
        store.put("cam", 1, b"\x89PNG\r\n\x1a\n" + bytes(20_000))
    with pytest.raises(ValueError, match="declared image/png but the bytes are image/jpeg"):
        store.put("cam", 1, jpeg(), "image/png")
    assert store.put("cam", 2, jpeg(), "image/jpg").suffix == ".jpg"  # a common alias is fine
    assert sniff_image(png()) == "image/png" and sniff_image(b"\xff\xd8") is None
    assert store.cameras() == ["cam"] and len(store.history("cam")) == 1


# -- image decoder ------------------------------------------------------------

def test_image_decoder_dead_letters_what_it_cannot_store(tmp_path):
    store = CameraStore(tmp_path)
    decoder = Decoder.create("image", cameras=store, max_bytes=50_000)
    assert isinstance(decoder, ImageDecoder)
    dead = DeadLetters("t", quiet=True)
    out: list[Reading] = []
    ctx = Context("t", "site/a/camera/cam-1/image", now_ns(), "cam-1", None, {"site": "a"})
    decoder.decode(b"\xff\xfe not an image", ctx, out, dead)
    decoder.decode(b'{"level": 3}', ctx, out, dead)
    decoder.decode(png(size=(400, 400)) + bytes(60_000), ctx, out, dead)
    decoder.decode(png(), Context("t", "cams/../x", now_ns(), "..", None), out, dead)
    decoder.decode(png(), Context("t", "cams/x", now_ns(), None, None), out, dead)
    assert dict(dead.counts) == {"not_an_image": 2, "oversized": 1, "bad_camera_name": 1, "no_device": 1}
    assert out == [] and store.cameras() == []
    decoder.decode(png(), ctx, out, dead)
    assert [(r.key, r.value, r.unit, r.tags) for r in out] == [("cam-1/image_bytes", float(len(png())), "B",
                                                                 {"site": "a"})]
    assert store.latest("cam-1")[0] == ctx.received_ns


async def test_image_decoder_stores_a_png_published_over_mqtt(mosquitto, request, tmp_path):
    prefix = request.node.name
    store = CameraStore(tmp_path / "cams")
    collector = Collector()
    source = MqttSource("cams", Hub(store=collector), host=mosquitto.host, port=mosquitto.port,
                        client_id=f"{prefix}-c", subscriptions=[MqttSubscription(
                            TopicTemplate.parse(f"{prefix}/{TEMPLATE}"), ImageDecoder(cameras=store))])
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.state == "connected", what="MQTT connected")
        frame = DamCamera(Dam("vallon-nord", "dam-1", random.Random(1))).render()
        await publish(mosquitto.host, mosquitto.port, [
            (f"{prefix}/site/vallon-nord/camera/dam-1-cam/image", b"hello, not a picture"),
            (f"{prefix}/site/vallon-nord/camera/dam-1-cam/image", frame),
        ])
        await until(lambda: store.latest("dam-1-cam") is not None, what="frame stored")
        _, path, ctype = store.latest("dam-1-cam")
        assert ctype == "image/png" and path.read_bytes() == frame
        await until(lambda: source.dead.counts["not_an_image"] == 1, what="bad payload dead-lettered")
        (reading,) = collector.readings
        assert (reading.key, reading.value, reading.tags) == ("dam-1-cam/image_bytes", len(frame),
                                                              {"site": "vallon-nord"})
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)


# -- webcam simulator ----------------------------------------------------------

def water_pixels(data: bytes) -> int:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return sum(1 for r, g, b in img.getdata() if b > 140 and r < 60)


def test_dam_camera_water_rises_with_the_level():
    dam = Dam("vallon-nord", "dam-1", random.Random(3))
    camera = DamCamera(dam, width=160, height=100)
    dam.level = dam.floor
    low = camera.render(1_700_000_000 * S)
    dam.level = dam.crest
    high = camera.render(1_700_000_000 * S)
    assert sniff_image(low) == "image/png" and Image.open(io.BytesIO(low)).size == (160, 100)
    assert water_pixels(high) > 2 * water_pixels(low) > 0
    assert camera.render(1_700_000_001 * S) != high  # the time overlay changes the frame
    assert camera.topic == "site/vallon-nord/camera/dam-1-cam/image"


async def test_webcam_simulator_feeds_the_camera_store_through_mqtt(mosquitto, request, tmp_path):
    prefix, tag = request.node.name, uuid.uuid4().hex[:6]  # the simulator's topics have no prefix: unique dams
    store = CameraStore(tmp_path / "cams")
    source = MqttSource("cams", Hub(), host=mosquitto.host, port=mosquitto.port, client_id=f"{prefix}-c",
                        subscriptions=[MqttSubscription(TopicTemplate.parse(TEMPLATE), ImageDecoder(cameras=store))])
    task = asyncio.create_task(source.run())
    sim = WebcamSimulator(mosquitto.host, mosquitto.port,
                          [Dam(f"site-{tag}", f"{tag}-dam-{i}", random.Random(i)) for i in (1, 2)],
                          period_s=0.2, width=96, height=64)
    try:
        await until(lambda: source.state == "connected", what="MQTT connected")
        sim_task = asyncio.create_task(sim.run())
        await until(lambda: all(len(store.history(f"{tag}-dam-{i}-cam")) >= 2 for i in (1, 2)),
                    what="two frames per camera")
        assert sim.connected and sim.published >= 4
        await sim.stop()
        await asyncio.wait_for(sim_task, 5)
    finally:
        await source.stop()
        await asyncio.wait_for(task, 5)


# -- webcam widget -------------------------------------------------------------

def test_webcam_shows_the_newest_frame_and_swaps_it_only_when_newer(tmp_path):
    store = CameraStore(tmp_path)
    spec = WebcamSpec(id="w", camera="dam-1-cam")
    ctx = WidgetContext(LiveCache(), lang="fr", cameras=store)  # no image URL: frames inlined (a notebook)
    view = spec.view(ctx)
    renders(view)
    assert not view.image.visible
    assert "vigie-note" in view.caption.object and "dam-1-cam" in view.caption.object  # "no image yet"

    t1 = 1_764_079_387 * S  # 2025-11-25 14:03:07 UTC
    store.put("dam-1-cam", t1, png((255, 0, 0)))
    view.refresh()
    inline = "data:image/png;base64," + base64.b64encode(png((255, 0, 0))).decode()
    assert view.image.visible and view.src == inline and view.shown_ns == t1
    assert "25/11/2025 14:03:07" in view.caption.object

    sent = []
    view.image.on_change("styles", lambda attr, old, new: sent.append(new["background-image"]))
    view.refresh()
    assert sent == []  # same frame: nothing re-sent
    store.put("dam-1-cam", t1 - S, png((0, 255, 0)))  # an older frame arriving late is not shown
    view.refresh()
    assert sent == []
    store.put("dam-1-cam", t1 + 5 * S, jpeg())
    view.refresh()
    assert len(sent) == 1 and "url('data:image/jpeg;base64," in sent[0] and view.shown_ns == t1 + 5 * S
    assert "14:03:12" in view.caption.object


def test_webcam_on_the_server_points_at_the_frame_url_instead_of_sending_the_picture(tmp_path):
    store = CameraStore(tmp_path)
    store.put("dam-1-cam", 1000, png())
    view = WebcamSpec(id="w", camera="dam-1-cam").view(
        WidgetContext(LiveCache(), cameras=store, image_url=camera_frame_url))
    assert view.src == "/api/v1/cameras/dam-1-cam/frames/1000"
    assert view.image.styles["background-image"] == "url('/api/v1/cameras/dam-1-cam/frames/1000')"
    store.put("dam-1-cam", 2000, jpeg())
    view.refresh()
    assert view.src.endswith("/frames/2000")
    assert store.frame("dam-1-cam", 2000) == (jpeg(), "image/jpeg") and store.frame("dam-1-cam", 1500) is None


def test_webcam_without_a_camera_store_says_so():
    view = WebcamSpec(id="w", camera="cam").view(WidgetContext(LiveCache()))
    assert "No camera store configured" in view.caption.object and not view.image.visible
    with pytest.raises(SpecError, match="camera"):
        WebcamSpec.from_spec({"type": "webcam", "id": "w", "camera": "../etc"})
    with pytest.raises(SpecError, match=r"camera: missing"):
        WebcamSpec.from_spec({"type": "webcam", "id": "w"})


# -- alarms widget ------------------------------------------------------------

def test_alarms_widget_without_an_engine():
    view = AlarmsSpec(id="a").view(WidgetContext(LiveCache(), lang="en"))
    renders(view)
    assert "No alarm rules configured" in view.html.object and "<table" not in view.html.object


def test_alarms_widget_lists_active_alarms_by_severity_newest_first():
    class Engine:
        def __init__(self) -> None:
            self.alarms: list[dict] = []

        def active(self) -> list[dict]:
            return self.alarms

    engine = Engine()
    t0 = 1_764_079_387 * S
    engine.alarms = [
        {"time_ns": t0, "severity": "low", "series": "dam-1/inflow", "message": "inflow high", "state": "active"},
        {"time_ns": t0 + S, "severity": "high", "series": "dam-1/level", "message": "level <HH>", "state": "active"},
        {"time_ns": t0 + 2 * S, "severity": "critical", "series": "dam-2/level", "message": "HH", "state": "ack"},
    ]
    view = AlarmsSpec(id="a", severity_min="high", max_rows=5).view(WidgetContext(LiveCache(), alarms=engine))
    page = view.html.object
    assert [r[2] for r in view._rows] == ["dam-2/level", "dam-1/level"]  # high and above, newest first
    assert page.index("dam-2/level") < page.index("dam-1/level") and "dam-1/inflow" not in page
    assert "level &lt;HH&gt;" in page and "<HH>" not in page  # rule and device text is escaped
    div_text = view.html.div.text
    view.refresh()
    assert view.html.div.text is div_text  # unchanged list: the Div is left alone
    engine.alarms = []
    view.refresh()
    assert "No active alarm" in view.html.object and "<table" not in view.html.object


# -- specs ----------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    StatusGridSpec(id="g", title="Sites", devices=["dam-*", "pump-?"], stale_after_s=30.0, columns=6, w=6),
    TableSpec(id="t", series=["dam-*/water_level"], columns=["series", "value", "time"], decimals=1, max_rows=50),
    MapSpec(id="m", devices=["truck-*"], lat_metric="latitude", lon_metric="longitude", label_metric="speed",
            tile_url="https://tiles.example/{z}/{x}/{y}.png", tile_attribution="© OSM", trail_points=0),
    WebcamSpec(id="w", camera="dam-1-cam", x=4, y=2),
    AlarmsSpec(id="a", severity_min="critical", max_rows=3),
    StatusGridSpec(id="g"), TableSpec(id="t"), MapSpec(id="m"), AlarmsSpec(id="a"),
], ids=lambda s: f"{s.spec_type}-{len(s.to_spec())}")
def test_spec_round_trip(spec):
    data = spec.to_spec()
    assert data["type"] == spec.spec_type
    assert type(spec).from_spec(data) == spec
    assert WidgetSpec.from_spec(data) == spec  # registered under its type
    assert WidgetSpec.kinds()[spec.spec_type].label


def test_specs_reject_bad_values_with_their_path():
    with pytest.raises(SpecError) as err:
        WidgetSpec.from_spec({"type": "status_grid", "id": "g", "columns": 0, "stale_afer_s": 3})
    text = str(err.value)
    assert "columns: 0 is out of range" in text and "did you mean 'stale_after_s'" in text
    with pytest.raises(SpecError, match="severity_min: 'urgent' is not allowed"):
        WidgetSpec.from_spec({"type": "alarms", "id": "a", "severity_min": "urgent"})


# -- value gauge ----------------------------------------------------------------

def test_value_gauge_draws_the_value_arc_in_its_state_colour_with_threshold_ticks():
    from app.dashboard.widgets.value import STATE_COLORS as VALUE_COLORS
    from app.dashboard.widgets.value import ValueSpec

    live = cache(Reading("srv-1", "cpu", now_ns(), 80.0, unit="%"))
    spec = ValueSpec(id="g", series="srv-1/cpu", display="gauge", gauge_min=0, gauge_max=100,
                     warn_above=75, alarm_above=90, decimals=1)
    view = spec.view(WidgetContext(live, lang="fr"))
    renders(view)
    svg = view.html.object
    assert "data-state='warning'" in svg and f"stroke='{VALUE_COLORS['warning']}' stroke-width='16'" in svg
    assert ">80,0</text>" in svg and "% " in svg  # French decimals, the unit
    assert svg.count("stroke-width='3'") == 2  # ticks at 75 and 90
    # 80 % of the way: the arc ends at the dial's point for 0.8 (cos(0.2π) to the right of centre).
    assert "A 80 80 0 0 1 164.7 53.0" in svg
    live.accept([Reading("srv-1", "cpu", now_ns(), 250.0, unit="%")])  # beyond the dial: clamped
    view.refresh()
    assert "A 80 80 0 0 1 180.0 100.0" in view.html.object and "data-state='alarm'" in view.html.object
    with pytest.raises(SpecError, match="gauge_max: must be greater than gauge_min"):
        ValueSpec.from_spec({"type": "value", "id": "g", "series": "a/b", "display": "gauge",
                             "gauge_min": 10, "gauge_max": 10})


def test_the_webcam_stamp_and_the_caption_tell_the_same_local_time():
    """The demo camera stamped its pictures in UTC while the caption spoke Europe/Paris."""
    from app.i18n import fmt_time

    dam = Dam("vallon-nord", "dam-1", random.Random(1))
    t = 1_796_300_000 * 10**9  # a December afternoon: Paris is UTC+1
    stamp = DamCamera(dam, tz="Europe/Paris").stamp(t)
    clock = stamp.split()[1]
    assert stamp.endswith("CET") and clock in fmt_time(t, "fr", "Europe/Paris")
    assert clock not in fmt_time(t, "fr", "UTC")
