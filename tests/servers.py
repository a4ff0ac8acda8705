"""Real servers for tests: Mosquitto and InfluxDB on free loopback ports.

Each server runs in its own temporary directory and can be stopped and
started again on the same port and data (fault-injection tests restart
them). Readiness is polled against a deadline, never slept for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    """Return whether something accepts TCP connections on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerProcess:
    """A subprocess that can be stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        try:
            wait_until(self.ready, timeout=20, what=f"{type(self).__name__} to be ready")
        except TimeoutError:
            raise RuntimeError(f"{type(self).__name__} did not start:\n{self.log_path.read_text()[-2000:]}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Mosquitto(ServerProcess):
    """A Mosquitto broker with persistence, so QoS 1 sessions survive restarts."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__(directory)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        persist = directory / "persist"
        persist.mkdir(parents=True, exist_ok=True)
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {persist}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
            # As root, mosquitto would drop to a user that cannot write here.
            "user root\n"
        )
        self.conf = conf

    def command(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)]

    def ready(self) -> bool:
        return port_open(self.port)


class InfluxDB(ServerProcess):
    """An InfluxDB 1.x server (Debian's ``influxd``) with its own dirs and ports."""

    def __init__(self, directory: Path, database: str = "vigie") -> None:
        super().__init__(directory)
        self.port = free_port()
        self.rpc_port = free_port()
        self.database = database
        self.url = f"http://127.0.0.1:{self.port}"
        conf = directory / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{directory}/meta"\n'
            f'[data]\n  dir = "{directory}/data"\n  wal-dir = "{directory}/wal"\n'
            '  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            '[monitor]\n  store-enabled = false\n'
            '[continuous_queries]\n  enabled = false\n'
        )
        self.conf = conf

    def command(self) -> list[str]:
        return [shutil.which("influxd") or "/usr/bin/influxd", "-config", str(self.conf)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r:
                return r.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        super().start()
        self.query(f'CREATE DATABASE "{self.database}"')

    def query(self, q: str, db: str | None = None) -> dict:
        """Run an InfluxQL statement and return the decoded JSON answer."""
        import json

        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as r:
            return json.loads(r.read())

    def points(self, q: str) -> list[dict]:
        """Return the rows of a SELECT as dicts (tags and columns merged)."""
        out = []
        for result in self.query(q, self.database).get("results", []):
            for series in result.get("series", []) or []:
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out


def have(binary: str) -> bool:
    """Return whether a server binary is installed."""
    return shutil.which(binary) is not None or os.path.exists(f"/usr/sbin/{binary}")
