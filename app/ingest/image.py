"""Camera frames on a topic: binary JPEG or PNG payloads into the camera store.

The topic names the camera (its ``{device}`` level); the frame is stamped
with its arrival time. Besides storing the frame, the decoder emits one
reading, ``<camera>/image_bytes`` (the frame's size in bytes), so a camera
is a device like any other: the status grid shows its age, and a "no data"
alarm rule catches a camera that stopped sending.
"""

from __future__ import annotations

from typing import Any

from app.cameras import CameraStore, check_camera, sniff_image
from app.ingest.deadletters import DeadLetters
from app.ingest.decoders import Context, Decoder
from app.model import Quality, Reading

IMAGE_METRIC = "image_bytes"


class ImageDecoder(Decoder):
    """Store JPEG/PNG payloads as frames of the camera the topic names."""

    decoder_type = "image"

    def __init__(self, *, cameras: CameraStore, max_bytes: int = 5_000_000, **common: Any) -> None:
        super().__init__(max_bytes=max_bytes, **common)
        self.cameras = cameras

    def decode(self, payload: bytes, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        """Store one frame; the payload is binary, so the base class's UTF-8 step is skipped."""
        if len(payload) > self.max_bytes:
            dead.add(ctx.where, "oversized", f"{len(payload)} bytes > limit {self.max_bytes}", payload)
            return
        if not ctx.device:
            dead.add(ctx.where, "no_device", "topic names no {device} (the camera)", payload)
            return
        try:
            check_camera(ctx.device)
        except ValueError as exc:
            dead.add(ctx.where, "bad_camera_name", str(exc), payload)
            return
        if sniff_image(payload) is None:
            dead.add(ctx.where, "not_an_image", f"not a JPEG or PNG image ({len(payload)} bytes, starts with "
                                                f"{payload[:8].hex(' ') or 'nothing'})", payload)
            return
        try:
            self.cameras.put(ctx.device, ctx.received_ns, payload)
        except ValueError as exc:
            dead.add(ctx.where, "not_an_image", str(exc), payload)
            return
        except OSError as exc:  # a full disk must not stop ingest
            dead.add(ctx.where, "camera_store_error", f"{type(exc).__name__}: {exc}", payload)
            return
        out.append(Reading(ctx.device, IMAGE_METRIC, ctx.received_ns, float(len(payload)), Quality.GOOD, "B",
                           ctx.source, ctx.tags))

    def decode_text(self, text: str, ctx: Context, out: list[Reading], dead: DeadLetters) -> None:
        """Never used: frames are binary (see :meth:`decode`)."""
        raise NotImplementedError("ImageDecoder decodes bytes")
