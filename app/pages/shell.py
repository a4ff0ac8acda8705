"""The frame every page shares: template, navigation bar, language.

BootstrapTemplate is the one Panel template that asks no font server for
anything (FIELD-NOTES), so pages work in a control room with no internet.
The language comes from ``?lang=``, the switch's cookie (app/pages/language.py) or the browser's Accept-Language.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import panel as pn

from app.i18n import LANGUAGES, N_, negotiate, t
from app.pages.language import COOKIE
from app.refresh import every

if TYPE_CHECKING:
    from app.pages.services import PageServices
    from app.web.access import Identity

NAV = [("/", N_("Overview")), ("/dashboards", N_("Dashboards")), ("/alarms", N_("Alarms")),
       ("/history", N_("History")), ("/contacts", N_("Contacts")), ("/system", N_("System")), ("/access", N_("Access"))]

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


def user_html(identity: Identity | None, lang: str) -> str:
    """Return who is logged in, their role and a "Log out" link (or a "Log in" link for a visitor)."""
    style = "color:#cfe3f0;margin-left:1.2em;white-space:nowrap"
    if identity is None or identity.kind != "user":
        return f"<a href='/login' class='vigie-login' style='{style}'>{html.escape(t('Log in', lang))}</a>"
    role = identity.role.name if identity.role is not None else ""
    return (f"<span class='vigie-user' style='{style}'><b>{html.escape(identity.name)}</b> · "
            f"<span class='vigie-role'>{html.escape(t(role, lang))}</span> · "
            f"<a href='/logout' class='vigie-logout' style='color:#cfe3f0'>{html.escape(t('Log out', lang))}</a>"
            "</span>")


def page(services: PageServices, active: str, title: str, *body: pn.viewable.Viewable,
         lang: str | None = None, busy_indicator: bool = True,
         identity: Identity | None = None) -> pn.template.BootstrapTemplate:
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
    template.header.append(pn.pane.HTML(user_html(identity, lang), margin=0, align="center"))
    template.header.extend(AlarmBanner(services, lang).view())
    for item in body:
        template.main.append(item)
    return template


def _beep_wav() -> str:
    """Return a short two-tone beep as a WAV data URI (made here: nothing fetched, works offline)."""
    import base64
    import io
    import math
    import struct
    import wave

    rate, frames = 8000, []
    for i in range(int(rate * 0.5)):
        freq = 880 if i < rate * 0.25 else 660
        frames.append(struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * i / rate))))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(frames))
    return "data:audio/wav;base64," + base64.b64encode(out.getvalue()).decode()


BEEP = _beep_wav()


class AlarmBanner:
    """The count of unacknowledged alarms on every page, a link to the console, and an optional sound."""

    def __init__(self, services: PageServices, lang: str) -> None:
        self.engine = services.alarms
        self.lang = lang
        self.count = -1
        self.version = -1
        self.html = pn.pane.HTML("", margin=(0, 10), name="alarm-banner")
        self.sound = pn.widgets.Checkbox(label=t("Sound", lang), value=False, width=70, margin=(8, 0),
                                         styles={"color": "#fff"})
        self.refresh()
        every(self.refresh, 1000)

    def refresh(self) -> None:
        engine = self.engine
        if engine is None or engine.version == self.version:
            return
        self.version = engine.version
        count = engine.unacknowledged()
        louder = count > max(self.count, 0) and self.sound.value
        self.count = count
        if not count:
            self.html.object = "<span class='vigie-alarm-banner' data-count='0'></span>"
            return
        label = t("unacknowledged alarms", self.lang) if count > 1 else t("unacknowledged alarm", self.lang)
        audio = f"<audio autoplay src='{BEEP}'></audio>" if louder else ""
        self.html.object = (f"<a class='vigie-alarm-banner' data-count='{count}' href='/alarms' style='background:"
                            f"#c62828;color:#fff;padding:4px 10px;border-radius:4px;font-weight:700;"
                            f"text-decoration:none;white-space:nowrap'>⚠ {count} {html.escape(label)}</a>{audio}")

    def view(self) -> list[pn.viewable.Viewable]:
        return [self.html, self.sound]
