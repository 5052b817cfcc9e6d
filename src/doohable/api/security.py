"""CSRF protection and login state for the pages (session cookie signed with itsdangerous).

API clients send ``Authorization: Bearer``; the pages' JavaScript calls the same API with
the session cookie instead, so every unsafe request authenticated by the cookie must carry
the session's CSRF token (header ``X-CSRF-Token``, or field ``csrf_token`` in page forms)."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"


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


class CSRFMiddleware:
    """Refuse (403) unsafe /api requests that rely on the session cookie without the CSRF header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE and scope["path"].startswith("/api/"):
            conn = HTTPConnection(scope)
            cookie_auth = "authorization" not in conn.headers and conn.session.get("token")
            if cookie_auth and not csrf_ok(conn, conn.headers.get(CSRF_HEADER)):
                response = JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
