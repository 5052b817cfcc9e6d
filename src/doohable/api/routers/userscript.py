"""The userscript's ingest route (the userscript itself is served by
:mod:`doohable.api.pages.userscript`).

``POST /api/v1/images/url`` ``{"url", "page_url", "author", "caption", "network"}`` fetches the
image (SSRF-safe), stores it with where it was seen, scores it, runs the NSFW gate and applies
the auto-approve policy. The userscript calls it from social pages (another origin), so the
route answers CORS preflights and puts CORS headers on every answer, errors included: the
bearer token, not a cookie, authenticates it (no credentials mode, so no CSRF exposure)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError, field_validator
from sqlalchemy.orm import Session

from doohable.api.deps import ServicesDep, SessionDep, authenticate
from doohable.images import ImageError
from doohable.services import NO_MODEL_ERRORS, Services
from doohable.store.models import User
from doohable.store.users import has_role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/images", tags=["userscript"])
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


class UrlIn(BaseModel):
    url: str
    page_url: str | None = None
    author: str | None = None
    caption: str | None = None
    network: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        return v

    @field_validator("author", "network")
    @classmethod
    def _short(cls, v: str | None) -> str | None:
        return v[:255].strip() or None if v else None


class UrlOut(BaseModel):
    id: int
    sha256: str
    duplicate: bool
    near_duplicate_of: int | None = None
    score: float | None = None
    status: str | None = None


def _json(code: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=code, headers=CORS)


@router.options("/url", include_in_schema=False)
def preflight() -> Response:
    """CORS preflight for the userscript's ``fetch`` fallback."""
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=CORS)


async def _caller(request: Request) -> User | None:
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    return await authenticate(request, token)


@router.post("/url", status_code=201, response_model=UrlOut)
async def add_by_url(request: Request, session: SessionDep, services: ServicesDep) -> Response:
    """Fetch and store an image seen on a page; 201 with its id (and score), else 4xx ``{"detail"}``."""
    user = await _caller(request)
    if user is None:
        return _json(401, {"detail": "missing or invalid token"})
    if not has_role(user, "voter"):
        return _json(403, {"detail": "this needs the voter role"})
    try:
        body = UrlIn.model_validate(await request.json())
    except ValueError as e:  # bad JSON or ValidationError
        reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else "the body is not valid JSON"
        return _json(400, {"detail": reason})
    try:
        out = await run_in_threadpool(ingest_url, session, services, body, user)
    except (ImageError, ValueError) as e:
        return _json(400, {"detail": str(e)})
    return _json(201, out.model_dump())


def ingest_url(session: Session, services: Services, body: UrlIn, user: User) -> UrlOut:
    """Fetch, ingest, then score + NSFW + policy (moderation skipped if no model is available)."""
    from doohable.ingest import SourceInfo, fetch_url, ingest_bytes
    from doohable.moderation import latest_scores
    from doohable.moderation_service import moderate_ingested
    from doohable.store.models import Image

    settings = services.settings
    data = fetch_url(body.url, settings)
    source = SourceInfo(
        kind="userscript",
        uri=body.url,
        network=body.network,
        page_url=body.page_url,
        author=body.author,
        caption=body.caption,
        added_by=user.id,
    )
    blobs = services.blobs
    result = ingest_bytes(session, blobs, data, source=source, settings=settings)
    score = None
    try:
        scorer, _ = moderate_ingested(session, blobs, settings, [result.image_id], scorer=services.scorer())
        score = latest_scores(session, scorer.name, scorer.version).get(result.image_id)
    except (*NO_MODEL_ERRORS, OSError) as e:  # no model that loads: store only
        log.warning("image %s stored unscored: %s", result.image_id, e)
    image = session.get(Image, result.image_id)
    return UrlOut(
        id=result.image_id,
        sha256=result.sha256,
        duplicate=result.duplicate,
        near_duplicate_of=result.near_duplicate_of,
        score=score,
        status=image.status if image else None,
    )
