"""Browser-test support: a `vigie serve` subprocess and Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.servers import free_port, wait_until

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
    """`vigie serve --config DIR` in a subprocess, with its own layouts directory."""

    def __init__(self, tmp: Path, mqtt_port: int, *, editing: bool, frame_ancestors: list[str] = (),
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
            f"server: {{port: {self.port}, editing: {str(editing).lower()}, "
            f"frame_ancestors: {json.dumps(list(frame_ancestors))}, idle_session_s: {idle_session_s}"
            + "".join(f", {k}: {json.dumps(v)}" for k, v in (server_options or {}).items()) + "}\n"
            f"store: {store}\n"
            f"mqtt:\n  - name: m\n    port: {mqtt_port}\n    client_id: browser-{self.port}\n"
            "    subscriptions:\n      - topic: bt/{site}/{device}/telemetry\n"
            "        fields: {level: {unit: m}}\n"
            + extra_config
        )
        self.log = tmp / "vigie.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> VigieServer:
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
