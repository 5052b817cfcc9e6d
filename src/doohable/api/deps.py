"""FastAPI dependencies shared by every router: the app's services, settings, DB session, the
calling user.

Every dependency reaches the app's :class:`~doohable.services.Services` (built by
``create_app``, kept on ``app.state.services``): nothing here keeps state of its own, so two
apps in one process share no database, blob store, scorer or token cache.

Everything here that does no I/O is ``async def`` so that FastAPI runs it on the event loop
instead of handing it to a worker thread (a thread hop costs more than the work itself).
Blocking database work goes to the thread pool explicitly: once per request for
:func:`in_transaction`, once for the commit of :data:`SessionDep`, and for the token lookup
only on a cache miss (:class:`doohable.store.users.TokenCache`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

import anyio
from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from doohable.batch import ScorerLike
from doohable.config import Settings
from doohable.services import NO_MODEL_ERRORS, Services
from doohable.store.models import User
from doohable.store.users import has_role

_bearer = HTTPBearer(auto_error=False)
P = ParamSpec("P")
T = TypeVar("T")

#: the largest id a database row can have (BIGINT / SQLite INTEGER); a larger one is a 422,
#: not a driver overflow (500)
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]


def app_services(request: Request) -> Services:
    """The services ``create_app`` built for the app serving ``request``."""
    services: Services = request.app.state.services
    return services


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return app_services(request).settings


async def services_dep(request: Request) -> Services:
    return app_services(request)


async def settings_dep(request: Request) -> Settings:
    return app_settings(request)


ServicesDep = Annotated[Services, Depends(services_dep)]
SettingsDep = Annotated[Settings, Depends(settings_dep)]


def _sessions(services: Services) -> sessionmaker[Session]:
    return services.sessions


def _commit(session: Session) -> None:
    with session:
        session.commit()


async def db_session(services: ServicesDep) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.

    The session connects lazily (on its first statement, in the route's worker thread); the
    commit runs in the thread pool, shielded so that a cancelled request still closes it.
    Building the session factory the first time may migrate the schema: a worker thread too."""
    factory = services.sessions if services.sessions_ready else await run_in_threadpool(_sessions, services)
    session = factory()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(session.close)  # rolls back
        raise
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(_commit, session)


# scope="function": commit before the response is sent, so a 201 means the row is stored
SessionDep = Annotated[Session, Depends(db_session, scope="function")]


async def in_transaction(
    services: Services, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``fn(session, *args, **kwargs)`` in one transaction on a worker thread and commit
    it before returning (one thread hop in all): the hot routes' alternative to SessionDep."""

    def work() -> T:
        with services.sessions.begin() as session:
            return fn(session, *args, **kwargs)

    return await run_in_threadpool(work)


BearerCreds = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authenticate(request: Request, token: str | None) -> User | None:
    """The user holding ``token``, or None: the one token check of every route and page.

    Valid tokens are cached for a few seconds in the app's services (see
    :data:`doohable.store.users.TOKEN_CACHE_TTL_S`); a miss is one indexed query."""
    if not token:
        return None
    services = app_services(request)
    tokens, db_url = services.tokens, services.database_url
    return tokens.get(db_url, token) or await run_in_threadpool(tokens.lookup, db_url, token)


async def _authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> User:
    """The user of the bearer token (API) or of the session cookie (pages); else 401."""
    token = creds.credentials if creds is not None else None
    if token is None and "session" in request.scope:
        token = request.session.get("token")
    user = await authenticate(request, token)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


async def current_user(request: Request, creds: BearerCreds) -> User:
    """The calling user, any role (401 without a valid token)."""
    return await _authenticate(request, creds)


def require(role: str) -> Callable[[Request, HTTPAuthorizationCredentials | None], Coroutine[Any, Any, User]]:
    """A dependency that lets ``role`` or higher through, else 403 (401 without a valid token).

    One dependency, not a chain: FastAPI's per-dependency overhead is a visible share of a vote."""

    async def check(request: Request, creds: BearerCreds) -> User:
        user = await _authenticate(request, creds)
        if not has_role(user, role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role")
        return user

    return check


UserDep = Annotated[User, Depends(current_user)]
VoterDep = Annotated[User, Depends(require("voter"))]
ModeratorDep = Annotated[User, Depends(require("moderator"))]
AdminDep = Annotated[User, Depends(require("admin"))]


async def page_user(request: Request) -> User | None:
    """The user signed in by the session cookie, or None (the pages decide what to show)."""
    return await authenticate(request, request.session.get("token"))


PageUser = Annotated[User | None, Depends(page_user)]


def absolute_url(request: Request, path: str) -> str:
    """``path`` made absolute against the URL the client used to reach us."""
    return str(request.base_url).rstrip("/") + path


def scorer_or_503(services: Services) -> ScorerLike:
    """The app's scorer, else 503 (no model can be loaded). Call it once the request is known
    to be well formed: a malformed request gets its 4xx even on a server without a model."""
    try:
        return services.scorer()
    except NO_MODEL_ERRORS as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no scoring model: {e}") from e


def blobs_dep(services: ServicesDep) -> Any:
    """The app's blob store (a worker thread: opening it the first time may do I/O)."""
    return services.blobs


BlobsDep = Annotated[Any, Depends(blobs_dep)]
