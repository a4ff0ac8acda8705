"""A process that writes readings, compacts, and is killed (SIGKILL) by tests/test_history_store.py.

    python tests/compaction_crash_child.py DATA_DIR MARKER PHASE

Writes a first set of readings and compacts it fully, then writes a second
set that overwrites, repeats and precedes some of the first (so the next
compaction rewrites days, not only appends), then compacts again. When that
compaction reaches ``PHASE`` ("start", "written" or "committed") it writes
``MARKER``; for "written" and "committed" it then blocks until killed, for
"start" it carries on, so the kill lands wherever the compaction has got to.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.store.embedded import EmbeddedStore  # noqa: E402
from tests.history_data import first_set, second_set  # noqa: E402


async def main(data_dir: str, marker: str, phase: str) -> None:
    store = EmbeddedStore(data_dir, maintenance_interval_s=3600)
    await store.open()
    for i in range(0, len(first := first_set()), 5000):
        await store.write(first[i:i + 5000])
    await store.maintain()
    for i in range(0, len(second := second_set()), 5000):
        await store.write(second[i:i + 5000])

    def hook(reached: str) -> None:
        if reached == phase:
            Path(marker).write_text(phase)
            if phase != "start":
                sys.stdin.read()  # blocks until the test kills this process

    store.compaction_hook = hook
    await store.maintain()
    await asyncio.to_thread(Path(marker).write_text, "done")
    await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
