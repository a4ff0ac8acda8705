"""What every benchmark measures the machine with: /proc readers, quiet-machine waits, percentiles.

The benchmarks share one machine with whatever else runs on it, so each one
reads its processes' CPU and memory from /proc, how busy the whole machine
is, and describes the machine and versions it ran on. One copy of those
readers keeps the figures of ``ingest.py``, ``sessions.py``, ``history.py``
and ``embeds.py`` comparable.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """Return utime + stime of a process (all its threads) in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process (all its threads); 0 once it is gone."""
    return cpu_ticks(pid) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float]:
    """Return (VmRSS, VmHWM: the peak) of a process in MiB; zeros once it is gone."""
    rss = hwm = 0.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def machine_ticks(*, interrupts: bool = True) -> tuple[int, int]:
    """Return (busy, total) clock ticks of the whole machine since boot.

    With ``interrupts=False`` busy is user + nice + system only: loopback
    networking is largely accounted as interrupt time, which belongs to no
    process, so the ingest benchmark leaves it out when it subtracts its own
    processes to find what *other* work used.
    """
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(v[:8])
    busy = v[0] + v[1] + v[2] if not interrupts else total - v[3] - v[4]
    return busy, total


def machine_busy(seconds: float, *, interrupts: bool = True) -> float:
    """Return how many cores the whole machine kept busy over the next ``seconds``."""
    b0, t0 = machine_ticks(interrupts=interrupts)
    time.sleep(seconds)
    b1, t1 = machine_ticks(interrupts=interrupts)
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(limit_s: float, below: float = 0.3, *, interrupts: bool = True) -> float:
    """Wait (up to ``limit_s``) until the machine is under ``below`` busy cores for 3 s; return the load."""
    deadline = time.monotonic() + limit_s
    quiet = 0
    while True:
        load = machine_busy(1.0, interrupts=interrupts)
        quiet = quiet + 1 if load < below else 0
        if quiet >= 3 or time.monotonic() > deadline:
            return load
        if load >= below:
            print(f"waiting for a quiet machine ({load:.2f} cores busy)", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Return the q-th percentile (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _command_output(argv: list[str], cwd: Path | None = None) -> str:
    """Return a command's first output line, or "" when it is missing or fails."""
    with contextlib.suppress(Exception):
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=20)
        return (done.stdout.strip().splitlines() or [""])[0]
    return ""


def machine(packages: tuple[str, ...] = (), commands: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Describe the machine, the commit, the given Python packages' versions and the given commands' output."""
    model = ""
    with contextlib.suppress(OSError):
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    mem_kb = 0
    with contextlib.suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions: dict[str, str] = {}
    for name in packages:
        with contextlib.suppress(Exception):
            versions[name] = version(name)
    tools = {name: _command_output(argv) for name, argv in (commands or {}).items()}
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), **versions, **tools,
            "commit": _command_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT),
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "loadavg_at_start": os.getloadavg()}
