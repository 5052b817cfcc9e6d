"""The FastAPI app: the JSON API under /api/v1 (:mod:`doohable.api.routers`), the pages
(:mod:`doohable.api.pages`), the docs, Slack events; all on one :class:`Services`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles

from doohable import __version__
from doohable.api.docs_pages import install_docs
from doohable.api.errors import install_error_handlers
from doohable.api.page_errors import install_page_errors
from doohable.api.retry import ReadRetryMiddleware
from doohable.api.security import APISessionMiddleware, BodyLimitMiddleware, CSRFMiddleware
from doohable.config import Settings
from doohable.malloc import TRIM_EVERY_S, trim
from doohable.services import Services
from doohable.signing import secret_key

STATIC = Path(__file__).with_name("static")
log = logging.getLogger(__name__)


def body_limit(settings: Settings, path: str) -> int:
    """The largest request body accepted on ``path``: one image (64 for the batch score
    route) plus 1 MiB for the multipart envelope and form fields."""
    from doohable.api.routers.score import MAX_BATCH

    images = MAX_BATCH if path == "/api/v1/score/batch" else 1
    return images * settings.max_image_bytes + (1 << 20)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the scorer at start-up (a missing model only disables scoring: 503, not the app);
    while the app serves, give the C heap's free pages back every minute (doohable.malloc)."""
    from doohable.api.routers.score import score_slots

    services: Services = app.state.services
    score_slots(app.state)
    reason = await run_in_threadpool(services.warm_scorer)
    if reason is not None:  # pragma: no cover - depends on the install
        log.warning("scoring disabled: %s", reason)

    async def every_minute() -> None:
        while True:
            await anyio.sleep(TRIM_EVERY_S)
            await run_in_threadpool(trim)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(every_minute)
        yield
        tasks.cancel_scope.cancel()


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app on ``services`` (default: built from ``settings``, else the environment's)."""
    from doohable.api.pages import pages_router
    from doohable.api.routers import api_router

    services = services or (Services(settings) if settings is not None else Services.from_env())
    settings = services.settings
    app = FastAPI(title="doohable", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.services = services

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # middlewares: the last added is the outermost; the session is decoded before the CSRF check
    app.add_middleware(CSRFMiddleware)
    app.add_middleware(
        APISessionMiddleware,
        secret_key=secret_key(settings),
        session_cookie="doohable_session",
        max_age=14 * 24 * 3600,
        same_site="lax",
    )
    app.add_middleware(BodyLimitMiddleware, limit=lambda path: body_limit(settings, path))
    app.add_middleware(ReadRetryMiddleware)  # outermost: a retried read runs the whole stack again
    install_error_handlers(app)
    install_page_errors(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_docs(app)
    app.include_router(api_router)
    app.include_router(pages_router)
    if settings.slack_signing_secret is not None:
        from doohable.slack.app import mount_slack

        mount_slack(app, settings)
    return app
