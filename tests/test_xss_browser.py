"""User text is text: script-bearing names, titles, units, captions and messages render literally, never run.

One server, fed through the HTTP ingest API with readings whose device,
metric, unit and site carry markup, and configured with alarm rules and a
layout whose every text field does too. Each page, embed and generated
dashboard is opened in Debian's Chromium; any dialog (``alert``), console
error or page error fails the test, and the hostile text must be visible as
text. The same pages must load under the Content-Security-Policy with no
violation.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
import yaml

from tests.browser import CHROMIUM, CHROMIUM_ARGS, VigieServer, get

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
SVG = '"><svg onload=alert(3)>'

DEVICE = IMG  # names may not hold '/', so no </script> in them
METRIC = SVG
UNIT = SCRIPT
SITE = "<img src=x onerror=alert(4)> & 'co'"
KEY = f"{DEVICE}/{METRIC}"
LAYOUT_TITLE = f"{IMG} {SCRIPT} {SVG}"
RULE_NAME = "<img src=x onerror=alert(5)>"
RULE_MESSAGE = f"<script>alert(6)</script> {SVG} & co"
DEFAULT_RULE = '"><svg onload=alert(7)>'  # no message: the default one says its name and the unit
MARKDOWN = "<img src=x onerror=alert(8)> <script>alert(9)</script> [click](javascript:alert(10))"
TOKEN = "xss-test-token"
UNKNOWN = "<img src=x onerror=alert(21)>/none"


def title(n: int) -> str:
    return f"<img src=x onerror=alert({n})> {SCRIPT} {SVG}"


WIDGETS = [
    {"type": "value", "id": "tile", "x": 0, "y": 0, "w": 3, "h": 2, "title": title(11), "series": KEY},
    {"type": "value", "id": "gauge", "x": 3, "y": 0, "w": 3, "h": 3, "title": title(12), "series": KEY,
     "display": "gauge", "warn_above": 10},
    {"type": "status_grid", "id": "grid", "x": 6, "y": 0, "w": 6, "h": 2, "title": title(13)},
    {"type": "table", "id": "table", "x": 0, "y": 3, "w": 6, "h": 3, "title": title(14),
     "columns": ["series", "device", "metric", "value", "unit", "quality"]},
    {"type": "alarms", "id": "alarms", "x": 6, "y": 3, "w": 6, "h": 3, "title": title(15)},
    {"type": "map", "id": "map", "x": 0, "y": 6, "w": 6, "h": 3, "title": title(16), "devices": [DEVICE],
     "tile_attribution": SCRIPT},
    {"type": "webcam", "id": "cam", "x": 6, "y": 6, "w": 3, "h": 3, "title": title(17), "camera": "cam-1"},
    {"type": "markdown", "id": "note", "x": 9, "y": 6, "w": 3, "h": 3, "title": title(18), "text": MARKDOWN},
    {"type": "timeseries", "id": "chart", "x": 0, "y": 9, "w": 8, "h": 3, "title": title(19), "series": [KEY],
     "y_label": SCRIPT, "limits": [{"value": 5, "label": SCRIPT}]},
    {"type": "value", "id": "unknown", "x": 8, "y": 9, "w": 4, "h": 2, "title": title(20),
     "series": UNKNOWN},
]
LAYOUT = yaml.safe_dump({"title": LAYOUT_TITLE, "description": SCRIPT, "widgets": WIDGETS}, allow_unicode=True)
CONFIG = (
    "http: {enabled: true, token_env: VIGIE_XSS_TOKEN}\n"
    + yaml.safe_dump({"devices": {DEVICE: {"title": title(22)}}, "metrics": {METRIC: title(23)}},
                     allow_unicode=True)
    + yaml.safe_dump({"alarms": {"rules": [
        {"name": RULE_NAME, "series": KEY, "above": 50, "severity": "critical", "message": RULE_MESSAGE},
        {"name": DEFAULT_RULE, "series": KEY, "above": 60, "severity": "high"},
    ]}}, allow_unicode=True)
)


def post_readings(server: VigieServer, items: list[dict]) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{server.base}/api/v1/readings", data=json.dumps(items).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_get(url: str) -> tuple[int, dict[str, list[str]]]:
    """Return the status and every header (a header given twice has two values)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, headers = r.status, r.headers
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.lower(), []).append(value)
    return status, out


PORTAL = "https://portal.example.org"


@pytest.fixture(scope="module")
def vigie(tmp_path_factory, mosquitto):
    server = VigieServer(tmp_path_factory.mktemp("vigie-xss"), mosquitto.port,
                         frame_ancestors=[PORTAL], layouts={"xss": LAYOUT}, extra_config=CONFIG,
                         env={"VIGIE_XSS_TOKEN": TOKEN})
    server.start()
    site = {"site": SITE}
    status, body = post_readings(server, [
        {"device": DEVICE, "metric": METRIC, "value": 99.5, "unit": UNIT, "tags": site},
        {"device": DEVICE, "metric": "lat", "value": 45.76, "tags": site},
        {"device": DEVICE, "metric": "lon", "value": 4.84, "tags": site},
    ])
    assert status == 200, body
    # A rejected item: its reason and payload preview are shown on the system page.
    assert post_readings(server, [{"device": DEVICE, "metric": SCRIPT, "value": "<b>x</b>"}])[0] == 400
    yield server
    server.stop()


class Watch:
    """Everything a page did that it must not: dialogs, console errors, uncaught errors."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page) -> None:
        def on_dialog(dialog) -> None:
            self.problems.append(f"{page.url}: dialog {dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        def on_console(m) -> None:
            # An error page's own status (a 404 naming what was asked for) is no error of the page.
            if m.type == "error" and not (m.location.get("url") == page.url and "status of 404" in m.text):
                self.problems.append(f"{page.url}: console: {m.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.problems.append(f"{page.url}: pageerror: {e}"))

    def check(self, page) -> None:
        """Let the page's pending work run (a fetch round trip), then fail on anything seen."""
        page.evaluate("() => fetch('/health').then(r => r.status)")
        problems, self.problems[:] = list(self.problems), []
        assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def watch():
    return Watch()


@pytest.fixture(autouse=True)
def _fresh_watch(watch):
    """What an earlier, failed test left is not this test's."""
    watch.problems.clear()


@pytest.fixture(scope="module")
def page(vigie, watch):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1400}, locale="en-GB")
        vigie.login(context, "admin")  # the editor, the system page and the audit log are an admin's
        pg = context.new_page()
        watch.attach(pg)
        yield pg
        browser.close()


def shows(page_or_frame, *texts: str, timeout: float = 20_000) -> None:
    """Each text is visible, as text, somewhere on the page."""
    for text in texts:
        expect(page_or_frame.get_by_text(text, exact=False).filter(visible=True).first).to_be_visible(timeout=timeout)


def no_injected_markup(page) -> None:
    """No element an attacker's text would have created exists, in any shadow root."""
    found = page.evaluate("""() => {
        const hits = [];
        const walk = (root) => {
            const hostile = 'img[src="x"], svg[onload], script:not([type]), a[href^="javascript"]';
            for (const el of root.querySelectorAll(hostile)) {
                if (el.tagName === 'SCRIPT' && !/alert\\(/.test(el.textContent)) continue;
                hits.push(el.outerHTML.slice(0, 120));
            }
            for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
        };
        walk(document);
        return hits;
    }""")
    assert found == []


def test_dashboard_shows_every_text_literally(page, vigie, watch):
    page.goto(f"{vigie.base}/dashboard?name=xss")
    shows(page, LAYOUT_TITLE, *(title(n) for n in range(11, 21)))
    shows(page, UNIT, RULE_MESSAGE, DEVICE, "alert(8)", "[click](javascript:alert(10))")
    shows(page, f"{DEFAULT_RULE}: 99.5 {UNIT}")  # the default alarm message: rule name, value, unit
    expect(page.locator(".vigie-unknown").first).to_contain_text(UNKNOWN)
    assert page.title() == f"Vigie · {LAYOUT_TITLE}"
    no_injected_markup(page)
    watch.check(page)


def test_editor_shows_every_text_literally(page, vigie, watch):
    if page.url != f"{vigie.base}/dashboard?name=xss":  # else the page the previous test left open
        page.goto(f"{vigie.base}/dashboard?name=xss")
    shows(page, title(11))
    page.locator(".vigie-edit button, .vigie-edit").first.click()
    # Edit mode draws the whole grid again (twenty widgets): seconds on a busy 2-core machine.
    expect(page.locator(".vigie-save").first).to_be_visible(timeout=30_000)
    shows(page, title(11), title(19))
    select = page.locator(".vigie-widget-select select")
    select.select_option("note")
    page.get_by_role("button", name="⚙").click()
    form = page.locator(".vigie-editor-form")
    expect(form.locator("textarea, input").first).to_be_visible(timeout=10_000)
    values = form.locator("input[type=text], textarea").evaluate_all("els => els.map(e => e.value)")
    assert title(18) in values and MARKDOWN in values
    no_injected_markup(page)
    watch.check(page)


def test_overview_history_and_system_pages(page, vigie, watch):
    page.goto(f"{vigie.base}/")
    shows(page, SITE, RULE_MESSAGE)
    no_injected_markup(page)
    watch.check(page)
    page.goto(f"{vigie.base}/history?series={urllib.request.quote(KEY)}")
    expect(page.locator(".vigie-history-info [data-buckets]")).to_be_visible(timeout=20_000)
    legend = page.evaluate("() => [...Bokeh.documents[0].all_models].find(m => m.constructor.__name__ === 'Legend')"
                           ".title")
    assert legend == f"{title(22)} · {title(23)} ({UNIT})"  # the configured names and the unit, as text
    assert page.locator(".vigie-history-info, input").evaluate_all("els => els.map(e => e.value)").count(KEY) == 1
    picker = next(i for i in page.locator("input[type=text]").all() if i.input_value() == KEY)  # the series picker
    picker.fill("onerror")  # its suggestions
    expect(page.locator(".bk-menu").get_by_text(KEY, exact=True)).to_be_visible(timeout=5_000)
    no_injected_markup(page)
    watch.check(page)
    page.goto(f"{vigie.base}/system")
    shows(page, UNIT, "'value' must be a number")
    shows(page, DEVICE)
    no_injected_markup(page)
    watch.check(page)


def test_alarm_console_and_rule_editor(page, vigie, watch):
    page.goto(f"{vigie.base}/alarms")
    shows(page, RULE_MESSAGE, f"{DEFAULT_RULE}: 99.5 {UNIT}", SITE, KEY)
    no_injected_markup(page)
    watch.check(page)
    page.goto(f"{vigie.base}/alarm-rules?rule={urllib.request.quote(RULE_NAME)}")
    shows(page, KEY)
    values = page.locator("input[type=text], textarea").evaluate_all("els => els.map(e => e.value)")
    assert RULE_NAME in values and RULE_MESSAGE in values
    no_injected_markup(page)
    watch.check(page)


def test_dashboards_list_and_generated_dashboard(page, vigie, watch):
    page.goto(f"{vigie.base}/dashboards")
    shows(page, LAYOUT_TITLE)
    page.locator("select").first.select_option(f"device:{DEVICE}")
    page.get_by_role("button", name="Generate dashboard").click()
    link = page.locator("a[href^='/dashboard?name=device-']")
    expect(link).to_be_visible(timeout=10_000)
    no_injected_markup(page)
    watch.check(page)
    page.goto(vigie.base + link.get_attribute("href"))
    shows(page, DEVICE, METRIC, UNIT)
    assert page.title() == f"Vigie · {DEVICE}"
    no_injected_markup(page)
    watch.check(page)
    # The error page names the layout asked for: as text.
    page.goto(f"{vigie.base}/dashboard?name={urllib.request.quote(IMG)}")
    shows(page, IMG)
    no_injected_markup(page)
    watch.check(page)


def test_embeds_show_every_text_literally(page, vigie, watch):
    page.goto(f"{vigie.base}/embed/xss")
    shows(page, title(11), title(15), RULE_MESSAGE, UNIT)
    no_injected_markup(page)
    watch.check(page)
    page.goto(f"{vigie.base}/embed/xss/alarms")
    shows(page, title(15), RULE_MESSAGE, KEY)
    no_injected_markup(page)
    watch.check(page)
    for widget in ("tile", "grid"):
        page.goto(f"{vigie.base}/embed/xss/{widget}?mode=light&every=1")
        shows(page, title(11 if widget == "tile" else 13), UNIT if widget == "tile" else DEVICE)
        with page.expect_response(lambda r: "/api/v1/fragments/" in r.url):  # a fetched fragment, too
            pass
        shows(page, title(11 if widget == "tile" else 13))
        no_injected_markup(page)
        watch.check(page)
    # Error answers name what was asked for: as text.
    page.goto(f"{vigie.base}/embed/xss/{urllib.request.quote(IMG)}?mode=light")
    shows(page, IMG)
    no_injected_markup(page)
    watch.check(page)


def test_map_tooltip_shows_the_device_name_as_text(page, vigie, watch):
    page.goto(f"{vigie.base}/embed/xss/map")
    canvas = page.locator(".vigie-widget-map canvas").last
    expect(canvas).to_be_visible(timeout=20_000)
    box = canvas.bounding_box()
    # The only point is drawn at the centre of the plot area: sweep the middle until its tooltip shows.
    tooltip = page.locator(".bk-Tooltip, .bk-tooltip").filter(has_text="lat")
    for dx in range(-60, 61, 6):
        page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2)
        if tooltip.count() and tooltip.first.is_visible():
            break
    expect(tooltip.first).to_contain_text(DEVICE, timeout=5_000)
    no_injected_markup(page)
    watch.check(page)


# -- Content-Security-Policy -------------------------------------------------------------------

def directives(policy: str) -> dict[str, list[str]]:
    return {name: rest for name, *rest in (d.split() for d in policy.split(";") if d.strip())}


def test_pages_carry_one_policy_and_embeds_their_frame_ancestors(vigie):
    for path, ancestors in (("/", ["'self'"]), ("/dashboard?name=xss", ["'self'"]), ("/system", ["'self'"]),
                            ("/embed-app?layout=xss", ["'self'", PORTAL]),
                            ("/embed/xss/tile?mode=light", ["'self'", PORTAL]),
                            ("/api/v1/fragments/xss/tile", ["'self'"])):
        status, headers = http_get(vigie.base + path)
        assert status == 200, path
        policies = headers.get("content-security-policy", [])
        assert len(policies) == 1, (path, policies)
        d = directives(policies[0])
        if ancestors is not None:
            assert d["frame-ancestors"] == ancestors, path
        assert d["default-src"] == ["'self'"] and d["object-src"] == ["'none'"] and d["base-uri"] == ["'self'"]
        assert "*" not in " ".join(policies[0].split()), path


def test_pages_load_with_no_policy_violation(page, vigie, watch):
    violations: list[str] = []
    page.on("console", lambda m: re.search(r"Content.Security.Policy", m.text) and violations.append(m.text))
    # Every test above fails on any console error, violations included; here one page, one embed, one light embed.
    for path, ready in (("/", ".vigie-site"), ("/embed/xss/chart", ".vigie-widget-title"),
                        ("/embed/xss/tile?mode=light", ".vigie-number")):
        page.goto(vigie.base + path)
        expect(page.locator(ready).first).to_be_visible(timeout=20_000)
        watch.check(page)
    assert violations == []
    assert get(vigie.base + "/health")[0] == 200
