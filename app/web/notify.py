"""Notification endpoints: the acknowledgement link, the gateways' reply webhook, a policy's test, cascades.

``GET /ack/<token>`` needs no login: the signed token is the credential,
bound to alarms and a contact, expiring, usable once. The page says plainly
what happened, in the contact's language when the token says who they are.
"""

from __future__ import annotations

import hmac
import html
import json
from typing import TYPE_CHECKING, ClassVar

import tornado.web

from app.web.alarms import _AlarmHandler
from app.web.openapi import Op

if TYPE_CHECKING:
    from app.runtime import Runtime

PAGES = {
    "acknowledged": (200, "Alarme acquittée — Alarm acknowledged",
                     "{n} alarme(s) acquittée(s) au nom de {who} ; l'escalade est arrêtée pour tout le monde.",
                     "{n} alarm(s) acknowledged as {who}; the escalation is stopped for everyone."),
    "already": (200, "Déjà acquittée — Already acknowledged",
                "Ces alarmes étaient déjà acquittées ou terminées : il n'y a plus rien à faire.",
                "These alarms were already acknowledged or have ended: nothing left to do."),
    "forged": (400, "Lien invalide — Invalid link",
               "Ce lien n'est pas valide (modifié ou incomplet). Rien n'a été changé.",
               "This link is not valid (altered or incomplete). Nothing was changed."),
    "expired": (410, "Lien expiré — Link expired",
                "Ce lien a expiré. Rien n'a été changé : acquittez depuis la console Vigie.",
                "This link has expired. Nothing was changed: acknowledge from the Vigie console."),
    "reused": (409, "Lien déjà utilisé — Link already used",
               "Ce lien a déjà servi une fois. Rien n'a été changé.",
               "This link was already used once. Nothing was changed."),
}


class AckLinkHandler(tornado.web.RequestHandler):
    """``GET /ack/<token>``: acknowledge the alarms a signed link names, as the contact it names."""

    def initialize(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def get(self, token: str) -> None:
        outcome, who, ids = self.runtime.notifier.use_link(token)
        status, title, fr, en = PAGES[outcome]
        words = {"n": len(ids), "who": html.escape(who)}
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                    f"<h1 data-outcome='{outcome}'>{title}</h1><p lang='fr'>{fr.format(**words)}</p>"
                    f"<p lang='en'>{en.format(**words)}</p></body></html>")


class ReplyHandler(_AlarmHandler):
    """``POST /api/v1/notify/reply``: a gateway says a person answered (an SMS reply, a keypress).

    Bearer token from ``escalation.reply_token_env``. Body ``{"ack_token": "..."}`` (the token of the
    ``ack_url`` a voice call carried) or ``{"from": "+33...", "text": "OK"}`` (an SMS reply).
    """

    actions: ClassVar[dict[str, str]] = {"POST": "alarms:ack"}
    api: ClassVar[dict[str, Op]] = {"POST": Op(
        "A gateway says a person answered: {ack_token} (a voice call's link) or {from, text} (an SMS reply); "
        "with the gateway's own token (escalation.reply_token_env)", public=True, also=(401,),
        body={"type": "object", "properties": {"ack_token": {"type": "string"}, "from": {"type": "string"},
                                               "text": {"type": "string"}}})}

    def check_access(self) -> bool:
        """The gateway's own token (checked in :meth:`post`), not a user's: it acts for the contact who replied."""
        return True

    def post(self) -> None:
        expected = self.runtime.loaded.secret(self.runtime.loaded.config.escalation.reply_token_env)
        given = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            self.answer(401, {"error": "a valid gateway token is required"})
            return
        try:
            doc = json.loads(self.request.body or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.answer(400, {"error": "expected a JSON object"})
            return
        notifier = self.runtime.notifier
        if isinstance(doc.get("ack_token"), str):
            token = doc["ack_token"].rsplit("/ack/", 1)[-1]
            outcome, who, ids = notifier.use_link(token)
            self.answer(PAGES[outcome][0],
                        {"outcome": outcome, "contact": who, "acknowledged": ids})
            return
        if isinstance(doc.get("from"), str):
            who, ids = notifier.acknowledge_from_phone(doc["from"])
            self.answer(200 if who else 404, {"contact": who, "acknowledged": ids}
                        if who else {"error": "no contact has this phone number"})
            return
        self.answer(400, {"error": "give ack_token, or from (a phone number)"})


class PolicyTestHandler(_AlarmHandler):
    """``POST /api/v1/notify/policies/<name>/test``: send a test message to a policy's step 1."""

    actions: ClassVar[dict[str, str]] = {"POST": "notify:edit"}
    api: ClassVar[dict[str, Op]] = {"POST": Op("Send a test message to a policy's first step", ok=202,
                                               body={"type": "object"})}

    def post(self, name: str) -> None:
        if self.body() is None:
            return
        if name not in self.runtime.notifier.policies:
            self.answer(404, {"error": f"no escalation policy named {name!r}"})
            return
        self.answer(202, {"policy": name, "sent_to": self.runtime.notifier.send_test(name)})


class CascadesHandler(_AlarmHandler):
    """``GET /api/v1/notify/cascades``: escalations in progress (``?alarm_id=`` for one alarm's)."""

    api: ClassVar[dict[str, Op]] = {"GET": Op("Escalations in progress (?alarm_id= for one alarm's)")}

    def get(self) -> None:
        self.answer(200, {"cascades": self.runtime.notifier.cascade_view(self.get_argument("alarm_id", None))})
