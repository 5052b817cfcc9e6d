"""The pages' Jinja2 templates and :func:`render`, shared by the page routers and the error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from doohable.api.security import csrf_token

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = TEMPLATES.with_name("static")
templates = Jinja2Templates(directory=TEMPLATES)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    """Render a template with the CSRF token and signed-in user name available to it."""
    ctx = {
        "csrf_token": csrf_token(request),
        "user_name": request.session.get("name"),
        "user_role": request.session.get("role"),
    }
    return templates.TemplateResponse(request, name, {**ctx, **(context or {})}, status_code=status_code)
