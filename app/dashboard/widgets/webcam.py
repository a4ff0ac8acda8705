"""Webcam: the latest picture of one camera and when it was taken.

Frames come from the server's camera store (files on disk, fed by the
``image`` decoder). A refresh asks the store for the newest frame's time
(cheap: no file is read) and reads and sends the picture only when it is
newer than the one shown.
"""

from __future__ import annotations

import html

import panel as pn
import param

from app.cameras import check_camera
from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext, WidgetView, age_seconds
from app.i18n import fmt_age, fmt_time, t


class WebcamSpec(WidgetSpec):
    """The newest image of a camera, with its time."""

    spec_type = "webcam"
    label = "Webcam"

    camera = param.String(default="", doc="Camera name (the {device} of its image topic, e.g. dam-1-cam).")

    def validate(self) -> list[tuple[tuple, str]]:
        problems = super().validate()
        if not self.camera:
            problems.append((("camera",), "missing (required)"))
        else:
            try:
                check_camera(self.camera)
            except ValueError as exc:
                problems.append((("camera",), str(exc)))
        return problems

    def view(self, ctx: WidgetContext) -> WebcamView:
        """Return the live view."""
        return WebcamView(self, ctx)


class WebcamView(WidgetView):
    """Swaps the picture only when the store holds a newer frame."""

    spec: WebcamSpec

    def build(self) -> pn.viewable.Viewable:
        self.shown_ns: int | None = None
        self._caption = ""
        self.image = pn.pane.Image(None, sizing_mode="stretch_both", fixed_aspect=True, visible=False,
                                   css_classes=["vigie-webcam-image"])
        self.caption = pn.pane.HTML("", margin=(0, 8), css_classes=["vigie-webcam-time"])
        self.refresh()
        return pn.Column(self.image, self.caption, sizing_mode="stretch_both", margin=0)

    def _set_caption(self, text: str) -> None:
        if text != self._caption:
            self._caption = text
            self.caption.object = text

    def refresh(self) -> None:
        store = self.ctx.cameras
        if store is None:
            self._set_caption(f"<span class='vigie-note'>{t('No camera store configured', self.lang)}</span>")
            return
        try:
            latest = store.latest(self.spec.camera)
        except (ValueError, OSError):
            latest = None
        if latest is None:
            self._set_caption(f"<span class='vigie-note'>{t('No image yet', self.lang)}: "
                              f"{html.escape(self.spec.camera)}</span>")
            return
        if self.shown_ns is None or latest[0] > self.shown_ns:
            frame = store.read(self.spec.camera)
            if frame is not None and (self.shown_ns is None or frame[0] > self.shown_ns):
                self.shown_ns, data, _ctype = frame
                self.image.object = data
                self.image.visible = True
        if self.shown_ns is not None:
            self._set_caption(f"{t('Camera', self.lang)} {html.escape(self.spec.camera)} · "
                              f"{fmt_time(self.shown_ns, self.lang)} UTC "
                              f"({fmt_age(age_seconds(self.shown_ns), self.lang)})")
