"""FastAPI dependencies shared by every router: settings, DB session, the calling user.

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

from doohable.batch import ScorerLike, cached_scorer
from doohable.config import Settings, get_settings
from doohable.store.db import get_engine
from doohable.store.models import User
from doohable.store.users import has_role, token_cache

_bearer = HTTPBearer(auto_error=False)
P = ParamSpec("P")
T = TypeVar("T")

#: the largest id a database row can have (BIGINT / SQLite INTEGER); a larger one is a 422,
#: not a driver overflow (500)
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (else the environment's)."""
    return getattr(request.app.state, "settings", None) or get_settings()


async def settings_dep(request: Request) -> Settings:
    return app_settings(request)


SettingsDep = Annotated[Settings, Depends(settings_dep)]


_factories: dict[str, sessionmaker[Session]] = {}


def _factory(db_url: str) -> sessionmaker[Session]:
    """The session factory of a database; blocking the first time (the engine may migrate)."""
    factory = _factories.get(db_url)
    if factory is None:
        factory = _factories[db_url] = sessionmaker(get_engine(db_url), expire_on_commit=False)
    return factory


def _commit(session: Session) -> None:
    with session:
        session.commit()


async def db_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.

    The session connects lazily (on its first statement, in the route's worker thread); the
    commit runs in the thread pool, shielded so that a cancelled request still closes it."""
    url = settings.resolved_database_url
    factory = _factories.get(url)
    if factory is None:
        factory = await run_in_threadpool(_factory, url)
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
    settings: Settings, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``fn(session, *args, **kwargs)`` in one transaction on a worker thread and commit
    it before returning (one thread hop in all): the hot routes' alternative to SessionDep."""

    def work() -> T:
        with _factory(settings.resolved_database_url).begin() as session:
            return fn(session, *args, **kwargs)

    return await run_in_threadpool(work)


BearerCreds = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authenticate(request: Request, token: str | None) -> User | None:
    """The user holding ``token``, or None: the one token check of every route and page.

    Valid tokens are cached for a few seconds per process (see
    :data:`doohable.store.users.TOKEN_CACHE_TTL_S`); a miss is one indexed query."""
    if not token:
        return None
    db_url = app_settings(request).resolved_database_url
    return token_cache.get(db_url, token) or await run_in_threadpool(token_cache.lookup, db_url, token)


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


_blobs: dict[str, Any] = {}


def blob_store(settings: Settings) -> Any:
    """The process-wide blob store for the settings' blob URL."""
    from doohable.store.blobs import open_blobs

    url = settings.resolved_blob_url
    if url not in _blobs:
        _blobs[url] = open_blobs(url)
    return _blobs[url]


def scorer_for(settings: Settings) -> ScorerLike:
    """The app's scorer (503 when no model can be loaded)."""
    try:
        return cached_scorer(settings.model, settings.threads)
    except (FileNotFoundError, ValueError) as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no scoring model: {e}") from e


def blobs_dep(settings: SettingsDep) -> Any:
    return blob_store(settings)


async def scorer_dep(settings: SettingsDep) -> ScorerLike:
    """The scorer the app loaded at start-up (a cache hit: no thread hop), else 503."""
    return scorer_for(settings)


BlobsDep = Annotated[Any, Depends(blobs_dep)]
ScorerDep = Annotated[ScorerLike, Depends(scorer_dep)]
