"""The JSON API beside the pages: layouts (read; write when editing is allowed) and queries.

Queries let a notebook or a script read a running Vigie's store (the
embedded DuckDB file is locked to the server process). Layout writes answer
403 on a read-only server whatever the client, since the pages' own
checks are not the only way in.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import tornado.web
import yaml

from app.dashboard.layouts import LayoutNameError, layout_name_problem
from app.dashboard.spec import parse_layout
from app.model import series_problem
from app.web.json_api import JsonHandler
from app.web.limits import MAX_ERRORS, MAX_PROBLEM_CHARS, LimitedBodyHandler, load_user_yaml, short

if TYPE_CHECKING:
    from app.runtime import Runtime




class LayoutsHandler(JsonHandler):
    """``GET /api/v1/layouts``: the layout names."""

    def get(self) -> None:
        assert self.layouts is not None
        self.answer(200, {"layouts": self.layouts.names()})


class LayoutHandler(LimitedBodyHandler, JsonHandler):
    """``GET/PUT /api/v1/layouts/<name>``: one layout as a spec.

    A save is refused before its body is read when editing is off, the name
    is not a layout name or the body is over ``server.max_body_bytes``; its
    YAML may not use aliases, and the error reply stays a few KB.
    """

    def body_limit(self) -> int:
        return self.runtime.loaded.config.server.max_body_bytes

    def authorize(self) -> bool:
        if self.request.method != "PUT":
            return True
        if not self.runtime.loaded.config.server.editing:
            self.refuse(403, {"error": "this server is read-only: editing is disabled"})
            return False
        problem = layout_name_problem(self.path_args[0] if self.path_args else None)
        if problem is not None:
            self.refuse(400, {"error": problem})
            return False
        return True

    def get(self, name: str) -> None:
        assert self.layouts is not None
        try:
            loaded = self.layouts.load(name)
        except (LayoutNameError, FileNotFoundError) as exc:
            self.answer(404, {"error": short(exc)})
            return
        self.answer(200, {"name": name, "spec": loaded.spec.to_spec(), "problems": loaded.problems})

    def put(self, name: str) -> None:
        assert self.layouts is not None
        try:
            data = load_user_yaml(self.body.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            self.answer(400, {"error": f"body is not YAML or JSON: {short(exc)}"})
            return
        loaded = parse_layout(name, yaml.safe_dump(data), f"{name}.yaml")
        if loaded.problems:
            self.answer(400, {"error": "invalid layout", "count": len(loaded.problems),
                              "problems": [short(p, MAX_PROBLEM_CHARS) for p in loaded.problems[:MAX_ERRORS]]})
            return
        try:
            self.layouts.save(name, loaded.spec)
        except LayoutNameError as exc:
            self.answer(400, {"error": short(exc)})
            return
        self.answer(200, {"saved": f"layouts/{name}.yaml"})


class LatestHandler(JsonHandler):
    """``GET /api/v1/latest``: the latest value of every series (live cache)."""

    def get(self) -> None:
        self.answer(200, [{"series": v.key, "time_ns": v.time_ns, "value": v.value, "unit": v.unit,
                           "quality": str(v.quality), "tags": v.tags} for v in self.runtime.live.latest()])


class EnvelopeHandler(JsonHandler):
    """``GET /api/v1/envelope?series=&start=&end=&buckets=``: a reduced range (ns epochs)."""

    async def get(self) -> None:
        key = self.get_query_argument("series", "", strip=False)  # "m\n" is refused, not trimmed
        try:
            end = int(self.get_query_argument("end", str(time.time_ns())))
            start = int(self.get_query_argument("start", str(end - 3600 * 10**9)))
            buckets = min(10_000, max(1, int(self.get_query_argument("buckets", "800"))))
        except ValueError:
            self.answer(400, {"error": "start, end (ns) and buckets must be integers"})
            return
        problem = series_problem(key)
        if problem is not None:
            self.answer(400, {"error": problem})
            return
        env = await self.runtime.store.envelope(key, start, end, buckets)
        self.answer(200, {"series": key, "bucket_ns": env.bucket_ns, "time_ns": env.time_ns, "min": env.min,
                          "mean": env.mean, "max": env.max})


class CameraFrameHandler(tornado.web.RequestHandler):
    """``GET /api/v1/cameras/<camera>/frames/<time_ns>`` and ``.../latest``: a kept picture.

    Webcam widgets point at these URLs instead of sending the picture
    through every session's websocket: the browser fetches it once over
    HTTP, and a frame, named by its time, never changes (cached for a year).
    ``latest`` is not cached, for portals that show a camera without a widget.
    """

    def initialize(self, runtime: Runtime) -> None:
        self.cameras = runtime.cameras

    def compute_etag(self) -> str | None:
        """No hash of every picture served: a frame's URL names it, and ``latest`` is not cached."""
        return None

    async def get(self, camera: str, time_ns: str | None = None) -> None:
        frame: tuple[bytes, str] | None = None
        if self.cameras is not None:
            try:
                if time_ns is None:
                    newest = await asyncio.to_thread(self.cameras.read, camera)
                    frame = (newest[1], newest[2]) if newest else None
                else:
                    frame = await asyncio.to_thread(self.cameras.frame, camera, int(time_ns))
            except ValueError:  # a camera name that cannot exist
                raise tornado.web.HTTPError(400, reason="not a camera name") from None
        if frame is None:
            raise tornado.web.HTTPError(404, reason="no such frame")
        data, content_type = frame
        self.set_header("Content-Type", content_type)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store" if time_ns is None else "public, max-age=31536000, immutable")
        self.finish(data)


def camera_frame_url(camera: str, time_ns: int) -> str:
    """Return the path of a camera frame on this server (what webcam widgets show)."""
    return f"/api/v1/cameras/{camera}/frames/{time_ns}"
