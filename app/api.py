"""The JSON API beside the pages: layouts (read; write for analysts) and queries.

Queries let a notebook or a script read a running Vigie's store (the
embedded DuckDB file is locked to the server process), with an API token of
scope ``read``. Layout writes need ``layouts:edit`` whatever the client,
since the pages' own checks are not the only way in; each save is audited
with the difference.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

import param
import tornado.web
import yaml

from app.dashboard.layouts import LayoutNameError, layout_name_problem
from app.dashboard.spec import LayoutSpec, parse_layout
from app.model import series_problem
from app.spec import Spec
from app.web.audit import audit
from app.web.json_api import JsonHandler, PageQuery
from app.web.limits import MAX_ERRORS, MAX_PROBLEM_CHARS, LimitedBodyHandler, load_user_yaml, short
from app.web.openapi import Op

if TYPE_CHECKING:
    from app.dashboard.layouts import LayoutStore
    from app.runtime import Runtime




class EnvelopeQuery(Spec):
    """A series over a time range, reduced to buckets of min, mean and max."""

    required = ("series",)
    series = param.String(default="", doc="device/metric")
    start = param.Integer(default=None, allow_None=True, doc="ns since the epoch (default: an hour before end)")
    end = param.Integer(default=None, allow_None=True, doc="ns since the epoch (default: now)")
    buckets = param.Integer(default=800, bounds=(1, 10_000), doc="At most this many buckets.")


class LayoutsHandler(JsonHandler):
    """``GET /api/v1/layouts``: the layout names."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Layout names (a page of them)", query=PageQuery)}

    def get(self) -> None:
        assert self.layouts is not None
        names = self.page(self.layouts.names())
        if names is not None:
            self.answer(200, {"layouts": names})


class LayoutHandler(JsonHandler, LimitedBodyHandler):
    """``GET/PUT /api/v1/layouts/<name>``: one layout as a spec.

    A save is refused before its body is read when the caller may not edit
    layouts, the name is not a layout name or the body is over
    ``server.max_body_bytes``; its YAML may not use aliases, and the error
    reply stays a few KB.
    """

    actions: ClassVar[dict[str, str]] = {"GET": "view", "PUT": "layouts:edit"}
    api: ClassVar[dict[str, Op]] = {
        "GET": Op("One layout as its spec, with the problems a hand-edited file has"),
        "PUT": Op("Save a layout (JSON or YAML; the previous version is kept; audited)", body=LayoutSpec)}

    def body_limit(self) -> int:
        return self.runtime.loaded.config.server.max_body_bytes

    def authorize(self) -> bool:
        if self.request.method != "PUT":
            return True
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
            before = self.layouts.load(name).spec.to_spec() if self.layouts.exists(name) else None
            self.layouts.save(name, loaded.spec)
        except LayoutNameError as exc:
            self.answer(400, {"error": short(exc)})
            return
        audit(self.runtime.journal, "layout_saved", self.who, f"layouts/{name}.yaml", origin=self.request.remote_ip,
              before=before, after=loaded.spec.to_spec())
        self.answer(200, {"saved": f"layouts/{name}.yaml"})


class LatestHandler(JsonHandler):
    """``GET /api/v1/latest``: the latest value of every series (live cache), a page at a time."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("The latest value of every series (a page of them; X-Total-Count, "
                                              "Link)", query=PageQuery, ok_schema={"type": "array"})}

    def get(self) -> None:
        values = self.page(sorted(self.runtime.live.latest(), key=lambda v: v.key))
        if values is None:
            return
        self.answer(200, [{"series": v.key, "time_ns": v.time_ns, "value": v.value, "unit": v.unit,
                           "quality": str(v.quality), "tags": v.tags} for v in values])


class DevicesHandler(JsonHandler):
    """``GET /api/v1/devices``: every device that reported, with its series and its last reading's time."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Devices (a page of them), each with its series and the time of "
                                              "its last reading", query=PageQuery)}

    def get(self) -> None:
        devices: dict[str, dict] = {}
        for v in self.runtime.live.latest():
            device, _, metric = v.key.partition("/")
            entry = devices.setdefault(device, {"device": device, "series": [], "time_ns": 0,
                                                "site": v.tags.get("site")})
            entry["series"].append(v.key)
            entry["time_ns"] = max(entry["time_ns"], v.time_ns)
        items = self.page([devices[d] for d in sorted(devices)])
        if items is not None:
            self.answer(200, {"devices": items})


class EnvelopeHandler(JsonHandler):
    """``GET /api/v1/envelope?series=&start=&end=&buckets=``: a reduced range (ns epochs)."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("A series over a time range, reduced to buckets of min, mean, max",
                                              query=EnvelopeQuery)}

    async def get(self) -> None:
        if (q := self.query_spec(EnvelopeQuery)) is None:
            return
        key = q.series  # "m\n" is refused, not trimmed
        end = time.time_ns() if q.end is None else q.end
        start = end - 3600 * 10**9 if q.start is None else q.start
        buckets = q.buckets
        if end < start:
            self.answer(400, {"error": "end is before start"})
            return
        problem = series_problem(key)
        if problem is not None:
            self.answer(400, {"error": problem})
            return
        env = await self.runtime.store.envelope(key, start, end, buckets)
        self.answer(200, {"series": key, "bucket_ns": env.bucket_ns, "time_ns": env.time_ns, "min": env.min,
                          "mean": env.mean, "max": env.max})


class CameraFrameHandler(JsonHandler):
    """``GET /api/v1/cameras/<camera>/frames/<time_ns>`` and ``.../latest``: a kept picture.

    Webcam widgets point at these URLs instead of sending the picture
    through every session's websocket: the browser fetches it once over
    HTTP, and a frame, named by its time, never changes (cached for a year).
    ``latest`` is not cached, for portals that show a camera without a widget.
    """

    def initialize(self, runtime: Runtime, layouts: LayoutStore | None = None) -> None:
        super().initialize(runtime, layouts)
        self.cameras = runtime.cameras

    def check_access(self) -> bool:
        """A login or token as for any read, or an embed link whose layout (or widget) shows this camera."""
        token = self.get_query_argument("t", None)
        if token and self.layouts is not None and not self.request.headers.get("Authorization"):
            link = self.auth.accounts.embed_link(token)
            camera = self.path_args[0] if self.path_args else ""
            if link is not None and self._shows(link.layout, link.widget, camera):
                return True
        return super().check_access()

    def _shows(self, layout: str, widget: str | None, camera: str) -> bool:
        assert self.layouts is not None
        try:
            spec = self.layouts.load(layout).spec
        except (LayoutNameError, FileNotFoundError):
            return False
        return any(getattr(w, "camera", None) == camera for w in spec.widgets if widget in (None, w.id))

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
        self.set_header("Cache-Control", "no-store" if time_ns is None else "private, max-age=31536000, immutable")
        self.finish(data)


def camera_frame_url(camera: str, time_ns: int) -> str:
    """Return the path of a camera frame on this server (what webcam widgets show)."""
    return f"/api/v1/cameras/{camera}/frames/{time_ns}"
