"""Readings the store refused, kept on disk with the reason: dead letters that can be found again.

A reading refused by the database (after the edge check let it through)
must not vanish with only a counter as its trace. The writer appends each
one, with the engine's reason and the time, as a JSON line to a daily file
beside the spool. JSON's ASCII escapes hold any text, lone surrogates
included, so the very reading that broke the store can be read back. The
directory is capped (oldest files go first) so a store that refuses
everything cannot fill the disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from app.model import Reading, now_ns

log = logging.getLogger(__name__)


class RejectedLog:
    """Daily JSON-lines files of refused readings, at most ``max_bytes`` in all."""

    def __init__(self, directory: Path, *, max_bytes: int = 100_000_000) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def put(self, refused: Sequence[tuple[Reading, str]]) -> Path | None:
        """Append refused readings with their reasons; return the file (None when it cannot be written)."""
        if not refused:
            return None
        path = self.directory / time.strftime("rejected-%Y%m%d.jsonl", time.gmtime())
        at = now_ns()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="ascii") as f:
                for r, reason in refused:
                    f.write(json.dumps({
                        "refused_ns": at, "reason": reason, "device": r.device, "metric": r.metric,
                        "time_ns": r.time_ns, "value": r.value, "quality": r.quality, "unit": r.unit,
                        "source": r.source, "tags": r.tags,
                    }, ensure_ascii=True, default=repr))
                    f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            self._cap()
        except OSError as exc:
            log.error("cannot keep %d refused readings in %s: %s", len(refused), self.directory, exc)
            return None
        return path

    def files(self) -> list[Path]:
        """Return the files, oldest first."""
        return sorted(self.directory.glob("rejected-*.jsonl"))

    def read(self) -> list[dict]:
        """Return every kept refusal, oldest first (tests and the CLI)."""
        out = []
        for path in self.files():
            with path.open(encoding="ascii") as f:
                out.extend(json.loads(line) for line in f if line.strip())
        return out

    def _cap(self) -> None:
        files = self.files()
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_bytes and len(files) > 1:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink()
            log.warning("refused readings file %s removed: the directory is over %d bytes", oldest.name,
                        self.max_bytes)
