"""`vigie demo` as a user runs it: a subprocess, its page, its data, a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from app.dashboard.time_axis import _ZONED_JS
from tests.browser import ROOT, get
from tests.servers import free_port, wait_until


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A running `vigie demo` on a free port, with the demo's own ports moved out of the way."""
    tmp = tmp_path_factory.mktemp("demo")
    cfg = tmp / "config"
    cfg.mkdir()
    mqtt_port, opc_port, web_port = free_port(), free_port(), free_port()
    for f in (ROOT / "config").glob("*.yaml"):
        text = f.read_text().replace("port: 18830", f"port: {mqtt_port}").replace(":48400/", f":{opc_port}/")
        (cfg / f.name).write_text(text)
    (tmp / "layouts").mkdir()
    for f in (ROOT / "layouts").glob("*.yaml"):  # layouts sit beside the config directory
        (tmp / "layouts" / f.name).write_text(f.read_text())
    log = (tmp / "demo.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--port", str(web_port), "--config", str(cfg),
         "--data-root", str(tmp / "data"), "--period", "0.5"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: get(base + "/health")[0] in (200, 503) or proc.poll() is not None, timeout=60,
                   what="demo health endpoint")
        assert proc.poll() is None, (tmp / "demo.log").read_text()
        yield proc, base, tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_demo_serves_its_page_and_ingests_every_source_within_10s(demo):
    proc, base, tmp = demo
    status, body = get(base + "/")
    assert status == 200 and b"Vigie" in body
    t0 = time.monotonic()

    def all_sources_flowing():
        status, body = get(base + "/health")
        if not body:
            return False
        doc = json.loads(body)
        flows = {name: s["readings_total"] for name, s in doc["sources"].items()}
        return doc["store"]["written_total"] > 0 and flows.get("demo-broker", 0) > 0 and \
            flows.get("pump-station", 0) > 0 and doc

    doc = wait_until(all_sources_flowing, timeout=10, interval=0.2, what="demo readings stored")
    assert time.monotonic() - t0 < 10
    assert doc["sources"]["demo-broker"]["dead_letters"]["total"] == 0, doc["sources"]["demo-broker"]
    assert doc["sources"]["pump-station"]["state"] == "connected"


@pytest.mark.browser
def test_flood_dams_dashboard_renders_offline_and_updates_the_readme_screenshot(demo):
    """Open the shipped dashboards in Chromium; no request may leave loopback; refresh docs/ screenshot."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    proc, base, tmp = demo
    seen: list[str] = []
    frames: list[tuple[str, int, str]] = []  # webcam pictures the page fetched: url, status, content type
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1150}, locale="en-GB")
        page.on("request", lambda r: seen.append(r.url))
        page.on("response", lambda r: "/api/v1/cameras/" in r.url and frames.append(
            (r.url, r.status, r.headers.get("content-type", ""))))
        # The demo prints its admin's password once; log in through the form, as a new user does.
        password = re.search(r"log in as  demo / (\S+)", (tmp / "demo.log").read_text()).group(1)
        page.goto(base + "/")
        expect(page.locator("#username")).to_be_visible(timeout=20_000)  # sent to the login page
        page.fill("#username", "demo")
        page.fill("#password", "wrong-password-0")
        page.click("#login")
        expect(page.locator("#login-note")).to_contain_text("Wrong user name or password")
        page.fill("#password", password)
        page.click("#login")
        expect(page.locator(".vigie-user")).to_contain_text("demo", timeout=20_000)
        expect(page.locator(".vigie-role")).to_have_text("admin")
        for path in ("/", "/dashboards", "/history", "/system", "/dashboard?name=servers"):
            page.goto(base + path)
            page.locator(".vigie-nav").first.wait_for(timeout=20_000)
            if path == "/":  # the overview: the sites on a map, and listed beside it, one coloured row each
                tiles = page.locator(".vigie-site")
                expect(tiles.nth(4)).to_be_visible(timeout=20_000)  # a row per demo site
                # The overview re-renders its list every few seconds: read both boxes from one render.
                boxes = wait_until(lambda t=tiles: (b := [t.nth(i).bounding_box() for i in range(2)]) and all(b) and b,
                                   10, 0.1, "two laid-out rows")
                assert abs(boxes[0]["x"] - boxes[1]["x"]) < 5 and boxes[1]["y"] > boxes[0]["y"], boxes
                site_map = page.locator(".vigie-site-map")
                expect(site_map).to_be_visible(timeout=20_000)  # the demo's sites have coordinates (config)
                assert site_map.bounding_box()["x"] < boxes[0]["x"], "the map left of the list"
                assert tiles.first.evaluate("e => getComputedStyle(e).color") == "rgb(255, 255, 255)"
        page.goto(base + "/dashboard?name=flood-dams")
        expect(page.locator(".vigie-number")).to_have_count(6, timeout=20_000)  # five dams and the rain gauge
        # The camera's picture is fetched over HTTP (not sent through the websocket) and shown.
        expect(page.locator(".vigie-webcam-image")).to_have_css("background-image", re.compile(
            r"url\(.*/api/v1/cameras/dam-1-cam/frames/\d+"), timeout=20_000)
        wait_until(lambda: any(status == 200 and ctype == "image/png" for _, status, ctype in frames), timeout=20,
                   what="webcam frame fetched")
        expect(page.locator(".vigie-widget-error")).to_have_count(0)
        # Times in the server's zone (the demo's is Europe/Paris, UTC+1 in November), formatted by the browser.
        labels = page.evaluate(ZONED_TICKS_JS)
        assert labels == ["13:00\n2026-11-25", "14:00"], labels
        # Day ticks (on UTC midnights) keep their date west of Greenwich too.
        days = page.evaluate("""([code]) => {
            const f = new Function("tick", "index", "ticks", "tz", "lang", code).bind({});
            const t = [Date.UTC(2026, 10, 24), Date.UTC(2026, 10, 25)];
            return t.map((x, i) => f(x, i, t, "America/New_York", "fr"));
        }""", [_ZONED_JS])
        assert days == ["24/11", "25/11"], days
        expect(page.locator(".vigie-widget-webcam")).to_contain_text("Europe/Paris")
        chart = page.locator(".vigie-widget-timeseries canvas").first
        wait_until(lambda: (chart.bounding_box() or {"width": 0})["width"] > 600, timeout=20,
                   what="charts laid out at full width")
        page.screenshot(path=str(ROOT / "docs" / "flood-dams.png"))
        browser.close()
    from urllib.parse import urlparse

    offsite = [u for u in seen if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert not offsite, offsite[:10]



ZONED_TICKS_JS = """() => {
    for (const doc of Bokeh.documents) {
        for (const m of doc.all_models) {
            if (m.constructor.__name__ === "CustomJSTickFormatter") {
                return m.doFormat([Date.UTC(2026, 10, 25, 12, 0), Date.UTC(2026, 10, 25, 13, 0)], {});
            }
        }
    }
    return null;
}"""

def test_demo_stops_cleanly_on_sigint(demo):
    proc, base, tmp = demo
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0, (tmp / "demo.log").read_text()[-3000:]
    log = (tmp / "demo.log").read_text()
    # Tornado logs a closed browser websocket as an unretrieved task error: not ours. Nothing of Vigie's may fail.
    assert " ERROR app." not in log and f'File "{ROOT / "app"}' not in log, log[-3000:]
    # What the demo stored is in its embedded store, readable after the process is gone.
    stored = asyncio.run(_stored_devices(tmp / "data" / "data"))
    assert {"dam-1", "dam-5", "truck-1", "srv-1", "pump-station-1"} <= stored, sorted(stored)


async def _stored_devices(data) -> set[str]:
    from app.store.embedded import EmbeddedStore

    store = EmbeddedStore(data)
    await store.open()
    try:
        return {s.device for s in await store.series() if await store.count(s.key)}
    finally:
        await store.close()
