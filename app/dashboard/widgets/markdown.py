"""Markdown text: notes, instructions, contacts on a dashboard."""

from __future__ import annotations

import html

import panel as pn
import param

from app.dashboard.spec import WidgetSpec
from app.dashboard.view import WidgetContext, WidgetView
from app.i18n import N_


class MarkdownSpec(WidgetSpec):
    """Static text in Markdown."""

    spec_type = "markdown"
    label = N_("Text")

    text = param.String(default="", doc="Markdown text.")
    text_fr = param.String(default="", label="Text (French)", precedence=1,
                           doc="Markdown text in French (when empty, French pages show the text).")

    def view(self, ctx: WidgetContext) -> WidgetView:
        """Return the live view."""
        return MarkdownView(self, ctx)


class MarkdownView(WidgetView):
    """Renders the text; nothing to refresh."""

    def build(self) -> pn.viewable.Viewable:
        # Raw HTML in a layout file is shown as text, never run: no script reaches an embed.
        text = (self.lang == "fr" and self.spec.text_fr) or self.spec.text
        return pn.pane.Markdown(html.escape(text, quote=False), sizing_mode="stretch_both", disable_anchors=True)
