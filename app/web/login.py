"""``/login`` and ``/logout``: a plain HTML form, XSRF-checked, slowed down after repeated failures.

The form is a Tornado page, not a Panel one: it must answer before anybody
is logged in, and it needs none of Panel's scripts. A password is verified
with argon2 on a worker thread (tens of milliseconds of CPU, which the event
loop that runs ingest must not spend). After :data:`FREE_FAILURES` failed
attempts for one user name or from one address within :data:`WINDOW_S`,
each further attempt must wait twice as long as the one before (up to
:data:`MAX_WAIT_S`): guessing becomes hopeless, and the real user is only
delayed, never locked out for good. Every login, failure and logout is in
the audit log.
"""

from __future__ import annotations

import asyncio
import html
import time
import urllib.parse
from typing import TYPE_CHECKING

import tornado.web

from app.i18n import LANGUAGES, negotiate, t
from app.pages.language import COOKIE as LANG_COOKIE
from app.web.auth import COOKIE, WebAuth

if TYPE_CHECKING:
    from app.alarms.journal import Journal

FREE_FAILURES = 5
WINDOW_S = 900.0
MAX_WAIT_S = 300.0
MAX_FIELD = 1024


class LoginThrottle:
    """Failed attempts per user name and per address; how long the next attempt must wait."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures in the window, last failure time)

    def wait_s(self, *keys: str) -> float:
        """Return how many seconds the next attempt for any of ``keys`` must still wait (0: go ahead)."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if now - last > WINDOW_S:
                self._failures.pop(key, None)
                continue
            if count >= FREE_FAILURES:
                wait = max(wait, last + min(MAX_WAIT_S, 2.0 ** (count - FREE_FAILURES)) - now)
        return max(0.0, wait)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            self._failures[key] = (1 if now - last > WINDOW_S else count + 1, now)
        if len(self._failures) > 100_000:  # a spray of names: forget the oldest half
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:50_000]:
                del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


def local_next(value: str | None) -> str:
    """Return ``value`` when it is a path on this site (not ``//host``), else ``/``: no open redirect."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


PAGE = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>Vigie — {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0}}
header{{background:#0b3d5c;color:#fff;padding:.8em 1.2em;font-size:1.2em;font-weight:600}}
main{{max-width:22em;margin:3em auto;background:#fff;padding:1.5em 2em;border-radius:6px;box-shadow:0 1px 4px #0002}}
label{{display:block;margin:.8em 0 .2em}}
input[type=text],input[type=password]{{width:100%;padding:.5em;box-sizing:border-box}}
button{{margin-top:1.2em;padding:.55em 1.4em;background:#0b3d5c;color:#fff;border:0;border-radius:4px;font-size:1em}}
.note{{padding:.6em .8em;border-radius:4px;margin-bottom:1em}}.error{{background:#fdecea;color:#b71c1c}}
.info{{background:#e8f1f8;color:#0b3d5c}}</style></head><body><header>Vigie</header><main>
<h1 style="font-size:1.3em">{title}</h1>{note}
<form method="post" action="/login">{xsrf}<input type="hidden" name="next" value="{next}">
<label for="username">{user_label}</label><input type="text" id="username" name="username" value="{username}"
 autocomplete="username" autofocus required maxlength="200">
<label for="password">{password_label}</label><input type="password" id="password" name="password"
 autocomplete="current-password" required maxlength="1024">
<button type="submit" id="login">{button}</button></form>{sso}</main></body></html>"""
SSO = """<p style="margin-top:1.5em;border-top:1px solid #ddd;padding-top:1em"><a id="login-sso" href="{href}"
 style="display:inline-block;padding:.55em 1.4em;border:1px solid #0b3d5c;border-radius:4px;color:#0b3d5c;
 text-decoration:none">{label}</a></p>"""


class LoginHandler(tornado.web.RequestHandler):
    """``GET /login``: the form; ``POST /login``: check, start a session, go back to ``next``."""

    def initialize(self, auth: WebAuth, journal: Journal, throttle: LoginThrottle,
                   sso_label: str | None = None) -> None:
        self.auth = auth
        self.journal = journal
        self.throttle = throttle
        self.sso_label = sso_label  # set when single sign-on is configured (app.web.oidc)

    def lang(self) -> str:
        chosen = self.get_cookie(LANG_COOKIE)
        return negotiate(self.request.headers.get("Accept-Language"), chosen if chosen in LANGUAGES else None)

    def form(self, status: int, note: str = "", error: bool = False, username: str = "") -> None:
        lang = self.lang()
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        next_url = local_next(self.get_argument("next", "/")[:2000])
        sso = SSO.format(href=html.escape("/login/oidc?" + urllib.parse.urlencode({"next": next_url}), quote=True),
                         label=html.escape(self.sso_label)) if self.sso_label else ""
        box = f"<p class='note {'error' if error else 'info'}' id='login-note'>{html.escape(note)}</p>" if note else ""
        self.finish(PAGE.format(lang=lang, title=html.escape(t("Log in", lang)), note=box,
                                xsrf=self.xsrf_form_html(),
                                next=html.escape(next_url, quote=True), sso=sso,
                                user_label=html.escape(t("User name", lang)),
                                password_label=html.escape(t("Password", lang)),
                                username=html.escape(username[:200], quote=True),
                                button=html.escape(t("Log in", lang))))

    def get(self) -> None:
        lang = self.lang()
        note = ""
        if self.get_argument("bye", None) is not None:
            note = t("You are logged out.", lang)
        elif self.get_cookie(COOKIE) and self.auth.accounts.session_identity(self.auth.session_of(self)) is None:
            note = t("Your session has expired: please log in again.", lang)
        self.form(200, note)

    async def post(self) -> None:
        self.check_xsrf_cookie()
        lang = self.lang()
        name = self.get_body_argument("username", "")[:MAX_FIELD]
        password = self.get_body_argument("password", "")[:MAX_FIELD]
        ip = self.request.remote_ip or "?"
        keys = (f"user:{name}", f"ip:{ip}")
        wait = self.throttle.wait_s(*keys)
        if wait > 0:
            self.set_header("Retry-After", str(int(wait) + 1))
            self.journal.note("login_refused", user=name[:200], comment=f"from {ip}: too many failures, "
                              f"{wait:.0f} s to wait", category="audit")
            self.form(429, t("Too many failed attempts: wait {s} s and try again.", lang).format(s=int(wait) + 1),
                      error=True, username=name)
            return
        user = await asyncio.to_thread(self.auth.accounts.verify_password, name, password)
        if user is None:
            self.throttle.failed(*keys)
            self.journal.note("login_failed", user=name[:200], comment=f"from {ip}", category="audit")
            self.form(401, t("Wrong user name or password.", lang), error=True, username=name)
            return
        self.throttle.succeeded(*keys)
        self.auth.set_session_cookie(self, self.auth.accounts.start_session(user.name))
        self.journal.note("login", user=user.name, comment=f"from {ip} as {user.role.name}", category="audit")
        self.redirect(local_next(self.get_body_argument("next", "/")))


class LogoutHandler(tornado.web.RequestHandler):
    """``POST /logout`` (XSRF-checked): end the session, forget the cookie, back to the login page."""

    def initialize(self, auth: WebAuth, journal: Journal) -> None:
        self.auth = auth
        self.journal = journal

    def get(self) -> None:
        """The header's "Log out" link lands here: a one-button form, so that logging out is a POST."""
        lang = negotiate(self.request.headers.get("Accept-Language"), self.get_cookie(LANG_COOKIE))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        body = (f"<form method='post' action='/logout'>{self.xsrf_form_html()}"
                f"<button type='submit' id='logout'>{html.escape(t('Log out', lang))}</button></form>")
        self.finish(PAGE.split("<form", 1)[0].format(lang=lang, title=html.escape(t("Log out", lang)), note="")
                    + body + "</main></body></html>")

    def post(self) -> None:
        self.check_xsrf_cookie()
        session = self.auth.session_of(self)
        identity = self.auth.accounts.session_identity(session)
        self.auth.accounts.end_session(session)
        self.clear_cookie(COOKIE, path="/")
        if identity is not None:
            self.journal.note("logout", user=identity.name, comment=f"from {self.request.remote_ip}",
                              category="audit")
        self.redirect("/login?bye=1")
