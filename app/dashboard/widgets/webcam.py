"""Webcam: the latest picture of one camera and when it was taken.

Frames come from the server's camera store (files on disk, fed by the
``image`` decoder). A refresh asks the store for the newest frame's time
(cheap: no file is read) and reads and sends the picture only when it is
newer than the one shown.
"""

from __future__ import annotations

import base64
import html

import panel as pn
import param
from bokeh.models import Div

from app.cameras import check_camera
from app.dashboard.spec import WidgetSpec
from app.dashboard.view import LiveHTML, WidgetContext, WidgetView, age_seconds
from app.i18n import N_, fmt_age, fmt_time, t


class WebcamSpec(WidgetSpec):
    """The newest image of a camera, with its time."""

    spec_type = "webcam"
    label = N_("Webcam")

    camera = param.String(default="", doc="Camera name (the {device} of its image topic, e.g. dam-1-cam).")

    def device_patterns(self) -> list[str]:
        """Return the devices shown (their new readings wake the dashboard)."""
        return [self.camera] if self.camera else []

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
    """Swaps the picture only when the store holds a newer frame.

    With an ``image_url`` in the context (the server's pages), the picture is
    a URL the browser fetches over HTTP, cached by its time: a new
    frame costs each session one short text change instead of the whole
    image through its websocket. Without (a notebook), the frame is inlined.
    """

    spec: WebcamSpec

    def build(self) -> pn.viewable.Viewable:
        self.shown_ns: int | None = None
        self.src = ""  # what the picture shows: a URL, or a data: URI without a URL (a notebook)
        # The picture is the background of a box that fills the cell, scaled to fit it.
        self.image = Div(text="", visible=False, sizing_mode="stretch_both", css_classes=["vigie-webcam-image"],
                         styles={"background-size": "contain", "background-repeat": "no-repeat",
                                 "background-position": "center"})
        self.caption = LiveHTML(css_class="vigie-webcam-time", stretch="width", margin=(0, 8))
        self.refresh()
        return pn.Column(pn.pane.Bokeh(self.image, sizing_mode="stretch_both", margin=0), self.caption.panel,
                         sizing_mode="stretch_both", margin=0)

    def _show(self, src: str) -> None:
        self.src = src
        self.image.styles = {**self.image.styles, "background-image": f"url('{src}')"}
        self.image.visible = True

    def refresh(self) -> None:
        store = self.ctx.cameras
        if store is None:
            self.caption.object = f"<span class='vigie-note'>{t('No camera store configured', self.lang)}</span>"
            return
        try:
            latest = store.latest(self.spec.camera)
        except (ValueError, OSError):
            latest = None
        if latest is None:
            self.caption.object = (f"<span class='vigie-note'>{t('No image yet', self.lang)}: "
                                   f"{html.escape(self.spec.camera)}</span>")
            return
        if self.shown_ns is None or latest[0] > self.shown_ns:
            image_url = self.ctx.image_url
            if image_url is not None:
                self.shown_ns = latest[0]
                self._show(image_url(self.spec.camera, latest[0]))
            else:
                frame = store.read(self.spec.camera)
                if frame is not None and (self.shown_ns is None or frame[0] > self.shown_ns):
                    self.shown_ns, data, ctype = frame
                    self._show(f"data:{ctype};base64,{base64.b64encode(data).decode()}")
        if self.shown_ns is not None:
            self.caption.object = (f"{t('Camera', self.lang)} {html.escape(self.spec.camera)} · "
                                   f"{fmt_time(self.shown_ns, self.lang, self.ctx.tz)} {self.ctx.tz} "
                                   f"({fmt_age(age_seconds(self.shown_ns), self.lang)})")
