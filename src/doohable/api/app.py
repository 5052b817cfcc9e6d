"""The FastAPI app: JSON API under /api/v1 (one router per resource), pages, Slack events."""

from __future__ import annotations

from fastapi import FastAPI

from doohable import __version__
from doohable.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(title="doohable", version=__version__)
    app.state.settings = settings

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Routers register here, one per resource (see doohable/api/routers/).
    return app
