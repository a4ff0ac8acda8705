"""Notifications end to end: real Mosquitto, real `vigie serve`, a real SMTP server, an HTTP SMS/voice gateway.

A reading over the limit published over MQTT reaches a mailbox with a working
acknowledgement link; nobody acknowledging brings step 2 (SMS and voice);
the link stops the cascade; ten alarms of one station make one message; a
dead mail server is retried, then the fallback channel used; a restart
mid-cascade still fires the next step on time and sends nothing twice.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from aiosmtpd.controller import Controller

from app.notify.links import LinkSigner
from tests.browser import VigieServer, get
from tests.servers import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SECRET = "test-secret-for-ack-links-and-login-sessions"
REPLY_TOKEN = "gateway-token"
ALICE, BOB = "+33600000001", "+33600000002"


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message; stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[tuple[list[str], email.message.EmailMessage, float]] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg, time.monotonic()))
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def texts(self, to: str, needle: str = "") -> list[str]:
        out = []
        for rcpt, msg, _t in self.messages:
            body = msg.get_body(("plain",)).get_content()
            if to in rcpt and needle in body:
                out.append(body)
        return out


class Gateway:
    """The SMS and voice gateways: an HTTP server on loopback keeping every request it is sent."""

    def __init__(self) -> None:
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                requests.append((self.path, json.loads(body or b"{}"), time.monotonic()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sms(self, phone: str, needle: str = "") -> list[str]:
        return [doc["message"] for path, doc, _t in self.requests
                if path == f"/sms/{phone}" and needle in doc.get("message", "")]

    def calls(self, phone: str, needle: str = "") -> list[dict]:
        return [doc for path, doc, _t in self.requests if path == "/voice" and doc["to"] == phone
                and needle in doc["text"]]


def notify_config(smtp: int, gateway: int, *, wait_s: float = 2.0) -> str:
    return f"""\
alarms:
  journal_file: journal.sqlite
  tick_s: 0.2
  rules:
    - {{name: flood, series: "*/level", h: 50, severity: high, policy: dams}}
contacts:
  people:
    - {{name: alice, language: en, mail: alice@example.org, phone: "{ALICE}"}}
    - {{name: bob, language: fr, mail: bob@example.org, phone: "{BOB}"}}
  teams:
    - {{name: duty, members: [bob]}}
  on_call:
    weekly:
      - {{who: alice}}
escalation:
  mail_url: "mailto://127.0.0.1:{smtp}?mode=insecure&from=vigie@example.org"
  sms_url: "json://127.0.0.1:{gateway}/sms/{{phone}}"
  voice_url: "http://127.0.0.1:{gateway}/voice"
  reply_token_env: VIGIE_REPLY_TOKEN
  group_window_s: 1
  retry_s: 0.2
  timeout_s: 5
  policies:
    - name: dams
      then: stop
      steps:
        - {{whom: [on_call], channels: [mail], wait_s: {wait_s}}}
        - {{whom: [duty], channels: [sms, voice], wait_s: {wait_s}}}
        - {{whom: [alice], channels: [mail], wait_s: {wait_s}}}
"""


def publish(port: int, site: str, devices: list[str], value: float) -> None:
    import paho.mqtt.publish as pub

    now = int(time.time() * 1000)
    pub.multiple([{"topic": f"bt/{site}/{d}/telemetry", "payload": json.dumps({"ts": now, "level": value}),
                   "qos": 1} for d in devices], hostname="127.0.0.1", port=port)


def api(base: str, path: str, doc: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if doc is None else "POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ack_link(text: str) -> str:
    return re.search(r"(http://\S+/ack/\S+)", text).group(1)


def cascades(base: str, alarm_id: str) -> list[dict]:
    return api(base, f"/api/v1/notify/cascades?alarm_id={urllib.request.quote(alarm_id)}")[1]["cascades"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory, mosquitto):
    mailbox, gateway = Mailbox(), Gateway()
    mailbox.start()
    server = VigieServer(tmp_path_factory.mktemp("notify"), mosquitto.port,
                         extra_config=notify_config(mailbox.port, gateway.port),
                         server_options={"secret_env": "VIGIE_SECRET"},
                         env={"VIGIE_SECRET": SECRET, "VIGIE_REPLY_TOKEN": REPLY_TOKEN})
    server.start()
    try:
        yield server, mailbox, gateway, mosquitto
    finally:
        server.stop()
        mailbox.stop()
        gateway.server.shutdown()


def test_mail_then_sms_and_voice_then_the_link_stops_the_cascade(rig):
    server, mailbox, gateway, mosquitto = rig
    publish(mosquitto.port, "vallon", ["dam-1"], 72.5)
    mail = wait_until(lambda: mailbox.texts("alice@example.org", "dam-1"), timeout=15, what="step 1 mail")[0]
    assert "72.5 m" in mail and "limit 50" in mail and "severity high" in mail and "since 20" in mail
    assert "vallon" in mail
    link = ack_link(mail)
    # Nobody acknowledges within wait_s: step 2 (team duty: bob, in French) gets an SMS and a call.
    sms = wait_until(lambda: gateway.sms(BOB, "dam-1"), timeout=10, what="step 2 SMS")[0]
    assert "gravité haute" in sms and "72.5 m" in sms
    call = wait_until(lambda: gateway.calls(BOB, "dam-1"), timeout=10, what="step 2 call")[0]
    assert call["lang"] == "fr" and "/ack/" in call["ack_url"]
    assert call["callback_url"].endswith("/api/v1/notify/reply") and "/ack/" not in call["text"]
    # Alice follows her link: acknowledged as alice, the cascade stops for everyone (no step 3).
    status, page = get(link)
    assert status == 200 and b"acknowledged as alice" in page
    alarm = api(server.base, "/api/v1/alarms")[1]["active"]
    mine = next(a for a in alarm if a["device"] == "dam-1")
    assert mine["state"] == "acknowledged" and mine["acked_by"] == "alice"
    wait_until(lambda: not cascades(server.base, mine["alarm_id"]), timeout=5, what="cascade stopped")
    # The journal has every attempt, recipients redacted.
    status, doc = api(server.base, "/api/v1/alarms/journal?category=notification&device=dam-1")
    rows = doc["events"] if isinstance(doc, dict) and "events" in doc else doc
    texts = " ".join(r["message"] for r in rows)
    assert "mail to alice (al…@example.org), step 1, attempt 1: sent" in texts
    assert "sms to bob (+336…02), step 2, attempt 1: sent" in texts
    assert "alice@example.org" not in texts and BOB not in texts
    # The same link again, a forged one, an expired one: a clear page, nothing changes.
    status, page = get(link)
    assert status == 409 and b"already used" in page
    status, page = get(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))
    assert status == 400 and b"not valid" in page
    expired = LinkSigner(SECRET.encode()).make([mine["alarm_id"]], "bob", time.time() - 1)
    status, page = get(f"{server.base}/ack/{expired}")
    assert status == 410 and b"expired" in page


def test_bad_links_change_nothing(rig):
    server, mailbox, gateway, mosquitto = rig
    publish(mosquitto.port, "ravin", ["dam-7"], 90)
    mail = wait_until(lambda: mailbox.texts("alice@example.org", "dam-7"), timeout=15, what="mail")[0]
    alarm_id = next(a["alarm_id"] for a in api(server.base, "/api/v1/alarms")[1]["active"] if a["device"] == "dam-7")
    forged = LinkSigner(b"not the secret").make([alarm_id], "mallory", time.time() + 600)
    expired = LinkSigner(SECRET.encode()).make([alarm_id], "alice", time.time() - 5)
    for token, status, words in ((forged, 400, b"Nothing was changed"), (expired, 410, b"has expired"),
                                 ("garbage", 400, b"not valid")):
        got, page = get(f"{server.base}/ack/{token}")
        assert got == status and words in page
    state = next(a for a in api(server.base, "/api/v1/alarms")[1]["active"] if a["alarm_id"] == alarm_id)
    assert state["state"] == "unacknowledged" and cascades(server.base, alarm_id)
    # An SMS reply through the gateway webhook acknowledges too (the gateway's token required).
    assert api(server.base, "/api/v1/notify/reply", {"from": ALICE, "text": "OK"})[0] == 401
    status, doc = api(server.base, "/api/v1/notify/reply", {"from": ALICE, "text": "OK"},
                      {"Authorization": f"Bearer {REPLY_TOKEN}"})
    assert status == 200 and alarm_id in doc["acknowledged"]
    wait_until(lambda: not cascades(server.base, alarm_id), timeout=5, what="cascade stopped by the reply")
    # The mail's own link, followed after the reply: valid, but nothing is left to acknowledge.
    status, page = get(ack_link(mail))
    assert status == 200 and b"already acknowledged" in page
    assert "Acknowledge" in mail


def test_ten_alarms_of_one_station_make_one_message(rig):
    server, mailbox, gateway, mosquitto = rig
    devices = [f"st9-p{i}" for i in range(10)]
    publish(mosquitto.port, "station9", devices, 99)
    wait_until(lambda: mailbox.texts("alice@example.org", "station9"), timeout=15, what="grouped mail")
    mails = mailbox.texts("alice@example.org", "station9")
    assert len(mails) == 1, mails
    assert "10 alarm(s)" in mails[0] and all(d in mails[0] for d in devices)
    status, page = get(ack_link(mails[0]))  # one link acknowledges the ten
    assert status == 200 and b"10 alarm(s) acknowledged as alice" in page


def test_dead_mail_server_is_retried_then_the_fallback_used(rig):
    server, mailbox, gateway, mosquitto = rig
    mailbox.stop()
    try:
        publish(mosquitto.port, "combe", ["dam-3"], 66)
        sms = wait_until(lambda: gateway.sms(ALICE, "dam-3"), timeout=20, what="fallback SMS to alice")[0]
        assert "Step 1" in sms
        def journal_rows() -> list[dict]:
            got = api(server.base, "/api/v1/alarms/journal?category=notification&device=dam-3")[1]
            return got["events"] if isinstance(got, dict) and "events" in got else got

        # The journal is written every 0.2 s: the SMS may reach the gateway before its row is on disk.
        rows = wait_until(lambda: (r := journal_rows()) and any(
            "sms to alice" in x["message"] and x["kind"] == "notification_sent" for x in r) and r,
            timeout=10, what="the fallback SMS journaled")
        failed = [r["message"] for r in rows if r["kind"] == "notification_failed"]
        assert {f"mail to alice (al…@example.org), step 1, attempt {n}: failed" for n in (1, 2, 3)} <= {
            m.split(": failed")[0] + ": failed" for m in failed}
        assert any("sms to alice" in r["message"] and r["kind"] == "notification_sent" for r in rows)
    finally:
        mailbox.start()


def test_a_policy_test_reaches_step_one(rig):
    server, mailbox, gateway, mosquitto = rig
    status, doc = api(server.base, "/api/v1/notify/policies/dams/test", {}, server.headers("admin"))
    assert status == 202 and doc["sent_to"] == [{"contact": "alice", "channels": ["mail"]}]
    wait_until(lambda: mailbox.texts("alice@example.org", "[TEST]"), timeout=10, what="test mail")
    assert api(server.base, "/api/v1/notify/policies/nope/test", {}, server.headers("admin"))[0] == 404


@pytest.mark.browser
def test_the_contacts_page_shows_who_is_on_call_and_sends_a_test(rig):
    """The Contacts page reads the notifier's own config; its test button reaches step 1's mailbox."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    server, mailbox, gateway, mosquitto = rig
    before = len(mailbox.texts("alice@example.org", "[TEST]"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for role in ("viewer", "admin"):
                context = browser.new_context(locale="en-GB")
                server.login(context, role)
                page = context.new_page()
                page.goto(f"{server.base}/contacts")
                expect(page.locator(".vigie-contacts")).to_contain_text("alice@example.org", timeout=20_000)
                expect(page.locator(".vigie-on-call-now")).to_contain_text("On call now")
                expect(page.locator(".vigie-policy").first).to_contain_text("alice")
                button = page.get_by_role("button", name="Send a test to step 1")
                if role == "viewer":
                    expect(button).to_be_disabled()
                else:
                    button.click()
                    expect(page.locator(".vigie-contacts-status")).to_contain_text("Test sent: alice", timeout=5_000)
                context.close()
        finally:
            browser.close()
    wait_until(lambda: len(mailbox.texts("alice@example.org", "[TEST]")) > before, timeout=10, what="test mail")


def test_a_restart_mid_cascade_fires_the_next_step_on_time_and_nothing_twice(tmp_path, mosquitto):
    mailbox, gateway = Mailbox(), Gateway()
    mailbox.start()
    wait_s = 8.0
    server = VigieServer(tmp_path, mosquitto.port,
                         extra_config=notify_config(mailbox.port, gateway.port, wait_s=wait_s),
                         server_options={"secret_env": "VIGIE_SECRET"},
                         env={"VIGIE_SECRET": SECRET, "VIGIE_REPLY_TOKEN": REPLY_TOKEN})
    server.start()
    try:
        publish(mosquitto.port, "restart", ["dam-r"], 80)
        wait_until(lambda: mailbox.texts("alice@example.org", "dam-r"), timeout=15, what="step 1 mail")
        step1_at = mailbox.messages[-1][2]
        server.stop()
        server.start()
        back_at = time.monotonic()  # serving again, its broker connected
        sms = wait_until(lambda: gateway.sms(BOB, "dam-r"), timeout=wait_s + 15, what="step 2 after restart")
        step2_at = next(t for path, doc, t in gateway.requests if path == f"/sms/{BOB}")
        # Not early; on time, or (when the restart itself outlasted the step's wait, as on a busy machine) at
        # once when Vigie is back: the deadline was kept across the restart, not started again.
        assert step2_at - step1_at >= wait_s - 1.5, step2_at - step1_at
        assert step2_at <= max(step1_at + wait_s, back_at) + 3, (step2_at - step1_at, back_at - step1_at)
        assert len(sms) == 1 and len(mailbox.texts("alice@example.org", "dam-r")) == 1
    finally:
        server.stop()
        mailbox.stop()
        gateway.server.shutdown()
