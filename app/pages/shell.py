"""The frame every page shares: template, navigation bar, language.

BootstrapTemplate is the one Panel template that asks no font server for
anything (FIELD-NOTES), so pages work in a control room with no internet.
The language comes from ``?lang=``, the switch's cookie (app/pages/language.py) or the browser's Accept-Language.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import panel as pn

from app.i18n import LANGUAGES, negotiate, t
from app.pages.language import COOKIE

if TYPE_CHECKING:
    from app.runtime import Runtime

NAV = [("/", "Overview"), ("/dashboards", "Dashboards"), ("/history", "History"), ("/system", "System")]

# Only for what the template itself renders: Panel panes live in shadow roots this stylesheet does not
# reach, so widgets, tiles and notes carry their styles inline (app/dashboard/view.py, pages/overview.py).
CSS = """
.vigie-nav a { color: #fff; margin-right: 1.2em; text-decoration: none; font-weight: 500; }
.vigie-nav a.active { border-bottom: 2px solid #fff; }
.vigie-lang a { color: #cfe3f0; margin-left: .6em; font-size: .9em; }
"""


def session_arg(name: str) -> str | None:
    """Return a query argument of the current session."""
    args = pn.state.session_args or {}
    values = args.get(name)
    if not values:
        return None
    raw = values[0]
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def session_lang() -> str:
    """Return the session's language: ``?lang=``, else the switch's cookie, else the browser's."""
    headers = pn.state.headers or {}
    arg = session_arg("lang")
    chosen = arg if arg in LANGUAGES else (pn.state.cookies or {}).get(COOKIE)
    return negotiate(headers.get("Accept-Language"), chosen)


def nav_html(active: str, lang: str) -> str:
    """Return the navigation bar and the language switch."""
    links = "".join(
        f"<a href='{href}' class='{'active' if href == active else ''}' style='color:#fff;margin-right:1.4em;"
        f"text-decoration:none;font-weight:{700 if href == active else 400};font-size:1.05em'>"
        f"{html.escape(t(label, lang))}</a>"
        for href, label in NAV
    )
    switch = "".join(
        f"<a href='/lang/{code}' hreflang='{code}' class='vigie-lang-{code}' "
        f"style='color:#cfe3f0;margin-left:1em'>{code.upper()}</a>"
        for code in ("fr", "en") if code != lang
    )
    return (f"<nav class='vigie-nav' lang='{lang}' style='display:flex;align-items:center'>{links}"
            f"<span class='vigie-lang'>{switch}</span></nav>")


class VigieTemplate(pn.template.BootstrapTemplate):
    """BootstrapTemplate whose header shows the title as text.

    Panel's Jinja templates insert ``app_title`` (the header) and
    ``meta_name`` unescaped, while ``<title>`` is escaped: a layout titled
    ``<img src=x onerror=...>`` ran in every viewer's browser. Both are
    escaped here, once, and the document title stays the plain text.
    """

    def _update_vars(self, *args) -> None:
        super()._update_vars(*args)
        self._render_variables["app_title"] = html.escape(self.title)
        self._render_variables["meta_name"] = html.escape(self.title)


def page(runtime: Runtime, active: str, title: str, *body: pn.viewable.Viewable,
         lang: str | None = None, busy_indicator: bool = True) -> pn.template.BootstrapTemplate:
    """Wrap page content in the shared template.

    ``busy_indicator=False`` for pages many people keep open (dashboards):
    Panel sets the busy indicator of *every* open page whenever any session
    runs a callback, so N open dashboards made every click cost N updates.
    """
    lang = lang or session_lang()
    extra = {} if busy_indicator else {"busy_indicator": None}
    template = VigieTemplate(
        title=f"Vigie · {title}", header_background="#0b3d5c", collapsed_sidebar=True,
        raw_css=[CSS], **extra,
    )
    template.header.append(pn.pane.HTML(nav_html(active, lang), sizing_mode="stretch_width", margin=0))
    for item in body:
        template.main.append(item)
    return template
