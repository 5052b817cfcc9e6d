"""FastAPI dependencies shared by every router: settings, DB session, the calling user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from doohable.config import Settings, get_settings
from doohable.store.db import get_engine
from doohable.store.models import User
from doohable.store.users import has_role, user_for_token

_bearer = HTTPBearer(auto_error=False)

#: the largest id a database row can have (BIGINT / SQLite INTEGER); a larger one is a 422,
#: not a driver overflow (500)
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]


def settings_dep(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or get_settings()


def db_session(settings: Annotated[Settings, Depends(settings_dep)]) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    engine = get_engine(settings.resolved_database_url)
    with sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        yield session


# scope="function": commit before the response is sent, so a 201 means the row is stored
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_dep)]


def current_user(
    request: Request,
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user of the bearer token (API) or of the session cookie (pages); else 401."""
    token = creds.credentials if creds is not None else None
    if token is None and "session" in request.scope:
        token = request.session.get("token")
    user = user_for_token(session, token) if token else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


def require(role: str) -> Callable[[User], User]:
    """A dependency that lets ``role`` or higher through, else 403."""

    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not has_role(user, role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role")
        return user

    return check


UserDep = Annotated[User, Depends(current_user)]
VoterDep = Annotated[User, Depends(require("voter"))]
ModeratorDep = Annotated[User, Depends(require("moderator"))]
AdminDep = Annotated[User, Depends(require("admin"))]
