"""Users, login sessions, API tokens and embed links: who exists, kept on disk, checked in memory.

One SQLite file (``server.access_file``, under the data root) holds four
small tables; the whole of it is read into memory at open, so checking a
cookie, a token or an embed link on every request is a dictionary lookup,
and each change is written through at once (changes are rare: a login, a
token created). Calls come from the event loop and from worker threads
(password hashing), so every method holds one lock.

What is kept is never enough to act: passwords as argon2 hashes
(argon2-cffi), session ids and API tokens as SHA-256 digests (both are 256
random bits, so a fast digest is enough: there is nothing to guess), embed
links as a row whose id the link carries signed (itsdangerous).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import itsdangerous

from app.model import name_problem
from app.web.access import SCOPES, Identity, Role, scope_problem

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
  created_ns INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, user TEXT NOT NULL, created_ns INTEGER NOT NULL,
  expires_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, user TEXT NOT NULL, label TEXT NOT NULL,
  digest TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, expires_ns INTEGER, created_ns INTEGER NOT NULL,
  revoked_ns INTEGER);
CREATE TABLE IF NOT EXISTS embeds (id TEXT PRIMARY KEY, layout TEXT NOT NULL, widget TEXT, label TEXT NOT NULL,
  expires_ns INTEGER NOT NULL, created_ns INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_ns INTEGER);
"""
MIN_PASSWORD = 10
TOKEN_PREFIX = "vgt_"
_hasher = argon2.PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so a wrong name and a wrong password take as long.

    Made at the first login attempt, not at import: one argon2 hash is 0.3-0.9 s of every start-up otherwise.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> int:
    return time.time_ns()


EXTERNAL_PREFIX = "!external:"  # the hash column of a user who logs in through an identity provider


class AccountError(ValueError):
    """A change that cannot be made (unknown user, weak password, bad scope): the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_ns: int
    disabled: bool = False

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.name, "created_ns": self.created_ns, "disabled": self.disabled}


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    label: str
    scopes: tuple[str, ...]
    expires_ns: int | None
    created_ns: int
    revoked_ns: int | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "label": self.label, "scopes": list(self.scopes),
                "expires_ns": self.expires_ns, "created_ns": self.created_ns, "revoked_ns": self.revoked_ns}


@dataclass(frozen=True)
class EmbedLink:
    id: str
    layout: str
    widget: str | None
    label: str
    expires_ns: int
    created_ns: int
    created_by: str
    revoked_ns: int | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "layout": self.layout, "widget": self.widget, "label": self.label,
                "expires_ns": self.expires_ns, "created_ns": self.created_ns, "created_by": self.created_by,
                "revoked_ns": self.revoked_ns}


def password_problem(password: str) -> str | None:
    """Return why a password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "a password may not be longer than 1,024 characters"
    return None


class AccountStore:
    """The users, sessions, tokens and embed links of one server (see the module docstring)."""

    def __init__(self, path: Path, secret: bytes, *, session_s: float = 12 * 3600) -> None:
        self.path = Path(path)
        self.session_ns = int(session_s * 1e9)
        self._embed_signer = itsdangerous.URLSafeSerializer(secret, salt="vigie-embed")
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self.users: dict[str, tuple[User, str]] = {}  # name -> (user, argon2 hash)
        self._sessions: dict[str, tuple[str, int]] = {}  # digest -> (user, expires_ns)
        self._tokens: dict[str, Token] = {}  # digest -> token
        self.embeds: dict[str, EmbedLink] = {}

    # -- life ------------------------------------------------------------------------------------------
    def open(self) -> AccountStore:
        """Open (creating) the file and read it into memory."""
        with self._lock:
            if self._con is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            con.executescript(_SCHEMA)
            self.path.chmod(0o600)
            self._con = con
            for name, role, hash_, created, disabled in con.execute("SELECT * FROM users"):
                self.users[name] = (User(name, Role.parse(role), created, bool(disabled)), hash_)
            now = _now()
            con.execute("DELETE FROM sessions WHERE expires_ns < ?", (now,))
            for digest, user, _created, expires in con.execute("SELECT * FROM sessions"):
                self._sessions[digest] = (user, expires)
            for id_, user, label, digest, scopes, expires, created, revoked in con.execute("SELECT * FROM tokens"):
                self._tokens[digest] = Token(id_, user, label, tuple(json.loads(scopes)), expires, created, revoked)
            for row in con.execute("SELECT * FROM embeds"):
                self.embeds[row[0]] = EmbedLink(*row)
        return self

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            self.open()
        assert self._con is not None
        return self._con

    # -- users -----------------------------------------------------------------------------------------
    def user_list(self) -> list[User]:
        with self._lock:
            return sorted((u for u, _ in self.users.values()), key=lambda u: u.name)

    def add_user(self, name: str, role: Role | str, password: str) -> User:
        """Create a user; raise AccountError when the name is taken or invalid or the password too weak."""
        role = Role.parse(role) if isinstance(role, str) else role
        problem = name_problem(name, "user name") or password_problem(password)
        if problem:
            raise AccountError(problem)
        hash_ = _hasher.hash(password)
        with self._lock:
            if name in self.users:
                raise AccountError(f"a user named {name!r} already exists")
            user = User(name, role, _now())
            self._db().execute("INSERT INTO users VALUES (?, ?, ?, ?, 0)", (name, role.name, hash_, user.created_ns))
            self.users[name] = (user, hash_)
        return user

    def external_login(self, name: str, role: Role, issuer: str) -> User:
        """Return the user an identity provider vouched for, created or given their current role.

        Their row has no password (a marker no password matches), so they can only log in through the
        provider. A local account of the same name is never taken over: that is refused.
        """
        problem = name_problem(name, "user name")
        if problem:
            raise AccountError(problem)
        marker = f"{EXTERNAL_PREFIX}{issuer}"
        with self._lock:
            entry = self.users.get(name)
            if entry is None:
                user = User(name, role, _now())
                self._db().execute("INSERT INTO users VALUES (?, ?, ?, ?, 0)", (name, role.name, marker,
                                                                                user.created_ns))
                self.users[name] = (user, marker)
                return user
            user, hash_ = entry
            if hash_ != marker:
                raise AccountError(f"a local account named {name!r} exists: an administrator must rename or "
                                   "delete it before single sign-on can use that name")
            if user.disabled:
                raise AccountError(f"the account {name!r} is disabled in Vigie")
            if user.role is not role:
                self._db().execute("UPDATE users SET role = ? WHERE name = ?", (role.name, name))
                user = User(name, role, user.created_ns, user.disabled)
                self.users[name] = (user, hash_)
            return user

    def _known(self, name: str) -> tuple[User, str]:
        try:
            return self.users[name]
        except KeyError:
            raise AccountError(f"no user named {name!r}") from None

    def set_role(self, name: str, role: Role | str) -> User:
        role = Role.parse(role) if isinstance(role, str) else role
        with self._lock:
            user, hash_ = self._known(name)
            if user.role is Role.admin and role is not Role.admin and self._admins() == 1:
                raise AccountError(f"{name!r} is the last admin: make another admin first")
            self._db().execute("UPDATE users SET role = ? WHERE name = ?", (role.name, name))
            self.users[name] = (User(name, role, user.created_ns, user.disabled), hash_)
            return self.users[name][0]

    def set_disabled(self, name: str, disabled: bool) -> User:
        with self._lock:
            user, hash_ = self._known(name)
            if disabled and user.role is Role.admin and self._admins() == 1:
                raise AccountError(f"{name!r} is the last admin: make another admin first")
            self._db().execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
            self.users[name] = (User(name, user.role, user.created_ns, disabled), hash_)
            if disabled:
                self._end_sessions_of(name)
            return self.users[name][0]

    def set_password(self, name: str, password: str) -> None:
        """Change a password; every open session of the user ends."""
        problem = password_problem(password)
        if problem:
            raise AccountError(problem)
        hash_ = _hasher.hash(password)
        with self._lock:
            user, _ = self._known(name)
            self._db().execute("UPDATE users SET hash = ? WHERE name = ?", (hash_, name))
            self.users[name] = (user, hash_)
            self._end_sessions_of(name)

    def delete_user(self, name: str) -> None:
        """Remove a user with their sessions and tokens."""
        with self._lock:
            user, _ = self._known(name)
            if user.role is Role.admin and self._admins() == 1:
                raise AccountError(f"{name!r} is the last admin: make another admin first")
            db = self._db()
            db.execute("DELETE FROM users WHERE name = ?", (name,))
            db.execute("DELETE FROM tokens WHERE user = ?", (name,))
            del self.users[name]
            self._end_sessions_of(name)
            self._tokens = {d: t for d, t in self._tokens.items() if t.user != name}

    def _admins(self) -> int:
        return sum(1 for u, _ in self.users.values() if u.role is Role.admin and not u.disabled)

    def verify_password(self, name: str, password: str) -> User | None:
        """Return the user when the password is theirs (slow on purpose: run it off the event loop)."""
        with self._lock:
            entry = self.users.get(name)
        try:
            _hasher.verify(entry[1] if entry else _dummy_hash(), password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        if entry is None or entry[0].disabled:
            return None
        if _hasher.check_needs_rehash(entry[1]):
            with self._lock:
                rehashed = _hasher.hash(password)
                self._db().execute("UPDATE users SET hash = ? WHERE name = ?", (rehashed, name))
                self.users[name] = (entry[0], rehashed)
        return entry[0]

    def identity_of_user(self, name: str) -> Identity | None:
        with self._lock:
            entry = self.users.get(name)
        if entry is None or entry[0].disabled:
            return None
        return Identity(name, entry[0].role)

    # -- sessions --------------------------------------------------------------------------------------
    def start_session(self, user: str) -> str:
        """Return a new session id for ``user`` (what the cookie carries)."""
        session = secrets.token_urlsafe(32)
        now = _now()
        with self._lock:
            self._known(user)
            expires = now + self.session_ns
            self._db().execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_digest(session), user, now, expires))
            self._sessions[_digest(session)] = (user, expires)
        return session

    def session_identity(self, session: str | None) -> Identity | None:
        """Return who a session id belongs to, or None (unknown, ended, expired, user disabled or gone).

        Sessions slide: one used in the second half of its life is extended, so an operator who keeps the
        console open stays logged in, and one idle longer than ``session_s`` is not.
        """
        if not session:
            return None
        digest = _digest(session)
        with self._lock:
            entry = self._sessions.get(digest)
            if entry is None:
                return None
            user, expires = entry
            now = _now()
            if expires < now:
                self._sessions.pop(digest, None)
                self._db().execute("DELETE FROM sessions WHERE digest = ?", (digest,))
                return None
            if expires - now < self.session_ns // 2:
                expires = now + self.session_ns
                self._sessions[digest] = (user, expires)
                self._db().execute("UPDATE sessions SET expires_ns = ? WHERE digest = ?", (expires, digest))
        return self.identity_of_user(user)

    def end_session(self, session: str | None) -> None:
        if not session:
            return
        with self._lock:
            if self._sessions.pop(_digest(session), None) is not None:
                self._db().execute("DELETE FROM sessions WHERE digest = ?", (_digest(session),))

    def _end_sessions_of(self, user: str) -> None:
        self._db().execute("DELETE FROM sessions WHERE user = ?", (user,))
        self._sessions = {d: e for d, e in self._sessions.items() if e[0] != user}

    # -- API tokens ------------------------------------------------------------------------------------
    def create_token(self, user: str, label: str, scopes: list[str],
                     expires_ns: int | None = None) -> tuple[Token, str]:
        """Create a token; return it and its secret text (shown once: only its digest is kept)."""
        problem = scope_problem(scopes) or name_problem(label, "token label")
        if problem:
            raise AccountError(problem)
        if expires_ns is not None and expires_ns <= _now():
            raise AccountError("a token's expiry must be in the future")
        id_ = secrets.token_hex(6)
        text = f"{TOKEN_PREFIX}{id_}_{secrets.token_urlsafe(32)}"
        with self._lock:
            self._known(user)
            token = Token(id_, user, label, tuple(dict.fromkeys(scopes)), expires_ns, _now())
            self._db().execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                               (id_, user, label, _digest(text), json.dumps(list(token.scopes)), expires_ns,
                                token.created_ns))
            self._tokens[_digest(text)] = token
        return token, text

    def token_list(self, user: str | None = None) -> list[Token]:
        with self._lock:
            return sorted((t for t in self._tokens.values() if user is None or t.user == user),
                          key=lambda t: t.created_ns)

    def token(self, id_: str) -> Token | None:
        with self._lock:
            return next((t for t in self._tokens.values() if t.id == id_), None)

    def revoke_token(self, id_: str) -> Token:
        with self._lock:
            for digest, token in self._tokens.items():
                if token.id == id_:
                    revoked = Token(*(getattr(token, f) for f in ("id", "user", "label", "scopes", "expires_ns",
                                                                  "created_ns")), revoked_ns=_now())
                    self._db().execute("UPDATE tokens SET revoked_ns = ? WHERE id = ?", (revoked.revoked_ns, id_))
                    self._tokens[digest] = revoked
                    return revoked
        raise AccountError(f"no token {id_!r}")

    def token_identity(self, text: str | None) -> Identity | None:
        """Return who an API token acts for (its owner's role, narrowed to its scopes), or None."""
        if not text or not text.startswith(TOKEN_PREFIX):
            return None
        with self._lock:
            token = self._tokens.get(_digest(text))
        if token is None or token.revoked_ns is not None or (token.expires_ns and token.expires_ns < _now()):
            return None
        owner = self.identity_of_user(token.user)
        if owner is None:
            return None
        return Identity(token.user, owner.role, kind="token", scopes=frozenset(token.scopes))

    # -- embed links -----------------------------------------------------------------------------------
    def create_embed(self, layout: str, widget: str | None, *, days: float, created_by: str,
                     label: str = "") -> tuple[EmbedLink, str]:
        """Create a read-only embed link; return it and its signed token (what the portal's iframe URL carries)."""
        if not 0 < days <= 3660:
            raise AccountError("an embed link lasts between a moment and ten years (days: 0 < days <= 3660)")
        link = EmbedLink(secrets.token_hex(8), layout, widget or None, label[:200], _now() + int(days * 86400e9),
                         _now(), created_by)
        with self._lock:
            self._db().execute("INSERT INTO embeds VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                               (link.id, link.layout, link.widget, link.label, link.expires_ns, link.created_ns,
                                link.created_by))
            self.embeds[link.id] = link
        return link, self._embed_signer.dumps(link.id)

    def embed_token(self, link: EmbedLink) -> str:
        return self._embed_signer.dumps(link.id)

    def revoke_embed(self, id_: str) -> EmbedLink:
        with self._lock:
            link = self.embeds.get(id_)
            if link is None:
                raise AccountError(f"no embed link {id_!r}")
            revoked = EmbedLink(link.id, link.layout, link.widget, link.label, link.expires_ns, link.created_ns,
                                link.created_by, _now())
            self._db().execute("UPDATE embeds SET revoked_ns = ? WHERE id = ?", (revoked.revoked_ns, id_))
            self.embeds[id_] = revoked
            return revoked

    def embed_link(self, token: str | None) -> EmbedLink | None:
        """Return the live embed link a token names, or None (forged, revoked, expired)."""
        if not token:
            return None
        try:
            id_ = self._embed_signer.loads(token)
        except itsdangerous.BadData:
            return None
        with self._lock:
            link = self.embeds.get(id_) if isinstance(id_, str) else None
        if link is None or link.revoked_ns is not None or link.expires_ns < _now():
            return None
        return link

    def embed_identity(self, token: str | None, layout: str | None, widget: str | None) -> Identity | None:
        """Return the identity of an embed page for ``layout``/``widget`` when the token grants exactly that."""
        link = self.embed_link(token)
        if link is None or link.layout != layout or (link.widget is not None and link.widget != widget):
            return None
        return Identity(f"embed {link.id}", None, kind="embed", layout=link.layout, widget=link.widget,
                        actions=frozenset({"view"}))

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"users": len(self.users), "sessions": len(self._sessions),
                    "tokens": sum(1 for t in self._tokens.values() if t.revoked_ns is None),
                    "embeds": sum(1 for e in self.embeds.values() if e.revoked_ns is None)}


__all__ = ["SCOPES", "AccountError", "AccountStore", "EmbedLink", "Token", "User", "password_problem"]
