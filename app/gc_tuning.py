"""Memory for a long-running server process: the garbage collector's thresholds, and the allocator.

CPython collects its youngest generation every 700 net allocations of
container objects, and whatever is alive at that moment is promoted: in a
server refreshing 50 dashboard sessions twice a second, the messages and
events in flight at each of those frequent collections were promoted by
the thousand, and the oldest generation grew by a quarter (CPython's
trigger for a full collection) every ~15 s. Each full collection walks
every object of every session (~5 MB each) and stopped the event loop for
about a second: no refresh, no ingest meanwhile. Those pauses set the p95
and p99 of the publish-to-page delay.

Collecting the young generation every 50,000 net allocations gives
in-flight objects time to die first. Measured with ``bench/sessions.py``
(50 sessions, bench/README.md): full collections 4.1/min → 0 in the
window, server CPU 49 → 32 % of a core, p95 738 → 509 ms, p99 1,152 →
611 ms, longest event-loop stall 1,023 → 70 ms. Memory held by cyclic
garbage waits a little longer to be freed; the full collections still run
by CPython's own rule when the old generation has grown by a quarter.

The allocator matters too: with CPython's own small-object allocator, the
memory of a burst of page sessions stays with the process once they close
(its arenas are fragmented: +11 % RSS after 20 sessions came and went, none
left), while with ``PYTHONMALLOC=malloc`` the page gate's ``malloc_trim``
gives it back (+2 %), at no CPU cost we could measure on the alarm engine's
benchmark (docs/concurrency.md). The variable must be set before Python
starts, so the Dockerfile and ``scripts/demo`` set it, and ``vigie serve``
says so when it is missing.
"""

from __future__ import annotations

import gc
import os

YOUNG_THRESHOLD = 50_000


def tune_for_server() -> tuple[int, int, int]:
    """Set the server's collector thresholds; return the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, previous[1], previous[2])
    return previous


def allocator_advice() -> str | None:
    """Return a sentence when the process runs on CPython's own allocator (None with the system's)."""
    if os.environ.get("PYTHONMALLOC", "").startswith("malloc"):
        return None
    return ("PYTHONMALLOC is not set to malloc: memory of page sessions that closed stays with the process "
            "(set PYTHONMALLOC=malloc in the service's environment, as the Dockerfile does; docs/concurrency.md)")
