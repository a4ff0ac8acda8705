"""How long a new user waits for the demo: ``./scripts/demo`` on a fresh clone, then a restart.

A fresh clone of this repository (no ``.venv``) in a temporary directory,
with empty package caches (uv's and pip's, unless ``--warm``), runs
``./scripts/demo`` exactly as the README says; the clock stops at the first
answer of ``/login`` (HTTP 200: the page a visitor lands on). The demo is
then stopped with Ctrl-C and started again, and the restart is timed the
same way. The demo's broker and PLC ports are moved to free ones so that the
benchmark can run beside another Vigie.

    python -m bench.demo_startup [--warm] [--no-uv]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer(url: str, proc: subprocess.Popen, timeout: float) -> float | None:
    """Return when ``url`` first answered 200 (monotonic), or None when the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return None


def run(clone: Path, env: dict[str, str], web_port: int, cfg: Path, timeout: float) -> tuple[float | None, str]:
    log = clone / f"demo-{time.monotonic_ns()}.log"
    t0 = time.monotonic()
    proc = subprocess.Popen(["./scripts/demo", "--port", str(web_port), "--config", str(cfg)], cwd=clone,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        at = first_answer(f"http://127.0.0.1:{web_port}/login", proc, timeout)
        return (at - t0 if at else None), log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="keep the user's package caches")
    parser.add_argument("--no-uv", action="store_true", help="install with pip only (VIGIE_NO_UV=1)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigie-demo-start-") as tmp:
        clone = Path(tmp) / "vigie"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        cfg = Path(tmp) / "config"
        cfg.mkdir()
        mqtt_port, opc_port, web_port = free_port(), free_port(), free_port()
        for f in (clone / "config").glob("*.yaml"):
            text = f.read_text().replace("port: 18830", f"port: {mqtt_port}").replace(":48400/", f":{opc_port}/")
            (cfg / f.name).write_text(text)
        (Path(tmp) / "layouts").symlink_to(clone / "layouts")  # layouts sit beside the config directory
        env = {**os.environ}
        if not args.warm:
            env.update(UV_CACHE_DIR=str(Path(tmp) / "uv-cache"), PIP_NO_CACHE_DIR="1")
        if args.no_uv:
            env["VIGIE_NO_UV"] = "1"
        first, tail = run(clone, env, web_port, cfg, args.timeout)
        if first is None:
            sys.exit(f"the demo did not answer within {args.timeout:.0f} s:\n{tail}")
        again, tail = run(clone, env, web_port, cfg, args.timeout)
        load = os.getloadavg()[0]
        print(f"installer: {'pip' if args.no_uv else 'uv (pip fallback)'}, caches: {'warm' if args.warm else 'empty'}")
        print(f"fresh clone -> first 200 from /login: {first:.1f} s")
        print(f"restart     -> first 200 from /login: {again:.1f} s" if again else f"restart failed:\n{tail}")
        print(f"load average at the end: {load:.1f} (2-core machine)")


if __name__ == "__main__":
    main()
