"""The editors' forms (widgets, alarm rules): ``pn.Param`` over a spec, its field labels in the page's language.

A field's label is param's (``warn_above`` gives "Warn above", or the parameter's own ``label=``), in English;
:data:`FORM_LABELS` keeps them in the message catalog (tests/test_i18n.py fails when a form shows a label that
is neither here nor translated: add it here, run ``scripts/messages`` and translate it).
"""

from __future__ import annotations

from typing import Any

import param

from app.i18n import N_, t

FORM_LABELS = (
    N_("Alarm above"),
    N_("Alarm below"),
    N_("Camera"),
    N_("Colors"),
    N_("Columns"),
    N_("Deadband"),
    N_("Decimals"),
    N_("Devices"),
    N_("Direction"),
    N_("Display"),
    N_("Expression"),
    N_("Extreme severity"),
    N_("Fall"),
    N_("Gauge max"),
    N_("Gauge min"),
    N_("High (H)"),
    N_("High-high (HH)"),
    N_("Horizon s"),
    N_("Id"),
    N_("Label metric"),
    N_("Lat metric"),
    N_("Latched"),
    N_("Limit"),
    N_("Limits"),
    N_("Lon metric"),
    N_("Low (L)"),
    N_("Low-low (LL)"),
    N_("Max rows"),
    N_("Message"),
    N_("Min points"),
    N_("Mode"),
    N_("Name"),
    N_("Off delay s"),
    N_("On delay s"),
    N_("Policy"),
    N_("Rise"),
    N_("Series"),
    N_("Severity"),
    N_("Severity min"),
    N_("Show alarm limits"),
    N_("Site"),
    N_("Stale after s"),
    N_("Tags"),
    N_("Text"),
    N_("Text (French)"),
    N_("Tile attribution"),
    N_("Tile url"),
    N_("Timeout s"),
    N_("Title"),
    N_("Title (French)"),
    N_("Trail points"),
    N_("Trend points"),
    N_("Warn above"),
    N_("Warn below"),
    N_("Window"),
    N_("Window s"),
    N_("Y label"),
)

# The fields' choices that are words (a severity, a mode, a table's columns): shown translated, saved as they are.
FORM_CHOICES = (
    N_("tile"), N_("gauge"), N_("above"), N_("below"), N_("enabled"), N_("disabled"), N_("shadow"),
    N_("value"), N_("age"), N_("quality"), N_("time"),
)


def form_widgets(obj: param.Parameterized, params: list[str], lang: str,
                 widgets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return ``pn.Param``'s widget options with each field's label in ``lang``, and its choices (a severity,
    a mode) shown in ``lang`` while their values stay those of the YAML files."""
    widgets = dict(widgets or {})
    for name in params:
        p = obj.param[name]
        spec = widgets.get(name, {})
        spec = {"type": spec} if isinstance(spec, type) else dict(spec)
        spec["name"] = t(p.label, lang)
        objects = list(getattr(p, "objects", None) or [])
        if (lang != "en" and "options" not in spec and isinstance(p, param.Selector)
                and not isinstance(p, param.ListSelector) and objects
                and all(isinstance(o, str) for o in objects)):
            labels = {t(o, lang): o for o in objects}
            if len(labels) == len(objects):
                spec["options"] = labels
        widgets[name] = spec
    return widgets
