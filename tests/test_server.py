"""The web server in-process: health, HTTP ingestion, the status page, clean stop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request

import pytest

from app.config import load_config
from app.i18n import t
from app.runtime import Runtime
from app.server import run_server
from tests.helpers import until
from tests.servers import free_port

TOKEN = "s3cret-token"


def http(method: str, url: str, body: bytes | None = None, token: str | None = TOKEN) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


@pytest.fixture
async def served(tmp_path, mosquitto):
    cfg_dir = tmp_path / "config"
    cfg_dir.mkdir()
    (cfg_dir / "vigie.yaml").write_text(
        "server: {anonymous_read: true}\n"  # pages and reads without a login: a public wall display
        "store: {engine: embedded, data_dir: data, spool_dir: spool}\n"
        "http: {token_env: TEST_TOKEN}\n"
        f"mqtt:\n  - name: m\n    host: 127.0.0.1\n    port: {mosquitto.port}\n    client_id: srv-test\n"
        "    subscriptions:\n      - topic: srvtest/{device}/telemetry\n"
        "alarms:\n  rules:\n    - {name: too warm, series: api-*/temp, above: 22, severity: medium}\n"
    )
    loaded = load_config(cfg_dir, env={"TEST_TOKEN": TOKEN})
    runtime = Runtime(loaded, base_dir=tmp_path)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_server(runtime, port=port, stop_event=stop))
    base = f"http://127.0.0.1:{port}"
    await until(lambda: runtime.started.is_set(), what="runtime started")
    await until(lambda: runtime.sources[0].state == "connected", what="MQTT connected")
    await until(lambda: asyncio.to_thread(lambda: http("GET", base + "/health")[0] in (200, 503)),
                what="health endpoint")
    yield runtime, base
    stop.set()
    await asyncio.wait_for(task, 20)


async def test_health_page_and_ingest_api(served):
    runtime, base = served
    status, doc = await asyncio.to_thread(http, "GET", base + "/health")
    assert status == 200, doc
    assert doc["sources"]["m"]["state"] == "connected"
    assert {"queue_depth", "spool_readings", "available"} <= set(doc["store"])

    now_ms = int(time.time() * 1000)
    body = json.dumps([
        {"device": "api-1", "metric": "temp", "value": 21.5, "ts": now_ms, "unit": "°C", "tags": {"room": "a"}},
        {"device": "api-1", "metric": "temp", "value": "hot", "ts": now_ms + 1},
        {"device": "api-1", "metric": "temp", "value": 22.5, "ts": now_ms + 2},
    ]).encode()
    status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body)
    assert status == 400 and doc["accepted"] == 2 and doc["errors"][0]["where"] == "item 1"
    lp = f"weather,device=ws-1 temp=3.5,hum=80i {now_ms}\nthis is not line protocol\n".encode()
    status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/write?precision=ms", lp)
    assert status == 400 and doc["accepted"] == 2 and "line 2" in doc["errors"][0]["where"]
    status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/write?precision=ms",
                                          f"w,device=ws-2 t=1 {now_ms}".encode())
    assert status == 200 and doc == {"accepted": 1, "rejected": 0}
    status, _ = await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body, token="wrong")
    assert status == 401
    status, _ = await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body, token=None)
    assert status == 401

    await runtime.writer.flush()
    assert await runtime.store.count("api-1/temp") == 2
    assert await runtime.store.count("ws-1/weather.hum") == 1  # {measurement}.{field}
    latest = {v.key: v for v in await runtime.store.latest()}
    assert latest["api-1/temp"].value == 22.5 and latest["api-1/temp"].unit == "°C"
    assert runtime.health()["sources"]["http"]["dead_letters"]["total"] == 2
    status, alarms = await asyncio.to_thread(http, "GET", base + "/api/v1/alarms", None, None)
    assert status == 200 and [(a["series"], a["rule"], a["value"]) for a in alarms["active"]] == [
        ("api-1/temp", "too warm", 22.5)]
    assert alarms["transitions"][0]["event"] == "raised" and alarms["rules"] == 1

    # What the system page shows of it: per source, the rejected inputs with their reasons, every series.
    from app.pages.services import PageServices
    from app.pages.status import latest_frame
    from app.pages.system import dead_letters_html, sources_frame, store_html

    services = PageServices.of(runtime)
    frame = sources_frame(services, "fr")
    http_row = frame[frame["source"] == "http"].iloc[0]
    assert http_row["Entrées rejetées"] == 2 and http_row["état"] == t("connected", "fr")
    dead = dead_letters_html(services, "fr")
    assert "<th>raison</th>" in dead and "item 1" in dead and "line 2" in dead and "hot" in dead
    series = latest_frame(services).set_index("series")
    assert series.loc["api-1/temp", "value"] == 22.5 and series.loc["api-1/temp", "unit"] == "°C"
    assert series.loc["api-1/temp", "quality"] == "good" and series.loc["api-1/temp", "age_s"] < 60
    assert "store.queue_depth" in store_html(services) and "live.series" in store_html(services)

    status, page = await asyncio.to_thread(http, "GET", base + "/", None, None)
    assert status == 200 and "Vigie" in page


async def test_layouts_api_and_a_notebook_dashboard_fed_from_a_running_server(served, tmp_path):
    from app.dashboard.remote import RemoteVigie

    runtime, base = served
    layouts_dir = runtime.loaded.layouts_dir()
    layouts_dir.mkdir(exist_ok=True)
    (layouts_dir / "nb.yaml").write_text(
        "title: Notebook\nwidgets:\n- {type: value, id: t, series: api-2/temp, x: 0, y: 0, w: 3, h: 2}\n")
    # The API asks who reads: a notebook's token has the read scope, and may not save.
    reader = runtime.accounts
    reader.add_user("nb-reader", "analyst", "nb-password-1")
    token = reader.create_token("nb-reader", "notebook", ["read"])[1]
    # A token the server does not know is refused, even where a visitor without one may read.
    assert (await asyncio.to_thread(http, "GET", base + "/api/v1/layouts"))[0] == 401
    assert (await asyncio.to_thread(http, "GET", base + "/api/v1/layouts", None, None))[0] == 200
    status, doc = await asyncio.to_thread(http, "GET", base + "/api/v1/layouts", None, token)
    assert status == 200 and "nb" in doc["layouts"]
    status, doc = await asyncio.to_thread(http, "PUT", base + "/api/v1/layouts/nb", b"title: x\n", token)
    assert status == 403 and "layouts:edit" in doc["error"]
    now_ms = int(time.time() * 1000)
    body = json.dumps([{"device": "api-2", "metric": "temp", "value": 19.25, "ts": now_ms, "unit": "°C"}]).encode()
    assert (await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body))[0] == 200

    remote = RemoteVigie(base, token=token)
    dash = await asyncio.to_thread(remote.dashboard, "nb")
    dash.refresh()
    assert "19.25" in dash.views["t"].html.object
    status, env = await asyncio.to_thread(
        http, "GET", f"{base}/api/v1/envelope?series=api-2/temp&start={(now_ms - 1000) * 10**6}"
                     f"&end={(now_ms + 1000) * 10**6}&buckets=10", None, token)
    assert status == 200 and env["series"] == "api-2/temp"
    # The notebook's charts draw the past from the server's store through the same API.
    async def remote_envelope():
        env = await dash.ctx.store.envelope("api-2/temp", (now_ms - 1000) * 10**6, (now_ms + 1000) * 10**6, 10)
        return env if env.mean else None

    remote_env = await until(remote_envelope, what="the reading in the server's store")
    assert remote_env.mean == [19.25] and remote_env.key == "api-2/temp"
    remote.stop()
    dash.stop()

    # The README's cell, in a real Jupyter kernel: the dashboard itself is the cell's output.
    outputs = await asyncio.to_thread(run_notebook_cell, [
        "import panel as pn",
        "from app.dashboard.remote import RemoteVigie",
        'pn.extension("gridstack", "tabulator")',
        f'dash = RemoteVigie("{base}", token="{token}").dashboard("nb")',
        "dash",
    ])
    result = [o for o in outputs if o["output_type"] == "execute_result"]  # what "dash" showed
    assert len(result) == 1 and "application/vnd.holoviews_exec.v0+json" in result[0]["data"], outputs
    assert not any(o["output_type"] == "error" for o in outputs), outputs


def run_notebook_cell(lines: list[str]) -> list[dict]:
    """Execute one cell in a fresh ipykernel (this venv's Python) and return its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("\n".join(lines))])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    return nb.cells[0].outputs


async def test_camera_upload_over_http(served):
    from app.demo.simulate import Simulators
    from app.demo.webcam_sim import DamCamera

    runtime, base = served
    png = DamCamera(Simulators("127.0.0.1", 1, seed="t").dams[0]).render()
    status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/cameras/gate-cam", png)
    assert status == 200 and doc["bytes"] == len(png)
    time_ns, path, ctype = runtime.cameras.latest("gate-cam")
    assert path.read_bytes() == png and ctype == "image/png"
    status, doc = await asyncio.to_thread(http, "POST", base + "/api/v1/cameras/gate-cam", b"GIF89a....")
    assert status == 400 and "not a JPEG or PNG" in doc["error"]
    status, _ = await asyncio.to_thread(http, "POST", base + "/api/v1/cameras/..%2Fetc", png)
    assert status in (400, 404)

    # Webcam widgets point at the frame's URL: the picture, with its type, cached since it never changes.
    def get(path: str) -> tuple[int, bytes, dict]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    status, body, headers = await asyncio.to_thread(get, f"/api/v1/cameras/gate-cam/frames/{time_ns}")
    assert (status, body, headers["Content-Type"]) == (200, png, "image/png")
    assert "immutable" in headers["Cache-Control"]
    status, body, headers = await asyncio.to_thread(get, "/api/v1/cameras/gate-cam/latest")
    assert (status, body, headers["Cache-Control"]) == (200, png, "no-store")
    assert (await asyncio.to_thread(get, f"/api/v1/cameras/gate-cam/frames/{time_ns + 1}"))[0] == 404
    assert (await asyncio.to_thread(get, "/api/v1/cameras/nope-cam/latest"))[0] == 404


async def test_frequent_successful_requests_are_not_access_logged_failures_are(served, caplog):
    runtime, base = served
    caplog.set_level(logging.INFO, logger="tornado.access")
    body = json.dumps([{"device": "log-1", "metric": "m", "value": 1.0}]).encode()
    status, _ = await asyncio.to_thread(http, "POST", base + "/api/v1/readings", body)
    assert status == 200
    assert (await asyncio.to_thread(http, "GET", base + "/health"))[0] in (200, 503)
    assert (await asyncio.to_thread(http, "GET", base + "/api/v1/nothing-here"))[0] == 404
    assert (await asyncio.to_thread(http, "GET", base + "/api/v1/layouts", None, None))[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert not any("/api/v1/readings" in x or "/health" in x for x in lines), lines
    assert any(x.startswith("404 GET /api/v1/nothing-here") for x in lines), lines
    assert any(x.startswith("200 GET /api/v1/layouts") for x in lines), lines  # the rest as before


def test_language_switch_returns_only_to_local_pages():
    from app.pages.language import back_to

    assert back_to("http://127.0.0.1:5006/dashboard?name=bt&lang=en") == "/dashboard?name=bt"
    assert back_to("https://vigie.example.org/history?series=a%2Fb") == "/history?series=a%2Fb"  # behind a proxy
    for referer in (None, "", "https://evil.example//evil.example/x", "http://h/\\evil.example", "javascript:x"):
        assert back_to(referer) == "/", referer
