"""Moderation: the queue page (``/moderation``) and its JSON API under ``/api/v1/moderation``.

Every route needs the moderator role (bearer token, or the page's session cookie + CSRF header)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from doohable import moderation
from doohable.api.deps import MAX_ID, IdField, ModeratorDep, SessionDep, SettingsDep
from doohable.api.routers.images import absolute_url
from doohable.api.routers.pages import PageUser, render
from doohable.batch import cached_scorer
from doohable.config import Settings
from doohable.signing import image_url
from doohable.store.models import Image
from doohable.store.users import has_role

router = APIRouter(tags=["moderation"])


def model_name(settings: Settings) -> tuple[str, str | None]:
    """Name and version of the serving model, whose scores order the queue."""
    try:
        scorer = cached_scorer(settings.model, settings.threads)
    except (FileNotFoundError, ValueError) as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no scoring model: {e}") from e
    return scorer.name, scorer.version


class QueueItemOut(BaseModel):
    id: int
    url: str
    status: str
    score: float | None
    nsfw: float | None
    flagged: bool
    source: str | None
    author: str | None
    caption: str | None
    page_url: str | None
    width: int
    height: int
    created_at: dt.datetime


class DecisionIn(BaseModel):
    image_id: IdField
    decision: Literal["approved", "rejected", "pending"]


class DecisionOut(BaseModel):
    decision_id: int
    image_id: int
    status: str


class PolicyIn(BaseModel):
    threshold: float | None = Field(description="auto-approve score threshold; null turns auto-approval off")
    nsfw_threshold: float | None = None
    apply: bool = Field(True, description="apply the policy to the pending images now")


class SuggestionOut(BaseModel):
    threshold: float
    tpr: float
    fpr: float
    youden_j: float
    positives: int
    negatives: int


class PolicyOut(BaseModel):
    threshold: float | None
    nsfw_threshold: float
    model: str
    version: str | None
    suggested: SuggestionOut | None
    suggestion_error: str | None = None
    applied: dict[str, int] | None = None


class PreviewOut(BaseModel):
    threshold: float
    would_approve: int
    false_approvals: int
    missed_approvals: int
    wrong: int
    decided: int


@router.get("/api/v1/moderation/queue", response_model=list[QueueItemOut])
def get_queue(
    request: Request,
    _user: ModeratorDep,
    session: SessionDep,
    settings: SettingsDep,
    status_: Annotated[Literal["pending", "approved", "rejected"], Query(alias="status")] = "pending",
    source: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[QueueItemOut]:
    """Images of a status (pending by default) best first, with filters."""
    name, _ = model_name(settings)
    flt = moderation.QueueFilter(status_, source or None, since, until, min_score, max_score, limit, offset)
    items = moderation.queue(session, name, flt, moderation.get_policy(session, settings))
    formats = dict(session.query(Image.id, Image.format).filter(Image.id.in_([i.id for i in items])).all())
    return [
        QueueItemOut(
            url=absolute_url(request, image_url(i.sha256, formats[i.id], settings)),
            **{k: getattr(i, k) for k in QueueItemOut.model_fields if k != "url"},
        )
        for i in items
    ]


@router.post("/api/v1/moderation/decisions", status_code=status.HTTP_201_CREATED, response_model=DecisionOut)
def post_decision(
    body: DecisionIn, user: ModeratorDep, session: SessionDep, settings: SettingsDep
) -> DecisionOut:
    """A moderator approves, rejects, or puts an image back to pending (logged with its score)."""
    name, _ = model_name(settings)
    score = moderation.latest_scores(session, name).get(body.image_id)
    try:
        row = moderation.record_decision(session, body.image_id, body.decision, actor=user, score=score)
    except moderation.ModerationError as e:
        code = status.HTTP_404_NOT_FOUND if "no image" in str(e) else status.HTTP_400_BAD_REQUEST
        raise HTTPException(code, str(e)) from e
    return DecisionOut(decision_id=row.id, image_id=row.image_id, status=body.decision)


def _policy_out(session: SessionDep, settings: Settings, applied: dict[str, int] | None = None) -> PolicyOut:
    name, version = model_name(settings)
    policy = moderation.get_policy(session, settings)
    suggested, error = None, None
    try:
        s = moderation.suggest_threshold(session, name)
        suggested = SuggestionOut(**s.__dict__)
    except moderation.ModerationError as e:
        error = str(e)
    return PolicyOut(
        threshold=policy.threshold,
        nsfw_threshold=policy.nsfw_threshold,
        model=name,
        version=version,
        suggested=suggested,
        suggestion_error=error,
        applied=applied,
    )


@router.get("/api/v1/moderation/policy", response_model=PolicyOut)
def get_policy(_user: ModeratorDep, session: SessionDep, settings: SettingsDep) -> PolicyOut:
    """The policy in force and the threshold suggested by past decisions (ROC / Youden)."""
    return _policy_out(session, settings)


@router.put("/api/v1/moderation/policy", response_model=PolicyOut)
def put_policy(body: PolicyIn, _user: ModeratorDep, session: SessionDep, settings: SettingsDep) -> PolicyOut:
    """Set the auto-approve threshold (and NSFW threshold); by default apply it to pending images."""
    try:
        moderation.set_policy(
            session,
            threshold=body.threshold,
            nsfw_threshold=body.nsfw_threshold,
            clear_threshold=body.threshold is None,
        )
    except moderation.ModerationError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    applied = None
    if body.apply:
        name, _ = model_name(settings)
        scores = moderation.latest_scores(session, name)
        pending = session.query(Image.id).filter(Image.status == "pending").all()
        applied = moderation.apply_policy(
            session, [i for (i,) in pending], moderation.get_policy(session, settings), scores
        )
    return _policy_out(session, settings, applied)


@router.get("/api/v1/moderation/preview", response_model=PreviewOut)
def get_preview(
    threshold: float, _user: ModeratorDep, session: SessionDep, settings: SettingsDep
) -> PreviewOut:
    """What ``threshold`` would auto-approve now, and its errors on decisions already made."""
    name, _ = model_name(settings)
    p = moderation.preview(session, threshold, name)
    return PreviewOut(**p.__dict__, wrong=p.wrong)


@router.get("/api/v1/moderation/audit.csv", response_class=Response)
def audit(_user: ModeratorDep, session: SessionDep) -> Response:
    """Every decision as CSV: who or which rule, when, with the score at the time."""
    headers = {"Content-Disposition": 'attachment; filename="doohable-decisions.csv"'}
    return Response(moderation.audit_csv(session), media_type="text/csv", headers=headers)


@router.get("/moderation", response_class=HTMLResponse, include_in_schema=False)
def moderation_page(request: Request, user: PageUser) -> Response:
    """The moderation queue page (moderators)."""
    if user is None:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=status.HTTP_303_SEE_OTHER)
    if not has_role(user, "moderator"):
        return Response("this page needs the moderator role", status_code=status.HTTP_403_FORBIDDEN)
    return render(request, "moderation.html")
