"""HTML error pages (403, 404, ...) with a way back, for browsers on the pages; the JSON API
keeps its ``{"detail": reason}`` answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

HEADINGS = {
    401: "Please sign in",
    403: "Not for this account",
    404: "Page not found",
    405: "Not allowed here",
}


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not the API, not a script asking for JSON)."""
    path = request.url.path
    if path.startswith(("/api/", "/img/", "/static/", "/slack/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, code: int, message: str) -> Response:
    """The error page: what went wrong and a link back (home, or sign in for 401)."""
    from doohable.api.templating import render

    signed_in = bool(request.session.get("name")) if "session" in request.scope else False
    back = ("/vote", "Back to voting") if signed_in else ("/login", "Sign in")
    ctx = {
        "status_code": code,
        "heading": HEADINGS.get(code, "Something went wrong"),
        "message": message,
        "back_url": back[0],
        "back_label": back[1],
    }
    return render(request, "error.html", ctx, status_code=code)


def install_page_errors(app: FastAPI) -> None:
    """Answer HTTP errors on page paths with :func:`error_page`, elsewhere as FastAPI does."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if wants_html(request) and exc.status_code in HEADINGS:
            detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else None
            return error_page(request, exc.status_code, detail or "There is no page at this address.")
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, handler)
