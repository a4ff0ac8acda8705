"""Time axes formatted for the reader's language, in UTC as every time Vigie shows.

Bokeh's default datetime ticks are American ("Nov 25, 2026", month names in
English); a French control room reads ``25/11/2026`` and ``14h``. Ticks
stay numeric (no month names) so that both languages need no translated
calendar in the browser. Bokeh draws datetimes in UTC; the axis says so.
"""

from __future__ import annotations

from bokeh.models import DatetimeTickFormatter, Plot

_FORMATS = {
    "en": {"seconds": "%H:%M:%S", "minsec": "%H:%M:%S", "minutes": "%H:%M", "hourmin": "%H:%M",
           "hours": "%H:%M", "days": "%Y-%m-%d", "months": "%Y-%m", "years": "%Y", "context": "%Y-%m-%d"},
    "fr": {"seconds": "%H:%M:%S", "minsec": "%H:%M:%S", "minutes": "%H:%M", "hourmin": "%H:%M",
           "hours": "%Hh", "days": "%d/%m", "months": "%m/%Y", "years": "%Y", "context": "%d/%m/%Y"},
}


def time_formatter(lang: str) -> DatetimeTickFormatter:
    """Return a tick formatter for ``lang`` (English for any other), with the date as context."""
    formats = dict(_FORMATS.get(lang, _FORMATS["en"]))
    context = formats.pop("context")
    return DatetimeTickFormatter(**formats, context=context, context_which="start")


def localize_time_axis(figure: Plot, lang: str) -> None:
    """Format the x (time) axis of ``figure`` for ``lang`` and label it UTC."""
    for axis in figure.xaxis:
        axis.formatter = time_formatter(lang)
        axis.axis_label = "UTC"
        axis.axis_label_text_font_size = "8pt"
        axis.axis_label_text_font_style = "normal"
        axis.axis_label_standoff = 2
