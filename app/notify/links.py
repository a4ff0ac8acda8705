"""Signed, expiring acknowledgement links: the signature is the credential.

A token is ``base64url(JSON payload) . base64url(HMAC-SHA256(secret, payload))``;
the payload binds the alarm ids, the contact, an expiry and a nonce. Single
use is kept by the notifier's store (the nonce, once used, is recorded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class AckClaim:
    """What a valid link says: acknowledge these alarms as this contact (until ``expires``)."""

    alarm_ids: tuple[str, ...]
    contact: str
    expires: float
    nonce: str


class LinkSigner:
    """Make and check acknowledgement tokens with one server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def make(self, alarm_ids: list[str], contact: str, expires: float) -> str:
        """Return a token for these alarms and this contact."""
        payload = json.dumps({"a": list(alarm_ids), "c": contact, "e": round(expires, 3),
                              "n": secrets.token_urlsafe(12)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def check(self, token: str, now: float) -> tuple[AckClaim | None, str]:
        """Return (claim, "") for a good token, or (None, why: forged / expired)."""
        try:
            body, sig = token.split(".", 1)
            payload = _unb64(body)
            good = hmac.compare_digest(_unb64(sig), self._sign(payload))
        except (ValueError, TypeError):
            return None, "forged"
        if not good:
            return None, "forged"
        try:
            doc = json.loads(payload)
            claim = AckClaim(tuple(doc["a"]), str(doc["c"]), float(doc["e"]), str(doc["n"]))
        except (ValueError, KeyError, TypeError):
            return None, "forged"
        if now >= claim.expires:
            return claim, "expired"
        return claim, ""

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()
