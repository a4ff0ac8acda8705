"""Periodic refresh of a session's views, without Panel's busy indicator.

``pn.state.add_periodic_callback`` marks the whole process busy around every
run, and ``state.busy`` drives the busy indicator of *every* open session:
each session's refresh then updates N indicators, so the cost grows with
the square of the number of sessions. Measured with 50 sessions of the
"Flood dams" dashboard: ~60 % of the server's time went to that bookkeeping
(py-spy, bench/sessions.py). Refreshes are background work: they run here
with ``background=True`` and without per-run logging. Bound to the session's
document, they stop when the session ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panel.io.callbacks import PeriodicCallback


def every(callback: Callable[[], Any], period_ms: int) -> PeriodicCallback:
    """Run ``callback`` every ``period_ms`` on the current session (or loop), and return it."""
    cb = PeriodicCallback(callback=callback, period=period_ms, background=True, log=False)
    cb.start()
    return cb
