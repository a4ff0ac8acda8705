"""Time axes formatted for the reader's language, in the server's time zone (``server.timezone``).

Bokeh's default datetime ticks are American ("Nov 25, 2026", month names in
English); a French control room reads ``25/11/2026`` and ``14h``. Ticks
stay numeric (no month names) so that both languages need no translated
calendar in the browser. Bokeh's own formatter draws UTC only; for any
other zone the ticks are formatted in the browser by ``Intl.DateTimeFormat``
(part of every browser, no script to fetch), with the zone's own offset
and summer time at each tick. The axis names the zone.
"""

from __future__ import annotations

from bokeh.models import CustomJSTickFormatter, DatetimeTickFormatter, Plot

_FORMATS = {
    "en": {"seconds": "%H:%M:%S", "minsec": "%H:%M:%S", "minutes": "%H:%M", "hourmin": "%H:%M",
           "hours": "%H:%M", "days": "%Y-%m-%d", "months": "%Y-%m", "years": "%Y", "context": "%Y-%m-%d"},
    "fr": {"seconds": "%H:%M:%S", "minsec": "%H:%M:%S", "minutes": "%H:%M", "hourmin": "%H:%M",
           "hours": "%Hh", "days": "%d/%m", "months": "%m/%Y", "years": "%Y", "context": "%d/%m/%Y"},
}

# The same choices as _FORMATS, by the spacing of the ticks; the first tick carries the date as context.
# Ticks a day or more apart sit on UTC midnights (Bokeh's ticker): their date is read in UTC, or a zone
# west of Greenwich would label 25 November "24/11". ``this`` is shared by one call's ticks: the
# formatters are built once per call, not per tick.
_ZONED_JS = """
const span = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 3600e3;
if (this.format === undefined) {
    const locale = lang === "fr" ? "fr-FR" : "en-CA";  // en-CA: ISO-like dates (2026-11-25), 24 h clock
    const zone = span < 86400e3 ? tz : "UTC";
    let opts;
    if (span < 60e3) opts = {hour: "2-digit", minute: "2-digit", second: "2-digit"};
    else if (span < 86400e3) opts = {hour: "2-digit", minute: "2-digit"};
    else if (span < 28 * 86400e3) opts = lang === "fr" ? {day: "2-digit", month: "2-digit"}
                                                      : {year: "numeric", month: "2-digit", day: "2-digit"};
    else if (span < 365 * 86400e3) opts = {year: "numeric", month: "2-digit"};
    else opts = {year: "numeric"};
    this.format = new Intl.DateTimeFormat(locale, {timeZone: zone, hourCycle: "h23", ...opts});
    this.date = new Intl.DateTimeFormat(locale, {timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit"});
}
const label = this.format.format(new Date(tick));
return index === 0 && span < 86400e3 ? label + "\\n" + this.date.format(new Date(tick)) : label;
"""


def time_formatter(lang: str, tz: str = "UTC") -> DatetimeTickFormatter | CustomJSTickFormatter:
    """Return a tick formatter for ``lang`` (English for any other) in time zone ``tz``, date as context."""
    if tz != "UTC":
        return CustomJSTickFormatter(args={"tz": tz, "lang": lang}, code=_ZONED_JS)
    formats = dict(_FORMATS.get(lang, _FORMATS["en"]))
    context = formats.pop("context")
    return DatetimeTickFormatter(**formats, context=context, context_which="start")


def localize_time_axis(figure: Plot, lang: str, tz: str = "UTC") -> None:
    """Format the x (time) axis of ``figure`` for ``lang`` in ``tz``, and name the zone on the axis."""
    for axis in figure.xaxis:
        axis.formatter = time_formatter(lang, tz)
        axis.axis_label = tz
        axis.axis_label_text_font_size = "8pt"
        axis.axis_label_text_font_style = "normal"
        axis.axis_label_standoff = 2
