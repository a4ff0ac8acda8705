"""Who may do what: the role table, accounts on disk, and a real server's answers to each role.

The server tests run one `vigie serve` (no anonymous access) with a user and
an API token per role (tests/browser.py), and call it as each: the REST
role matrix, tokens missing, wrong, revoked, expired or too narrow, the
login form's cookie flags, XSRF and slow-down, embed links, /metrics and
/health detail, the audit log, and that no secret reaches an answer or the log.
"""

from __future__ import annotations

import http.client
import json
import re
import sqlite3
import time
import urllib.parse

import pytest

from app.web.access import ACTIONS, ANONYMOUS, Identity, Role, allowed
from app.web.accounts import AccountError, AccountStore
from app.web.login import FREE_FAILURES, LoginThrottle
from tests.browser import ROLES, VigieServer, password
from tests.servers import wait_until

# -- the table -------------------------------------------------------------------------------------------
EXPECTED = {  # the table: each role, and what it adds
    "viewer": {"view"},
    "operator": {"view", "alarms:ack", "devices:maintenance", "ingest"},
    "analyst": {"view", "alarms:ack", "devices:maintenance", "ingest", "layouts:edit", "rules:edit"},
    "admin": set(ACTIONS),
}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_exactly_what_the_table_says(role):
    identity = Identity(role, Role[role])
    assert {a for a in ACTIONS if allowed(identity, a)} == EXPECTED[role]
    assert not allowed(identity, "no-such-action")


def test_a_token_does_no_more_than_its_scopes_nor_its_owner():
    analyst_reader = Identity("a", Role.analyst, kind="token", scopes=frozenset({"read"}))
    assert allowed(analyst_reader, "view") and not allowed(analyst_reader, "layouts:edit")
    viewer_admin_scope = Identity("v", Role.viewer, kind="token", scopes=frozenset({"admin"}))
    assert allowed(viewer_admin_scope, "view") and not allowed(viewer_admin_scope, "users:manage")
    assert allowed(ANONYMOUS, "view") and not allowed(ANONYMOUS, "alarms:ack") and not allowed(None, "view")


def test_accounts_keep_hashes_and_digests_only_and_forget_what_ends(tmp_path):
    store = AccountStore(tmp_path / "access.sqlite", b"k" * 40, session_s=2).open()
    store.add_user("ann", "admin", "a-long-password")
    store.add_user("bob", "viewer", "b-long-password")
    with pytest.raises(AccountError, match="at least 10"):
        store.add_user("cat", "viewer", "short")
    with pytest.raises(AccountError, match="name"):
        store.add_user("x\n", "viewer", "a-long-password")
    with pytest.raises(AccountError, match="last admin"):
        store.set_role("ann", "viewer")
    assert store.verify_password("ann", "a-long-password").role is Role.admin
    assert store.verify_password("ann", "wrong-password") is None and store.verify_password("nobody", "x") is None
    session = store.start_session("bob")
    token, text = store.create_token("bob", "script", ["read"], expires_ns=time.time_ns() + 10**9)
    link, embed = store.create_embed("flood", "level", days=1, created_by="ann")
    raw = (tmp_path / "access.sqlite").read_bytes()
    for secret in (b"a-long-password", session.encode(), text.encode(), b"bob-long"):
        assert secret not in raw
    assert (tmp_path / "access.sqlite").stat().st_mode & 0o077 == 0
    # A second process sees the same accounts (the CLI adds a user while the server is stopped).
    again = AccountStore(tmp_path / "access.sqlite", b"k" * 40).open()
    assert again.session_identity(session).name == "bob" and again.token_identity(text).scopes == {"read"}
    assert again.embed_identity(embed, "flood", "level").kind == "embed"
    assert again.embed_identity(embed, "other", "level") is None and again.embed_identity(embed + "x", "flood",
                                                                                          "level") is None
    assert AccountStore(tmp_path / "access.sqlite", b"z" * 40).open().embed_link(embed) is None  # another secret
    store.set_password("bob", "b-new-password")  # ends bob's sessions
    assert store.session_identity(session) is None
    store.revoke_embed(link.id)
    assert store.embed_link(embed) is None
    wait_until(lambda: store.token_identity(text) is None, timeout=5, interval=0.1, what="the token expired")
    store.revoke_token(token.id)
    assert store.token_list("bob")[0].revoked_ns is not None


def test_failed_logins_slow_down_per_name_and_address():
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    keys = ("user:ann", "ip:1.2.3.4")
    for _ in range(FREE_FAILURES):
        assert throttle.wait_s(*keys) == 0
        throttle.failed(*keys)
    assert throttle.wait_s("user:ann") == pytest.approx(1.0) and throttle.wait_s("user:bob") == 0
    now[0] += 1.5
    throttle.failed(*keys)
    assert throttle.wait_s(*keys) == pytest.approx(2.0)  # doubles each time
    now[0] += 2000  # a quiet quarter of an hour later, the count starts again
    assert throttle.wait_s(*keys) == 0


# -- a real server ----------------------------------------------------------------------------------------
LAYOUT = "title: Access\nwidgets:\n- {type: value, id: v, x: 0, y: 0, w: 3, h: 2, series: ac-1/level}\n"
CAMERA = ("title: Camera\nwidgets:\n- {type: webcam, id: cam, x: 0, y: 0, w: 3, h: 2, camera: cam-1}\n"
          "- {type: value, id: v, x: 3, y: 0, w: 3, h: 2, series: ac-1/level}\n")
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@pytest.fixture(scope="module")
def vigie(tmp_path_factory, mosquitto):
    server = VigieServer(tmp_path_factory.mktemp("access"), mosquitto.port, anonymous_read=False,
                         layouts={"acc": LAYOUT, "cam": CAMERA}, server_options={"max_sessions": 50})
    server.start()
    yield server
    server.stop()


def call(vigie: VigieServer, method: str, path: str, doc: dict | None = None, headers: dict | None = None,
         source: str = "127.0.0.1") -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", vigie.port, timeout=30, source_address=(source, 0))
    try:
        body = None if doc is None else json.dumps(doc)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"text": raw.decode("utf-8", "replace")}
        return r.status, answer, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def as_role(vigie: VigieServer, role: str | None) -> dict:
    return vigie.headers(role) if role else {}


# Each request, and the least role that may make it (None: refused to all but admin because of a
# missing right; statuses other than 401/403 only say the call got past the check).
MATRIX = [
    ("GET", "/api/v1/layouts", None, "viewer"),
    ("GET", "/api/v1/latest", None, "viewer"),
    ("GET", "/api/v1/alarms", None, "viewer"),
    ("GET", "/api/v1/alarms/journal", None, "viewer"),
    ("GET", "/api/v1/me", None, "viewer"),
    ("POST", "/api/v1/alarms/acknowledge", {"alarm_ids": ["nope|x/y"]}, "operator"),
    ("POST", "/api/v1/devices/ac-9/maintenance", {"on": False}, "operator"),
    ("PUT", "/api/v1/layouts/acc", {"title": "Access", "widgets": []}, "analyst"),
    ("PUT", "/api/v1/alarms/rules/trial", {"name": "trial", "series": "ac-*/level", "h": 5, "mode": "shadow"},
     "analyst"),
    ("PUT", "/api/v1/alarms/rules/live", {"name": "live", "series": "ac-*/level", "h": 5}, "admin"),
    ("GET", "/api/v1/users", None, "admin"),
    ("POST", "/api/v1/embeds", {"layout": "acc", "days": 1}, "admin"),
    ("GET", "/api/v1/alarms/journal?category=audit", None, "admin"),
    ("POST", "/api/v1/notify/policies/none/test", {}, "admin"),
]


@pytest.mark.parametrize(("method", "path", "doc", "least"), MATRIX)
def test_the_rest_api_follows_the_role_table(vigie, method, path, doc, least):
    for role in (None, *ROLES):
        status, answer, headers = call(vigie, method, path, doc, as_role(vigie, role))
        if role is None:
            assert status == 401 and "bearer" in headers.get("www-authenticate", "").lower(), (path, answer)
        elif ROLES.index(role) < ROLES.index(least):
            assert status == 403 and "error" in answer, (role, path, status, answer)
        else:
            assert status not in (401, 403), (role, path, status, answer)


def test_a_missing_wrong_revoked_expired_or_narrow_token_is_refused(vigie):
    assert call(vigie, "GET", "/api/v1/layouts", headers={"Authorization": "Bearer vgt_nope_nope"})[0] == 401
    status, made, _ = call(vigie, "POST", "/api/v1/tokens", {"label": "short", "scopes": ["read"], "days": 2 / 86400},
                           vigie.headers("analyst"))
    assert status == 201 and made["token"].startswith("vgt_")
    mine = {"Authorization": f"Bearer {made['token']}"}
    assert call(vigie, "GET", "/api/v1/layouts", headers=mine)[0] == 200
    assert call(vigie, "PUT", "/api/v1/layouts/acc", {"title": "x", "widgets": []}, mine)[0] == 403  # read only
    wait_until(lambda: call(vigie, "GET", "/api/v1/layouts", headers=mine)[0] == 401, timeout=10, interval=0.2,
               what="the two-second token expired")
    status, made, _ = call(vigie, "POST", "/api/v1/tokens", {"label": "revoke-me", "scopes": ["read"]},
                           vigie.headers("viewer"))
    mine = {"Authorization": f"Bearer {made['token']}"}
    assert call(vigie, "GET", "/api/v1/tokens", headers=mine)[1]["items"][-1]["id"] == made["id"]
    assert "token" not in call(vigie, "GET", "/api/v1/tokens", headers=mine)[1]["items"][-1]  # shown once only
    assert call(vigie, "DELETE", f"/api/v1/tokens/{made['id']}", headers=mine)[0] == 200
    assert call(vigie, "GET", "/api/v1/layouts", headers=mine)[0] == 401
    # A viewer may not make a token for someone else, nor one that does more than a viewer.
    assert call(vigie, "POST", "/api/v1/tokens", {"label": "x", "scopes": ["read"], "user": "admin"},
                vigie.headers("viewer"))[0] == 403
    status, made, _ = call(vigie, "POST", "/api/v1/tokens", {"label": "wide", "scopes": ["admin"]},
                           vigie.headers("viewer"))
    assert call(vigie, "GET", "/api/v1/users", headers={"Authorization": f"Bearer {made['token']}"})[0] == 403


def login(vigie: VigieServer, user: str, pw: str, *, xsrf: bool = True,
          source: str = "127.0.0.1") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", vigie.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/login")
        r = conn.getresponse()
        r.read()
        token = next(c.split(";")[0].split("=", 1)[1] for c in r.headers.get_all("Set-Cookie")
                     if c.startswith("_xsrf="))
        form = {"username": user, "password": pw, "next": "/alarms", **({"_xsrf": token} if xsrf else {})}
        conn.request("POST", "/login", body=urllib.parse.urlencode(form),
                     headers={"Cookie": f"_xsrf={token}", "Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        body = r.read().decode()
        return r.status, {"cookies": r.headers.get_all("Set-Cookie") or [], "location": r.headers.get("Location"),
                          "retry": r.headers.get("Retry-After"), "body": body}
    finally:
        conn.close()


def test_login_sets_a_safe_cookie_and_refuses_a_cross_site_post(vigie):
    status, got = login(vigie, "operator", password("operator"))
    assert status == 302 and got["location"] == "/alarms"
    cookie = next(c for c in got["cookies"] if c.startswith("vigie_session="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # plain HTTP here; over HTTPS (or cookie_secure: always) it is set
    session = cookie.split(";")[0].split("=", 1)[1]
    # Another site's form posting to /login carries no _xsrf field: refused.
    status, got = login(vigie, "operator", password("operator"), xsrf=False)
    assert status == 403
    # A state-changing API call with the cookie alone (what a foreign page could make a browser send): refused.
    status, answer, _ = call(vigie, "POST", "/api/v1/devices/ac-9/maintenance", {"on": False},
                             {"Cookie": f"vigie_session={session}"})
    assert status == 403 and "XSRF" in answer["error"]
    status, _, _ = call(vigie, "POST", "/api/v1/devices/ac-9/maintenance", {"on": False},
                        {"Cookie": f"vigie_session={session}; _xsrf=abc", "X-XSRFToken": "abc"})
    assert status == 200
    assert call(vigie, "GET", "/api/v1/me", headers={"Cookie": f"vigie_session={session}"})[1]["role"] == "operator"


def test_repeated_failed_logins_are_slowed_down_and_audited(vigie):
    source = "127.0.0.3"  # an address of its own: the throttle counts per address too
    assert login(vigie, "operator", password("operator"), source="127.0.0.4")[0] == 302
    for _ in range(FREE_FAILURES):
        assert login(vigie, "analyst", "not-the-password", source=source)[0] == 401
    status, got = login(vigie, "analyst", password("analyst"), source=source)  # even the right one must wait
    assert status == 429 and int(got["retry"]) >= 1 and "Too many failed attempts" in got["body"]
    events = call(vigie, "GET", "/api/v1/alarms/journal?category=audit&limit=100", headers=vigie.headers())[1]
    kinds = [(e["kind"], e["user"]) for e in events["events"]]
    assert kinds.count(("login_failed", "analyst")) >= FREE_FAILURES and ("login_refused", "analyst") in kinds
    assert any(k == ("login", "operator") for k in kinds)
    # A viewer's journal leaves the audit log out; asking for it is refused.
    viewer_events = call(vigie, "GET", "/api/v1/alarms/journal?limit=1000", headers=vigie.headers("viewer"))[1]
    assert not [e for e in viewer_events["events"] if e["category"] == "audit"]


def test_a_layout_save_is_audited_with_who_and_the_difference(vigie):
    doc = {"title": "Access (audited)", "widgets": [{"type": "value", "id": "v", "x": 0, "y": 0, "w": 3, "h": 2,
                                                     "series": "ac-1/level"}]}
    assert call(vigie, "PUT", "/api/v1/layouts/acc", doc, vigie.headers("analyst"))[0] == 200
    events = call(vigie, "GET", "/api/v1/alarms/journal?category=audit&kind=layout_saved",
                  headers=vigie.headers())[1]["events"]
    latest = events[0]
    assert latest["user"] == "analyst (token)" and latest["key"] == "layouts/acc.yaml"
    assert "-title: Access" in latest["comment"] and "+title: Access (audited)" in latest["comment"]
    assert "from 127.0.0.1" in latest["comment"]


def test_embed_links_open_one_layout_until_revoked(vigie):
    status, link, _ = call(vigie, "POST", "/api/v1/embeds", {"layout": "acc", "widget": "v", "days": 1},
                           vigie.headers())
    assert status == 201 and link["url"].startswith("/embed/acc/v?t=")
    assert call(vigie, "GET", "/embed/acc/v")[0] == 401  # no link, no login
    status, _, headers = call(vigie, "GET", link["url"])
    assert status == 302 and headers["location"].startswith("/embed-app?") and "t=" in headers["location"]
    assert call(vigie, "GET", headers["location"])[0] == 200  # the page itself, with the link's token
    assert call(vigie, "GET", "/embed-app?layout=acc&widget=v")[0] == 302  # without: to the login page
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)["t"][0]
    assert call(vigie, "GET", f"/embed/acc/other?t={token}")[0] == 401  # another widget
    assert call(vigie, "GET", f"/api/v1/layouts?t={token}")[0] == 401  # the API
    assert call(vigie, "GET", f"/?t={token}")[0] == 302  # another page
    assert call(vigie, "GET", f"{link['light_url']}")[0] == 200
    assert call(vigie, "DELETE", f"/api/v1/embeds/{link['id']}", headers=vigie.headers())[0] == 200
    assert call(vigie, "GET", link["url"])[0] == 401 and call(vigie, "GET", link["light_url"])[0] == 401


def test_metrics_and_health_detail_are_for_admins_tokens_and_local_probes(vigie):
    far = "127.0.0.2"  # loopback, but not this machine's own address: treated as a remote client
    assert call(vigie, "GET", "/metrics", source=far)[0] == 401
    assert call(vigie, "GET", "/metrics", headers=vigie.headers("viewer"), source=far)[0] == 403
    status, made, _ = call(vigie, "POST", "/api/v1/tokens", {"label": "prometheus", "scopes": ["metrics"]},
                           vigie.headers())
    prometheus = {"Authorization": f"Bearer {made['token']}"}
    status, answer, _ = call(vigie, "GET", "/metrics", headers=prometheus, source=far)
    assert status == 200 and "vigie_readings_received_total" in answer["text"]
    assert call(vigie, "GET", "/api/v1/layouts", headers=prometheus)[0] == 403  # nothing but metrics
    assert set(call(vigie, "GET", "/health", source=far)[1]) == {"status"}
    assert set(call(vigie, "GET", "/health", headers=vigie.headers("viewer"), source=far)[1]) == {"status"}
    assert "sources" in call(vigie, "GET", "/health", headers=vigie.headers("admin"), source=far)[1]


def test_no_secret_reaches_an_answer_a_page_or_the_log(vigie):
    users = call(vigie, "GET", "/api/v1/users", headers=vigie.headers())[1]
    assert {u["name"] for u in users["items"]} >= set(ROLES) and users["total"] >= 4
    everything = json.dumps(users) + json.dumps(call(vigie, "GET", "/api/v1/tokens?user=*",
                                                     headers=vigie.headers())[1])
    assert "argon2" not in everything and "hash" not in everything and "digest" not in everything
    with sqlite3.connect(vigie.tmp / "var" / "access.sqlite") as con:
        hashes = [h for (h,) in con.execute("SELECT hash FROM users")]
    log = vigie.log.read_text()
    secrets = [*hashes, *vigie.tokens.values(), *(password(r) for r in ROLES),
               (vigie.tmp / "var" / "secret.key").read_text().strip()]
    for secret in secrets:
        assert secret not in log and secret not in everything
    assert not re.search(r"vgt_[0-9a-f]{12}_\S{20,}", log)


def test_an_embed_link_opens_the_frames_of_the_cameras_its_layout_shows(vigie):
    conn = http.client.HTTPConnection("127.0.0.1", vigie.port, timeout=30)
    conn.request("POST", "/api/v1/cameras/cam-1", body=JPEG, headers={**vigie.headers(), "Content-Type": "image/jpeg"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    conn.close()
    assert call(vigie, "GET", "/api/v1/cameras/cam-1/latest")[0] == 401
    def token(layout: str, widget: str | None) -> str:
        doc = call(vigie, "POST", "/api/v1/embeds", {"layout": layout, "widget": widget, "days": 1},
                   vigie.headers())[1]
        return urllib.parse.parse_qs(urllib.parse.urlsplit(doc["url"]).query)["t"][0]
    assert call(vigie, "GET", f"/api/v1/cameras/cam-1/latest?t={token('cam', None)}")[0] == 200
    assert call(vigie, "GET", f"/api/v1/cameras/cam-1/latest?t={token('cam', 'cam')}")[0] == 200
    assert call(vigie, "GET", f"/api/v1/cameras/cam-1/latest?t={token('cam', 'v')}")[0] == 401  # not this widget
    assert call(vigie, "GET", f"/api/v1/cameras/cam-1/latest?t={token('acc', None)}")[0] == 401  # no camera there
    assert call(vigie, "GET", "/api/v1/cameras/cam-1/latest", headers=vigie.headers("viewer"))[0] == 200
