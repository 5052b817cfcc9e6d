"""Users and their API tokens. Tokens are random, shown once, and stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def user_for_token(session: Session, token: str) -> User | None:
    """The user holding ``token``, or None."""
    if not token:
        return None
    return session.scalar(select(User).where(User.token_hash == hash_token(token)))


def has_role(user: User, role: str) -> bool:
    """True when ``user`` has ``role`` or a higher one (admin > moderator > voter)."""
    return ROLE_RANK.get(user.role, -1) >= ROLE_RANK[role]
