"""A disk queue for batches the database could not take yet.

While the database is unreachable (and when Vigie stops before it came
back) the writer appends whole batches here as JSON-lines files, written to
a temporary name and renamed so a crash never leaves half a batch. Replay
reads them back oldest first and deletes each file only after the database
accepted it; since a point with the same series and timestamp overwrites,
replaying a file twice after a crash stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from itertools import count
from pathlib import Path

from app.model import Reading, now_ns

log = logging.getLogger(__name__)


def _encode(r: Reading) -> list[object]:
    return [r.device, r.metric, r.time_ns, r.value, r.quality, r.unit, r.source, r.tags]


def _decode(row: list) -> Reading:
    device, metric, time_ns, value, quality, unit, source, tags = row
    return Reading(device, metric, int(time_ns), float(value), quality, unit, source, tags)


class Spool:
    """Batches on disk, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = count()
        existing = self.files()
        self.readings = sum(self._lines(p) for p in existing)
        # Counted in memory: the writer asks on every tick, and an outage of a day leaves
        # tens of thousands of files; listing them each time cost more than writing them.
        self._files = len(existing)

    @staticmethod
    def _lines(path: Path) -> int:
        with path.open("rb") as f:
            return sum(1 for _ in f)

    def files(self) -> list[Path]:
        """Return spooled batch files, oldest first."""
        return sorted(self.directory.glob("*.jsonl"))

    def __len__(self) -> int:
        return self._files

    def resync(self) -> list[Path]:
        """List the files (oldest first) and take their count from the directory again."""
        files = self.files()
        self._files = len(files)
        return files

    def put(self, batch: Sequence[Reading]) -> Path:
        """Write a batch to disk durably and return its file."""
        name = f"{now_ns():020d}-{next(self._seq):06d}.jsonl"
        final = self.directory / name
        tmp = self.directory / (name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in batch:
                f.write(json.dumps(_encode(r), allow_nan=True))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(final)
        self.readings += len(batch)
        self._files += 1
        return final

    def read(self, path: Path) -> list[Reading]:
        """Read one spooled batch back; skip (and log) damaged lines."""
        batch = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    batch.append(_decode(json.loads(line)))
                except (ValueError, TypeError) as exc:
                    log.error("spool file %s line %d is damaged (%s); skipped", path, n, exc)
        return batch

    def remove(self, path: Path, n: int) -> None:
        """Delete a batch file the database has taken."""
        try:
            path.unlink()
            self._files = max(0, self._files - 1)
        except FileNotFoundError:  # removed already (another replay, a hand): not counted twice
            pass
        self.readings = max(0, self.readings - n)
