"""Ratings: Elo (updated with every vote) and Bradley-Terry (refitted from the log)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from doohable import voting
from doohable.api.deps import AdminDep, SessionDep, VoterDep

router = APIRouter(prefix="/ratings", tags=["ratings"])


class RatingOut(BaseModel):
    image_id: int
    rating: float
    uncertainty: float | None
    votes: int


@router.get("", response_model=list[RatingOut])
def list_ratings(
    _user: VoterDep, session: SessionDep, method: Literal["elo", "bt"] = "elo"
) -> list[RatingOut]:
    """Every rated image, best first; ``uncertainty`` is BT's posterior std (null for Elo)."""
    return [RatingOut(**vars(r)) for r in voting.ratings(session, method)]


class RebuildOut(BaseModel):
    log_rows: int
    images: int
    max_elo_change: float
    deleted_votes: int  # counted votes that name a deleted image: kept in the log, not rated


@router.post("/rebuild", response_model=RebuildOut)
def rebuild(_admin: AdminDep, session: SessionDep) -> RebuildOut:
    """Recompute every rating from the vote log (admin); reports the largest Elo correction."""
    return RebuildOut(**vars(voting.rebuild_ratings(session)))
