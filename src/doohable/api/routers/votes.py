"""Votes: record one (idempotent per pair token), undo the last, the voter's stats, CSV export."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from doohable import voting
from doohable.api.deps import IdField, SessionDep, VoterDep, app_settings, in_transaction

router = APIRouter(prefix="/api/v1/votes", tags=["votes"])


class VoteIn(BaseModel):
    pair_token: str
    winner_id: IdField | None  # null = can't decide


class VoteOut(BaseModel):
    vote_id: int


class UndoOut(BaseModel):
    undone: bool
    undo_id: int | None


class StatsOut(BaseModel):
    today: int
    total: int
    settled: float
    mean_uncertainty: float | None


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=VoteOut,
    responses={200: {"model": VoteOut, "description": "this pair token was already used: the same vote"}},
)
async def cast_vote(body: VoteIn, user: VoterDep, request: Request) -> JSONResponse:
    """Record the calling voter's choice for a pair; the same token twice answers the same vote."""
    settings = app_settings(request)  # not SettingsDep: one dependency fewer to solve
    # committed before the answer: a 201 means the vote is stored
    result = await in_transaction(
        settings, voting.record_vote, user.id, body.pair_token, body.winner_id, channel="api"
    )
    # VoteOut's shape, answered directly (no validation of the return value on the hot path)
    code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return JSONResponse({"vote_id": result.vote_id}, status_code=code)


@router.post("/undo", response_model=UndoOut)
def undo(user: VoterDep, session: SessionDep) -> UndoOut:
    """Undo the calling voter's last vote (a new row in the log; nothing is deleted)."""
    undo_id = voting.undo_last(session, user.id, channel="api")
    return UndoOut(undone=undo_id is not None, undo_id=undo_id)


@router.get("/stats", response_model=StatsOut)
def stats(user: VoterDep, session: SessionDep) -> StatsOut:
    """The calling voter's votes today and in total, and how settled the ranking is (0-1)."""
    return StatsOut(**voting.voter_stats(session, user.id))


@router.get("/export", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export(_user: VoterDep, session: SessionDep) -> StreamingResponse:
    """The vote log as CSV ``voter,winner,loser,created_at`` (effective decisive votes)."""
    lines = list(voting.export_votes_csv(session))  # read inside the request's transaction
    return StreamingResponse(
        iter(lines), media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="votes.csv"'},
    )
