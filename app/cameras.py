"""Camera images on disk: the last few frames of each camera, with their times.

Frames are kept as files, ``<directory>/<camera>/<time_ns>.<ext>``, so they
survive a restart, cost no memory, and can be served or copied as they are.
A frame is written to a hidden temporary name and renamed into place, so a
reader never sees half an image. Only JPEG and PNG are accepted, recognised by
their first bytes (a declared content type is checked, never trusted): what
reaches a browser is an image, not a script an attacker sent on a camera topic.
Camera names become directory names, so they must be slugs.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # with fullmatch: "x\n" is not a name
_FRAME = re.compile(r"(\d{1,20})\.(jpg|png)")
_EXT = {"image/jpeg": "jpg", "image/png": "png"}
_TYPE = {ext: ctype for ctype, ext in _EXT.items()}
_RACY_NS = 50_000_000  # directory mtimes tick per kernel jiffy: a listing this close may miss a change
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
MAX_BYTES = 5_000_000


def sniff_image(data: bytes) -> str | None:
    """Return ``image/jpeg`` or ``image/png`` from the magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return None


def check_camera(camera: str) -> str:
    """Return ``camera`` if it is a safe directory name, else raise ValueError saying why."""
    if not isinstance(camera, str) or not _SLUG.fullmatch(camera):
        raise ValueError(f"camera name {str(camera)[:80]!r} must be 1-64 letters, digits, '.', '-' or '_', "
                         "not starting with '.' or '-'")
    return camera


@dataclass(frozen=True, slots=True)
class Frame:
    """One stored image of a camera."""

    time_ns: int
    path: Path
    content_type: str


class CameraStore:
    """The last ``keep`` frames of every camera, on disk under ``directory``."""

    def __init__(self, directory: str | Path, keep: int = 20, max_bytes: int = MAX_BYTES) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # Per camera: (directory mtime, when listed, frames oldest first). Listing again only when
        # the directory changed keeps latest() cheap for many sessions polling every second, and
        # stays right when another process writes the frames.
        self._index: dict[str, tuple[int, int, list[Frame]]] = {}

    def check(self, data: bytes, content_type: str | None = None) -> str:
        """Return the sniffed content type of ``data``, or raise ValueError saying why it is refused."""
        if not data:
            raise ValueError("empty image")
        if len(data) > self.max_bytes:
            raise ValueError(f"image of {len(data)} bytes is larger than the limit of {self.max_bytes}")
        sniffed = sniff_image(data)
        if sniffed is None:
            raise ValueError(f"not a JPEG or PNG image (starts with {data[:8].hex(' ')})")
        declared = (content_type or "").split(";")[0].strip().lower()
        declared = _ALIASES.get(declared, declared)
        if declared.startswith("image/") and declared != sniffed:
            raise ValueError(f"declared {declared} but the bytes are {sniffed}")
        return sniffed

    def put(self, camera: str, time_ns: int, data: bytes, content_type: str | None = None) -> Path:
        """Store one frame atomically, drop the oldest beyond ``keep``, return its path."""
        check_camera(camera)
        if not isinstance(time_ns, int) or time_ns < 0:
            raise ValueError(f"time_ns must be a non-negative integer, not {time_ns!r}")
        ctype = self.check(data, content_type)
        folder = self.directory / camera
        folder.mkdir(exist_ok=True)
        path = folder / f"{time_ns}.{_EXT[ctype]}"
        tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._index.pop(camera, None)
        self._prune(camera)
        return path

    def _prune(self, camera: str) -> None:
        frames = self._frames(camera)
        for frame in frames[: max(0, len(frames) - self.keep)]:
            frame.path.unlink(missing_ok=True)  # another writer may have pruned it already

    def _frames(self, camera: str) -> list[Frame]:
        """Return the camera's frames, oldest first (re-listed only when its directory changed)."""
        folder = self.directory / camera
        try:
            mtime = folder.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        with self._lock:
            cached = self._index.get(camera)
            if cached is not None and cached[0] == mtime and cached[1] - mtime > _RACY_NS:
                return cached[2]
        listed_ns = time.time_ns()
        frames = []
        with os.scandir(folder) as entries:
            for entry in entries:
                m = _FRAME.fullmatch(entry.name)
                if m:
                    frames.append(Frame(int(m.group(1)), Path(entry.path), _TYPE[m.group(2)]))
        frames.sort(key=lambda f: f.time_ns)
        with self._lock:
            self._index[camera] = (mtime, listed_ns, frames)
        return frames

    def latest(self, camera: str) -> tuple[int, Path, str] | None:
        """Return ``(time_ns, path, content_type)`` of the newest frame, or None."""
        check_camera(camera)
        frames = self._frames(camera)
        if not frames:
            return None
        f = frames[-1]
        return f.time_ns, f.path, f.content_type

    def history(self, camera: str) -> list[tuple[int, Path, str]]:
        """Return ``(time_ns, path, content_type)`` of every kept frame, newest first."""
        check_camera(camera)
        return [(f.time_ns, f.path, f.content_type) for f in reversed(self._frames(camera))]

    def cameras(self) -> list[str]:
        """Return the names of the cameras with at least one frame, sorted."""
        out = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.is_dir() and _SLUG.fullmatch(entry.name) and self._frames(entry.name):
                    out.append(entry.name)
        return sorted(out)

    def read(self, camera: str) -> tuple[int, bytes, str] | None:
        """Return ``(time_ns, data, content_type)`` of the newest frame that can still be read."""
        check_camera(camera)
        for frame in reversed(self._frames(camera)):
            try:
                return frame.time_ns, frame.path.read_bytes(), frame.content_type
            except FileNotFoundError:  # pruned between listing and reading: take the next newest
                continue
        return None

    def frame(self, camera: str, time_ns: int) -> tuple[bytes, str] | None:
        """Return ``(data, content_type)`` of the frame taken at ``time_ns``, or None when not kept."""
        check_camera(camera)
        for frame in reversed(self._frames(camera)):
            if frame.time_ns == time_ns:
                try:
                    return frame.path.read_bytes(), frame.content_type
                except FileNotFoundError:  # pruned since the listing
                    return None
        return None

    def health(self) -> dict[str, object]:
        """Return the directory and the frames kept per camera."""
        return {"directory": str(self.directory), "keep": self.keep,
                "cameras": {c: len(self._frames(c)) for c in self.cameras()}}
