"""Scoring API: ``POST /api/v1/score`` (one image) and ``POST /api/v1/score/batch`` (several).

An image comes as a multipart ``file`` (``files`` for the batch), or as ``{"image_id": n}`` /
``{"url": "https://..."}`` in JSON or form fields. The scorer is the app's
(:meth:`doohable.services.Services.scorer`, loaded when the app starts), taken only once the
request is known to be well formed: a malformed request gets its 4xx, and only a well-formed
one gets the 503 of a server without a model. At most as many requests as cores score at
once (the others wait on the event loop, holding no thread and no database connection), so a
burst of uploads does not split the cores between more inferences than they can run.

Each answer says the score, the model's name and version, the score's percentile among the
collection's stored scores for that model version, and what the current policy would decide
(``approved`` | ``pending`` | ``flagged``; the NSFW gate runs only with ``?nsfw=true`` or when
the stored image was checked, to keep the single-image latency low)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.orm import Session

from doohable.api.deps import MAX_ID, ServicesDep, VoterDep, in_transaction, scorer_or_503
from doohable.batch import Parts, ScorerLike, default_workers, prepare_bytes
from doohable.config import Settings
from doohable.images import ImageError, decode
from doohable.moderation_service import evaluate, nsfw_probability
from doohable.services import NO_MODEL_ERRORS, Services
from doohable.store.models import Image

MAX_BATCH = 64
router = APIRouter(prefix="/score", tags=["score"])


def score_slots(state: Any) -> anyio.CapacityLimiter:
    """The app's scoring slots (as many as cores) on its ``state``, made once on the event loop:
    by the app's lifespan, or by the first scoring request of an app run without one."""
    slots = getattr(state, "score_slots", None)
    if slots is None:
        slots = state.score_slots = anyio.CapacityLimiter(default_workers())
    return slots


def _score_slot(request: Request) -> AbstractAsyncContextManager[Any]:
    """One of the app's scoring slots, waited for on the event loop."""
    return score_slots(request.app.state)


class ScoreOut(BaseModel):
    score: float
    parts: Parts | None = None  # a combined scorer's parts (photo, face: null where it does not apply)
    model: str
    version: str
    percentile: float | None
    decision: str
    nsfw: float | None = None
    image_id: int | None = None


class BatchItemOut(BaseModel):
    index: int
    score: float | None = None
    parts: Parts | None = None
    error: str | None = None
    percentile: float | None = None
    decision: str | None = None
    nsfw: float | None = None
    image_id: int | None = None


class BatchOut(BaseModel):
    model: str
    version: str
    results: list[BatchItemOut]


def _image_error(e: ImageError, size: int, settings: Settings) -> HTTPException:
    code = status.HTTP_413_CONTENT_TOO_LARGE if size > settings.max_image_bytes else 422
    return HTTPException(code, str(e))


def _bytes_for_id(session: Session, services: Services, image_id: Any) -> tuple[bytes, Image]:
    try:
        key = int(image_id)
    except (TypeError, ValueError) as e:
        raise HTTPException(400, f"image_id must be an integer, not {image_id!r}") from e
    image = session.get(Image, key) if 1 <= key <= MAX_ID else None
    if image is None:
        raise HTTPException(404, f"no image {image_id}")
    try:
        return services.blobs.get(image.sha256), image
    except KeyError as e:
        raise HTTPException(404, f"image {image_id} is no longer stored") from e


def _bytes_for_url(settings: Settings, url: Any) -> bytes:
    from doohable.ingest import IngestError, fetch_url

    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise HTTPException(400, "url must be an http(s) URL")
    try:
        return fetch_url(url, settings)
    except (IngestError, ImageError) as e:
        raise HTTPException(400, f"cannot fetch {url}: {e}") from e


def _scorer(services: Services, data: bytes) -> ScorerLike:
    """The app's scorer for one image; without a model, an image that cannot be decoded
    still gets its 4xx (the request is malformed), and a good one the 503."""
    try:
        return services.scorer()
    except NO_MODEL_ERRORS:
        try:
            decode(data, draft=(256, 256))
        except ImageError as e:
            raise _image_error(e, len(data), services.settings) from e
    return scorer_or_503(services)


def _score_one(
    session: Session, services: Services, data: bytes | None, image_id: Any, check_nsfw: bool
) -> ScoreOut:
    """Score uploaded/fetched ``data``, or the stored image ``image_id`` when ``data`` is None."""
    settings = services.settings
    image: Image | None = None
    if data is None:
        data, image = _bytes_for_id(session, services, image_id)
    if len(data) > settings.max_image_bytes:
        raise HTTPException(413, f"the image is larger than {settings.max_image_bytes} bytes")
    scorer = _scorer(services, data)
    try:
        arr = prepare_bytes(data, scorer)
        p = nsfw_probability(data, settings) if check_nsfw else (image.nsfw if image is not None else None)
    except ImageError as e:
        raise _image_error(e, len(data), settings) from e
    ((score, parts, pct, decision),) = evaluate(session, settings, scorer, [arr], [p])
    return ScoreOut(
        score=score,
        parts=parts,
        model=scorer.name,
        version=scorer.version,
        percentile=pct,
        decision=decision,
        nsfw=p,
        image_id=image.id if image is not None else None,
    )


async def _read_request(request: Request, settings: Settings) -> dict[str, Any]:
    """Multipart/form or JSON body → {"files": [bytes...], "image_id"/"url"/...: values}."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as e:
            raise HTTPException(400, "the body is not valid JSON") from e
        if not isinstance(body, dict):
            raise HTTPException(400, "the JSON body must be an object")
        return {**body, "files": []}
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=MAX_BATCH, max_fields=MAX_BATCH + 8)
        files: list[bytes] = []
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
            elif key in ("file", "files"):
                files.append(await value.read(settings.max_image_bytes + 1))
        return {
            **{k: v[0] if len(v) == 1 and k not in ("image_ids", "urls") else v for k, v in fields.items()},
            "files": files,
        }
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        'send a multipart \'file\', or JSON {"image_id": n} or {"url": "https://..."}',
    )


@router.post("", response_model=ScoreOut)
async def score_image(
    request: Request, _user: VoterDep, services: ServicesDep, nsfw: bool = False
) -> ScoreOut:
    """Score one image (upload, stored image id or URL); bad input → 4xx with the reason.

    The database work, decoding and inference run in one worker-thread hop
    (:func:`~doohable.api.deps.in_transaction`), not one per step."""
    settings = services.settings
    body = await _read_request(request, settings)
    data: bytes | None = None
    if body["files"]:
        data = body["files"][0]
    elif body.get("image_id") is not None:
        pass  # read from the blob store in the worker thread
    elif body.get("url"):
        data = await run_in_threadpool(_bytes_for_url, settings, body["url"])
    else:
        raise HTTPException(400, "nothing to score: send a multipart 'file', an 'image_id' or a 'url'")
    async with _score_slot(request):
        return await in_transaction(services, _score_one, services, data, body.get("image_id"), nsfw)


@router.post("/batch", response_model=BatchOut)
async def score_batch(
    request: Request, _user: VoterDep, services: ServicesDep, nsfw: bool = False
) -> BatchOut:
    """Score up to 64 images at once (multipart ``files``, or JSON ``image_ids`` / ``urls``);
    each item gets its score or its own error, in the order sent."""
    body = await _read_request(request, services.settings)
    ids = body.get("image_ids") or []
    urls = body.get("urls") or []
    if not isinstance(ids, list) or not isinstance(urls, list):
        raise HTTPException(400, "image_ids and urls must be lists")
    count = len(body["files"]) + len(ids) + len(urls)
    if count == 0:
        raise HTTPException(400, "nothing to score: send 'files', 'image_ids' or 'urls'")
    if count > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} images per batch, got {count}")
    async with _score_slot(request):
        return await in_transaction(services, _score_many, services, body["files"], ids, urls, nsfw)


def _score_many(
    session: Session,
    services: Services,
    files: list[bytes],
    ids: list[Any],
    urls: list[Any],
    check_nsfw: bool,
) -> BatchOut:
    """Each item's score or its own error; the whole batch is a 503 without a model (the
    request itself is well formed by now)."""
    settings, scorer = services.settings, scorer_or_503(services)
    sources: list[tuple[str, Any]] = (
        [("file", f) for f in files] + [("id", i) for i in ids] + [("url", u) for u in urls]
    )
    items: list[BatchItemOut] = []
    ready: list[tuple[int, Any, float | None]] = []
    for index, (kind, value) in enumerate(sources):
        image: Image | None = None
        try:
            if kind == "id":
                data, image = _bytes_for_id(session, services, value)
            else:
                data = value if kind == "file" else _bytes_for_url(settings, value)
            if len(data) > settings.max_image_bytes:
                raise HTTPException(413, f"the image is larger than {settings.max_image_bytes} bytes")
            arr = prepare_bytes(data, scorer)
            p = nsfw_probability(data, settings) if check_nsfw else (image.nsfw if image else None)
        except HTTPException as e:
            items.append(BatchItemOut(index=index, error=str(e.detail)))
            continue
        except ImageError as e:
            items.append(BatchItemOut(index=index, error=str(e)))
            continue
        items.append(BatchItemOut(index=index, image_id=image.id if image is not None else None, nsfw=p))
        ready.append((index, arr, p))
    evaluated = evaluate(session, settings, scorer, [a for _, a, _ in ready], [p for _, _, p in ready])
    for (index, _, _), (score, parts, pct, decision) in zip(ready, evaluated, strict=True):
        item = items[index]
        item.score, item.parts, item.percentile, item.decision = score, parts, pct, decision
    return BatchOut(model=scorer.name, version=scorer.version, results=items)
