"""What a browser loads outside the JSON API: the HTML pages, the userscript, and the image
bytes behind signed URLs (``/img/{token}``, handed out by the API and the pages alike).

:data:`pages_router` gathers them; ``create_app`` includes it next to the JSON API
(:data:`doohable.api.routers.api_router`)."""

from __future__ import annotations

from fastapi import APIRouter

from doohable.api.pages import img, moderation, site, userscript

pages_router = APIRouter()
pages_router.include_router(img.router)
pages_router.include_router(site.router)
pages_router.include_router(moderation.router)
pages_router.include_router(userscript.router)

__all__ = ["pages_router"]
