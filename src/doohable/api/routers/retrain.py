"""The retrain job for admins: ``POST /api/v1/retrain`` starts ``doohable retrain`` in the
background, ``GET /api/v1/retrain`` reports its state, progress and result.

The leaderboard shows admins a button and the job's state (``_retrain.html``, ``retrain.js``);
both routes need the admin role (bearer token, or the page's session cookie + CSRF header).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from doohable.api.deps import AdminDep, ServicesDep
from doohable.retrain_service import JobRunning, LoopOptions, job_state, start_job

router = APIRouter(prefix="/retrain", tags=["retrain"])


class RetrainIn(BaseModel):
    holdout: float = Field(0.2, gt=0.0, lt=1.0, description="share of decisive votes held out to compare")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    promote: bool = Field(True, description="install a better model and rescore the stored images")
    from_model: str | None = Field(
        None, max_length=200,
        description="start from a bundled photo model (photo, photo-hq, default) instead of ImageNet alone",
    )


class RetrainState(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    started_at: str | None = None
    finished_at: str | None = None
    started_by: str | None = None
    stage: str | None = Field(None, description="what the job is doing")
    done: int | None = None
    total: int | None = Field(None, description="0 when unknown")
    options: dict[str, Any] | None = None
    result: dict[str, Any] | None = Field(
        None, description="as `doohable retrain --json`: held-out pairwise accuracy of the new and the "
        "current scorer (`new`, `current`), `better`, `promoted`",
    )
    error: str | None = None


@router.get("", response_model=RetrainState)
def get_retrain(services: ServicesDep, _: AdminDep) -> dict[str, Any]:
    """The retrain job's state; ``idle`` before the first one."""
    return job_state(services.settings)


@router.post("", response_model=RetrainState, status_code=status.HTTP_202_ACCEPTED)
def post_retrain(services: ServicesDep, user: AdminDep, body: RetrainIn | None = None) -> dict[str, Any]:
    """Start a retrain in the background (202); 409 while one runs."""
    body = body or RetrainIn.model_validate({})
    if body.from_model is not None and body.from_model not in ("photo", "photo-hq", "default"):
        raise HTTPException(422, "from_model: photo, photo-hq or default")
    opts = LoopOptions(holdout=body.holdout, seed=body.seed, promote=body.promote, from_model=body.from_model)
    try:
        return start_job(services, opts, started_by=user.name)
    except JobRunning as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
