"""Browser-test support: a `vigie serve` subprocess and Debian's Chromium through Playwright."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.servers import free_port, wait_until

ROLES = ("viewer", "operator", "analyst", "admin")
TOKEN_SCOPES = ["admin"]  # every scope: the tokens of the test users do what their role allows


def password(role: str) -> str:
    """Return the password of the test user named after ``role``."""
    return f"{role}-password-1"

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class VigieServer:
    """`vigie serve --config DIR` in a subprocess, with its own layouts directory.

    It has one user per role, named after it (``admin``, ``analyst``, ``operator``, ``viewer``, password
    :func:`password`), and one API token each (:meth:`headers`); :meth:`login` gives a browser context
    a login session. ``anonymous_read`` (on by default here) lets tests that only look skip the login.
    """

    def __init__(self, tmp: Path, mqtt_port: int, *, anonymous_read: bool = True, frame_ancestors: list[str] = (),
                 layouts: dict[str, str] | None = None, idle_session_s: float = 15.0, extra_config: str = "",
                 server_options: dict | None = None, env: dict[str, str] | None = None,
                 store: str = "{engine: embedded, data_dir: data, spool_dir: spool}") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "config"
        self.config.mkdir(parents=True)
        self.layouts = tmp / "layouts"
        self.layouts.mkdir()
        for name, text in (layouts or {}).items():
            (self.layouts / f"{name}.yaml").write_text(text)
        (self.config / "vigie.yaml").write_text(
            f"server: {{port: {self.port}, anonymous_read: {str(anonymous_read).lower()}, "
            f"frame_ancestors: {json.dumps(list(frame_ancestors))}, idle_session_s: {idle_session_s}"
            + "".join(f", {k}: {json.dumps(v)}" for k, v in (server_options or {}).items()) + "}\n"
            f"store: {store}\n"
            f"mqtt:\n  - name: m\n    port: {mqtt_port}\n    client_id: browser-{self.port}\n"
            "    subscriptions:\n      - topic: bt/{site}/{device}/telemetry\n"
            "        fields: {level: {unit: m}}\n"
            + extra_config
        )
        self.log = tmp / "vigie.log"
        # As deployed (Dockerfile, scripts/demo): the system allocator, so freed session memory is returned.
        self.env = {"PYTHONMALLOC": "malloc", **os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        self._cookies: dict[str, str] = {}

    def _make_accounts(self) -> None:
        """Create the users and their tokens in the server's access file, before it starts."""
        from app.config import load_config
        from app.web.accounts import AccountStore
        from app.web.secret import server_secret

        loaded = load_config(self.config, env=self.env)
        accounts = AccountStore(self.tmp / loaded.config.server.access_file, server_secret(loaded, self.tmp)).open()
        try:
            for role in ROLES:
                if role not in accounts.users:
                    accounts.add_user(role, role, password(role))
                self.tokens[role] = accounts.create_token(role, "tests", TOKEN_SCOPES)[1]
        finally:
            accounts.close()

    def headers(self, role: str = "admin") -> dict[str, str]:
        """Return the Authorization header of the role's API token."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def session(self, role: str = "admin") -> str:
        """Log in through the form as the role's user; return the ``vigie_session`` cookie's value."""
        if role in self._cookies:
            return self._cookies[role]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/login")
        r = conn.getresponse()
        r.read()
        xsrf = next(c.split(";")[0].split("=", 1)[1] for c in r.headers.get_all("Set-Cookie") if c.startswith("_xsrf="))
        body = urllib.parse.urlencode({"_xsrf": xsrf, "username": role, "password": password(role), "next": "/"})
        conn.request("POST", "/login", body=body, headers={"Cookie": f"_xsrf={xsrf}",
                                                           "Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        r.read()
        conn.close()
        assert r.status == 302, f"login as {role}: {r.status}"
        cookie = next(c for c in r.headers.get_all("Set-Cookie") if c.startswith("vigie_session="))
        self._cookies[role] = cookie.split(";")[0].split("=", 1)[1]
        return self._cookies[role]

    def login(self, context, role: str = "admin") -> None:
        """Give a Playwright browser context the role's login session (as the login form would)."""
        context.add_cookies([{"name": "vigie_session", "value": self.session(role), "url": self.base,
                              "httpOnly": True, "sameSite": "Lax"}])

    def embed_link(self, layout: str, widget: str | None = None, days: float = 1) -> dict:
        """Create a signed embed link through the API, as an admin would; return the API's answer."""
        doc = {"layout": layout, "widget": widget, "days": days}
        req = urllib.request.Request(f"{self.base}/api/v1/embeds", data=json.dumps(doc).encode(), method="POST",
                                     headers={**self.headers("admin"), "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def start(self) -> VigieServer:
        self._make_accounts()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--config", str(self.config), "--data-root", str(self.tmp)],
            cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=self.env)
        wait_until(lambda: self.proc.poll() is not None or self.mqtt_connected(), timeout=60,
                   what="vigie serve ready")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def mqtt_connected(self) -> bool:
        status, body = get(self.base + "/health")
        return bool(body) and json.loads(body)["sources"]["m"]["state"] == "connected"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
