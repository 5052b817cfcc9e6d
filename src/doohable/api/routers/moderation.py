"""Moderation's JSON API under ``/api/v1/moderation``: the queue, decisions, the auto-approve
policy, the audit (the page is :mod:`doohable.api.pages.moderation`).

Every route needs the moderator role (bearer token, or the page's session cookie + CSRF
header). No route here scores an image, so none needs a model: they work on stored scores, the
serving model's, or while it cannot be loaded those of the model that stored the newest score
(:func:`queue_model`; the policy says so in ``model_note``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from doohable import decisions, moderation
from doohable.api.deps import (
    MAX_ID,
    IdField,
    ModeratorDep,
    ServicesDep,
    SessionDep,
    absolute_url,
)
from doohable.batch import Parts
from doohable.services import NO_MODEL_ERRORS, Services
from doohable.signing import image_url
from doohable.store.catalog import newest_scored_model
from doohable.store.models import Image

router = APIRouter(prefix="/moderation", tags=["moderation"])


@dataclass(frozen=True)
class QueueModel:
    """The model whose stored scores the queue, decisions and policy use; ``note`` says why it
    is not the serving model (None: it is)."""

    name: str | None
    version: str | None = None
    note: str | None = None


def queue_model(session: SessionDep, services: Services) -> QueueModel:
    """The serving model; when it cannot be loaded, the model of the newest stored score, so
    that moderators keep working on the scores already stored (only scoring needs a model)."""
    try:
        scorer = services.scorer()
    except NO_MODEL_ERRORS as e:
        newest = newest_scored_model(session)
        name = None if newest is None else newest[0]
        shown = f"showing the stored scores of {name}" if name else "no stored scores to show"
        return QueueModel(name, note=f"no scoring model ({e}): {shown}; new images are not scored")
    return QueueModel(scorer.name, scorer.version)


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
    size_bytes: int | None = None
    posted_at: dt.datetime | None = None
    decided_by: str | None = Field(None, description="who set the status: a user name, or auto (a rule)")
    decided_rule: str | None = None
    parts: Parts | None = Field(None, description="the score's parts, when the scorer gives them")


class DecisionIn(BaseModel):
    image_id: IdField
    decision: Literal["approved", "rejected", "pending"]
    expected_status: Literal["approved", "rejected", "pending"] | None = Field(
        None, description="the status the decision was made on; another one now answers 409"
    )


class DecisionOut(BaseModel):
    decision_id: int
    image_id: int
    status: str
    created: bool = True


class UndoDecisionOut(BaseModel):
    undone: bool
    image_id: int | None = None
    undone_decision: str | None = None
    status: str | None = None


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
    model: str | None = Field(description="the model whose stored scores the queue and the policy use")
    version: str | None
    model_note: str | None = Field(None, description="why that is not the serving model (none can be loaded)")
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


@router.get("/queue", response_model=list[QueueItemOut])
def get_queue(
    request: Request,
    _user: ModeratorDep,
    session: SessionDep,
    services: ServicesDep,
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
    settings = services.settings
    flt = moderation.QueueFilter(status_, source or None, since, until, min_score, max_score, limit, offset)
    policy = moderation.get_policy(session, settings)
    items = moderation.queue(session, queue_model(session, services).name, flt, policy)
    formats = dict(session.query(Image.id, Image.format).filter(Image.id.in_([i.id for i in items])).all())
    details = decisions.card_details(session, [i.id for i in items])
    own = [k for k in QueueItemOut.model_fields if hasattr(items[0], k) and k != "url"] if items else []
    return [
        QueueItemOut.model_validate(
            {
                **{k: v for k, v in details[i.id].items() if k not in own},
                **{k: getattr(i, k) for k in own},
                "url": absolute_url(request, image_url(i.sha256, formats[i.id], settings)),
            }
        )
        for i in items
    ]


@router.post(
    "/decisions", status_code=status.HTTP_201_CREATED, response_model=DecisionOut,
    responses={200: {"model": DecisionOut, "description": "the image already had this decision"}},
)
def post_decision(
    body: DecisionIn, user: ModeratorDep, session: SessionDep, services: ServicesDep, response: Response
) -> DecisionOut:
    """A moderator approves, rejects, or puts an image back to pending (logged with its score).

    The same decision twice answers the first one (200, no second row); with
    ``expected_status``, a decision on an image whose status changed since answers 409."""
    score = moderation.latest_scores(session, queue_model(session, services).name).get(body.image_id)
    try:
        out = decisions.decide_once(
            session, body.image_id, body.decision, actor=user, score=score,
            expected_status=body.expected_status,
        )
    except decisions.DecisionConflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
    except moderation.ImageNotFound as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from e
    except moderation.ModerationError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    if not out.created:
        response.status_code = status.HTTP_200_OK
    row = out.decision
    return DecisionOut(decision_id=row.id, image_id=row.image_id, status=body.decision, created=out.created)


@router.post("/decisions/undo", response_model=UndoDecisionOut)
def undo_decision(user: ModeratorDep, session: SessionDep) -> UndoDecisionOut:
    """Take back the caller's last decision: the image gets its status from before it back
    (a new row ``undo:<id>`` in the audit; 409 when the image was decided again since)."""
    try:
        done = decisions.undo_last_decision(session, user)
    except decisions.DecisionConflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
    if done is None:
        return UndoDecisionOut(undone=False)
    target, row = done
    return UndoDecisionOut(
        undone=True, image_id=target.image_id, undone_decision=target.decision, status=row.decision
    )


def _policy_out(
    session: SessionDep, services: Services, model: QueueModel, applied: dict[str, int] | None = None
) -> PolicyOut:
    policy = moderation.get_policy(session, services.settings)
    suggested, error = None, None
    try:
        s = moderation.suggest_threshold(session, model.name)
        suggested = SuggestionOut(**s.__dict__)
    except moderation.ModerationError as e:
        error = str(e)
    return PolicyOut(
        threshold=policy.threshold,
        nsfw_threshold=policy.nsfw_threshold,
        model=model.name,
        version=model.version,
        model_note=model.note,
        suggested=suggested,
        suggestion_error=error,
        applied=applied,
    )


@router.get("/policy", response_model=PolicyOut)
def get_policy(_user: ModeratorDep, session: SessionDep, services: ServicesDep) -> PolicyOut:
    """The policy in force and the threshold suggested by past decisions (ROC / Youden)."""
    return _policy_out(session, services, queue_model(session, services))


@router.put("/policy", response_model=PolicyOut)
def put_policy(body: PolicyIn, _user: ModeratorDep, session: SessionDep, services: ServicesDep) -> PolicyOut:
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
    applied, model = None, queue_model(session, services)
    if body.apply:
        scores = moderation.latest_scores(session, model.name)
        pending = session.query(Image.id).filter(Image.status == "pending").all()
        applied = moderation.apply_policy(
            session, [i for (i,) in pending], moderation.get_policy(session, services.settings), scores
        )
    return _policy_out(session, services, model, applied)


@router.get("/preview", response_model=PreviewOut)
def get_preview(
    threshold: float, _user: ModeratorDep, session: SessionDep, services: ServicesDep
) -> PreviewOut:
    """What ``threshold`` would auto-approve now, and its errors on decisions already made."""
    p = moderation.preview(session, threshold, queue_model(session, services).name)
    return PreviewOut(**p.__dict__, wrong=p.wrong)


@router.get("/audit.csv", response_class=Response)
def audit(_user: ModeratorDep, session: SessionDep) -> Response:
    """Every decision as CSV: who or which rule, when, with the score at the time."""
    headers = {"Content-Disposition": 'attachment; filename="doohable-decisions.csv"'}
    return Response(moderation.audit_csv(session), media_type="text/csv", headers=headers)

