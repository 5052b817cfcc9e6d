"""Users and their API tokens. Tokens are random, shown once, and stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from doohable.store.db import get_engine
from doohable.store.models import Role, User

ROLE_RANK = {Role.voter.value: 0, Role.moderator.value: 1, Role.admin.value: 2}


class UserError(ValueError):
    """A user could not be created or found; the message says why."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(session: Session, name: str, role: str = "voter") -> tuple[User, str]:
    """Create a user; return it with its token (the only time the token is visible)."""
    if role not in ROLE_RANK:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLE_RANK)}")
    name = name.strip()
    if not name or len(name) > 100:
        raise UserError("a user name must have 1 to 100 characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise UserError(f"a user named {name!r} already exists")
    token = secrets.token_urlsafe(32)
    user = User(name=name, role=role, token_hash=hash_token(token))
    session.add(user)
    session.flush()
    return user, token


REVOKED = "!"  # token_hash prefix of a revoked user: no SHA-256 hex digest starts with it


def _named(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name.strip()))
    if user is None:
        raise UserError(f"no user named {name!r}")
    return user


def list_users(session: Session) -> list[User]:
    """Every user, oldest first."""
    return list(session.scalars(select(User).order_by(User.id)))


def is_revoked(user: User) -> bool:
    return user.token_hash.startswith(REVOKED)


def revoke_user(session: Session, name: str) -> User:
    """Make the user's token useless (votes and decisions stay); a new token brings them back."""
    user = _named(session, name)
    user.token_hash = REVOKED + secrets.token_hex(31)
    session.flush()
    return user


def new_token(session: Session, name: str) -> tuple[User, str]:
    """Give the user a new token; the old one stops working (shown only this once)."""
    user = _named(session, name)
    token = secrets.token_urlsafe(32)
    user.token_hash = hash_token(token)
    session.flush()
    return user, token


def user_for_token(session: Session, token: str) -> User | None:
    """The user holding ``token``, or None."""
    if not token:
        return None
    return session.scalar(select(User).where(User.token_hash == hash_token(token)))


#: how long an authenticated token stays cached in a server process: a deleted user or a
#: changed role takes effect on every process within this many seconds
TOKEN_CACHE_TTL_S = 5.0
TOKEN_CACHE_MAX = 10_000  # distinct tokens cached per cache (cleared when full)
_USERS = cast(Table, User.__table__)
_BY_HASH = select(_USERS.c.id, _USERS.c.name, _USERS.c.role, _USERS.c.slack_user_id).where(
    _USERS.c.token_hash == bindparam("h")
)


class TokenCache:
    """Valid tokens → their user's row, for :data:`TOKEN_CACHE_TTL_S` seconds, per database.

    Keyed by the token's SHA-256 (the raw token is not kept). Unknown tokens are never
    cached, so a user created a moment ago is let in at once. Thread-safe.
    """

    def __init__(self, ttl_s: float = TOKEN_CACHE_TTL_S, max_entries: int = TOKEN_CACHE_MAX) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._rows: dict[tuple[str, str], tuple[float, tuple[int, str, str, str | None]]] = {}
        self._lock = threading.Lock()

    def get(self, db_url: str, token: str) -> User | None:
        """A fresh (transient) :class:`User` for a cached valid token, else None (look it up)."""
        hit = self._rows.get((db_url, hash_token(token)))
        if hit is None or hit[0] <= time.monotonic():  # (a TTL of 0 caches nothing)
            return None
        return _user(hit[1])

    def lookup(self, db_url: str, token: str) -> User | None:
        """The token's user from the database (one indexed query), cached when valid. Blocking."""
        key = (db_url, hash_token(token))
        with get_engine(db_url).connect() as conn:
            row = conn.execute(_BY_HASH, {"h": key[1]}).first()
        if row is None:
            return None
        values = (int(row[0]), str(row[1]), str(row[2]), row[3])
        with self._lock:
            if len(self._rows) >= self.max_entries:
                self._rows.clear()
            self._rows[key] = (time.monotonic() + self.ttl_s, values)
        return _user(values)

    def clear(self) -> None:
        """Forget every cached token (tests; after deleting a user or changing a role)."""
        with self._lock:
            self._rows.clear()


def _user(values: tuple[int, str, str, str | None]) -> User:
    user_id, name, role, slack_user_id = values
    return User(id=user_id, name=name, role=role, slack_user_id=slack_user_id)


def has_role(user: User, role: str) -> bool:
    """True when ``user`` has ``role`` or a higher one (admin > moderator > voter)."""
    return ROLE_RANK.get(user.role, -1) >= ROLE_RANK[role]
