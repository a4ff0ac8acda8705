"""Single sign-on through an OpenID Connect provider: a real flow against a real (small) provider.

The provider (:mod:`tests.oidc_provider`) runs on its own loopback port,
signs RS256 ID tokens and checks the client secret and PKCE verifier as
Keycloak would. Vigie runs as ``vigie serve`` in a subprocess with
``anonymous_read: false``, so only a real session opens a page.
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
import urllib.error
import urllib.request

import pytest
from playwright import sync_api as playwright_api

from tests.browser import CHROMIUM, CHROMIUM_ARGS, VigieServer
from tests.oidc_provider import FakeOidcProvider, Login


@pytest.fixture(scope="module")
def provider():
    idp = FakeOidcProvider().start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, mosquitto, provider):
    oidc = {"issuer": provider.issuer, "client_id": provider.client_id, "client_secret_env": "VIGIE_OIDC_SECRET",
            "label": "Log in with City SSO",
            "role_map": {"water-operators": "operator", "water-analysts": "analyst", "vigie-admins": "admin"}}
    vigie = VigieServer(tmp_path_factory.mktemp("oidc"), mosquitto.port, anonymous_read=False,
                        server_options={"oidc": oidc}, env={"VIGIE_OIDC_SECRET": provider.client_secret})
    vigie.start()
    yield vigie
    vigie.stop()


@pytest.fixture(autouse=True)
def _behave(provider):
    provider.misbehave = None
    yield
    provider.misbehave = None


def sso(server: VigieServer, provider: FakeOidcProvider, login: Login, next_url: str = "/alarms"):
    """Go through the whole redirect dance as a browser would; return (final status, final URL, body, jar)."""
    provider.next_login = login
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with opener.open(f"{server.base}/login/oidc?next={next_url}", timeout=30) as r:
            return r.status, r.url, r.read().decode(), jar
    except urllib.error.HTTPError as e:
        return e.code, e.url, e.read().decode(), jar


def note(page: str) -> str:
    """Return the message the login page shows."""
    found = re.search(r"id='login-note'>([^<]*)<", page)
    return html.unescape(found.group(1)) if found else page[:300]


def me(server: VigieServer, jar: http.cookiejar.CookieJar) -> dict:
    cookie = next(c.value for c in jar if c.name == "vigie_session")
    req = urllib.request.Request(f"{server.base}/api/v1/me", headers={"Cookie": f"vigie_session={cookie}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def audit(server: VigieServer) -> list[dict]:
    req = urllib.request.Request(f"{server.base}/api/v1/alarms/journal?category=audit&limit=1000",
                                 headers=server.headers("admin"))
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["events"]


def test_a_user_of_the_city_directory_logs_in_with_the_role_their_group_gives(server, provider):
    status, url, body, jar = sso(server, provider, Login("alice", ["staff", "water-operators"]))
    assert status == 200 and url == f"{server.base}/alarms", (status, url, body[:300])
    assert me(server, jar)["name"] == "alice" and me(server, jar)["role"] == "operator"
    assert any(e["kind"] == "login" and e["user"] == "alice" and "single sign-on" in e["comment"]
               for e in audit(server))
    # The highest role among the groups wins; the role is read again at each login (the directory decides).
    _s, _u, _b, jar = sso(server, provider, Login("alice", ["water-operators", "vigie-admins"]))
    assert me(server, jar)["role"] == "admin"
    _s, _u, _b, jar = sso(server, provider, Login("alice", ["water-analysts"]))
    assert me(server, jar)["role"] == "analyst"


@pytest.mark.parametrize(("misbehave", "reason"), [
    ("audience", "Audience"), ("signature", "Signature"), ("nonce", "nonce"), ("expired", "expired"),
    ("deny", "user said no")])
def test_a_token_vigie_cannot_trust_opens_no_session(server, provider, misbehave, reason):
    provider.misbehave = misbehave
    status, _url, body, jar = sso(server, provider, Login("mallory", ["vigie-admins"]))
    assert status == 401 and reason in note(body), note(body)
    assert not any(c.name == "vigie_session" for c in jar)


def test_unmapped_groups_and_local_names_are_refused(server, provider):
    status, _u, body, jar = sso(server, provider, Login("carol", ["parks"]))
    assert status == 401 and "none of your groups" in body and not any(c.name == "vigie_session" for c in jar)
    # "viewer" is a local account of the test server: the directory cannot take it over.
    status, _u, body, jar = sso(server, provider, Login("viewer", ["vigie-admins"]))
    assert status == 401 and "local account" in body and not any(c.name == "vigie_session" for c in jar)
    assert any(e["kind"] == "login_failed" and "local account" in e["comment"] for e in audit(server))


def test_an_answer_that_was_not_asked_for_is_refused(server, provider):
    """A callback with no login started from this browser (a forged or replayed redirect) opens nothing."""
    exchanged = provider.token_requests
    req = urllib.request.Request(f"{server.base}/login/oidc/callback?code=abc&state=xyz")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401 and "start again" in err.value.read().decode()
    assert provider.token_requests == exchanged  # refused before any code is exchanged


def test_the_login_page_offers_single_sign_on_and_a_browser_goes_through(server, provider):
    provider.next_login = Login("dave", ["water-operators"])
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{server.base}/alarms")  # not logged in: sent to the login page
            page.wait_for_url("**/login**")
            page.click("#login-sso")
            page.wait_for_url(f"{server.base}/alarms")
            user = page.locator(".vigie-user")
            playwright_api.expect(user).to_contain_text("dave", timeout=30_000)
            playwright_api.expect(user).to_contain_text("operator")
        finally:
            browser.close()


def test_a_directory_user_has_no_password_and_a_disabled_one_stays_out(tmp_path):
    from app.web.access import Role
    from app.web.accounts import EXTERNAL_PREFIX, AccountError, AccountStore

    store = AccountStore(tmp_path / "access.sqlite", b"k" * 40).open()
    user = store.external_login("erin", Role.operator, "https://sso.example.org")
    assert user.role is Role.operator and store.users["erin"][1] == EXTERNAL_PREFIX + "https://sso.example.org"
    for guess in ("", EXTERNAL_PREFIX, EXTERNAL_PREFIX + "https://sso.example.org", "a-long-password"):
        assert store.verify_password("erin", guess) is None
    with pytest.raises(AccountError, match="local account"):  # another provider's user of that name is not erin
        store.external_login("erin", Role.admin, "https://other.example.org")
    store.add_user("root", "admin", "a-long-password")
    store.set_disabled("erin", True)
    with pytest.raises(AccountError, match="disabled"):
        store.external_login("erin", Role.operator, "https://sso.example.org")


async def test_an_unusable_key_set_or_an_odd_groups_claim_is_a_refusal_not_a_crash():
    from app.web.access import Role
    from app.web.oidc import OidcClient, OidcRefused
    from app.web.oidc_spec import OidcSpec

    idp = FakeOidcProvider().start()
    try:
        idp.misbehave = "nokeys"
        client = OidcClient(OidcSpec(issuer=idp.issuer, client_id="vigie", role_map={"ops": "operator"}),
                            None, b"k" * 40)
        with pytest.raises(OidcRefused, match="signing keys cannot be used"):
            await client._key("k1")
    finally:
        idp.stop()
    for odd in (5, True, {"ops": 1}, None):
        with pytest.raises(OidcRefused, match="none of your groups"):
            client.role_of({"groups": odd})
    assert client.role_of({"groups": "staff ops"}) is Role.operator
