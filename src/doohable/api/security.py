"""CSRF protection and login state for the pages (session cookie signed with itsdangerous).

API clients send ``Authorization: Bearer``; the pages' JavaScript calls the same API with
the session cookie instead, so every unsafe request authenticated by the cookie must carry
the session's CSRF token (header ``X-CSRF-Token``, or field ``csrf_token`` in page forms)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first raw value of header ``name`` (lower case) in ``scope``, without building a
    ``Headers`` object (these middlewares run on every request)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def cookieless_api_call(scope: Scope) -> bool:
    """True for an /api request that carries ``Authorization`` and no cookie at all: it has no
    session to decode or write back and cannot be a cross-site cookie request (no CSRF risk)."""
    if not scope["path"].startswith("/api/"):
        return False
    has_auth = False
    for key, _ in scope["headers"]:
        if key == b"cookie":
            return False
        if key == b"authorization":
            has_auth = True
    return has_auth


def csrf_token(conn: HTTPConnection) -> str:
    """The session's CSRF token, created on first use."""
    token = conn.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        conn.session["csrf"] = token
    return str(token)


def csrf_ok(conn: HTTPConnection, supplied: str | None) -> bool:
    """True when ``supplied`` matches the session's CSRF token (constant-time)."""
    expected = conn.session.get("csrf")
    return bool(expected and supplied and hmac.compare_digest(str(expected), supplied))


class BodyLimitMiddleware:
    """Refuse (413) a request body larger than ``limit(path)`` bytes before it is stored.

    Starlette spools multipart uploads to temporary files of any size, so without this a
    client could fill the disk with one upload. A declared ``Content-Length`` above the limit
    is refused at once; a chunked body is cut off (the connection is dropped) when it passes it.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[str], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        declared = header(scope, b"content-length") or b""
        if declared.isdigit() and int(declared) <= limit and header(scope, b"transfer-encoding") is None:
            # the HTTP server frames the body by Content-Length: it cannot deliver more
            await self.app(scope, receive, send)
            return
        detail = {"detail": f"the request body is larger than the {limit:,}-byte limit"}
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse(detail, status_code=413)(scope, receive, send)
            return
        seen, replaced = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            return {"type": "http.disconnect"} if seen > limit else message

        async def answer(message: Message) -> None:
            # the app saw a disconnect where the body passed the limit: answer 413 instead
            nonlocal replaced
            if seen > limit and message["type"] == "http.response.start":
                replaced = True
                await JSONResponse(detail, status_code=413)(scope, receive, send)
            elif not replaced:
                await send(message)

        await self.app(scope, counted, answer)


class APISessionMiddleware(SessionMiddleware):
    """Starlette's signed-cookie session, skipped for :func:`cookieless_api_call` requests
    (bearer API clients): they get an empty session that is never written back."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and cookieless_api_call(scope):
            scope["session"] = {}
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class CSRFMiddleware:
    """Refuse (403) unsafe /api requests that rely on the session cookie without the CSRF header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in UNSAFE and scope["path"].startswith("/api/")
                and header(scope, b"authorization") is None):
            conn = HTTPConnection(scope)
            if conn.session.get("token") and not csrf_ok(conn, conn.headers.get(CSRF_HEADER)):
                response = JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
