"""Votes: record one (idempotent per pair token), undo the last, the voter's stats, CSV export."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from doohable import voting, voting_pages
from doohable.api.deps import IdField, SessionDep, VoterDep, app_services, app_settings, in_transaction
from doohable.api.pair_view import PairOut, pair_out

router = APIRouter(prefix="/votes", tags=["votes"])


class VoteIn(BaseModel):
    pair_token: str
    winner_id: IdField | None  # null = can't decide


class VoteOut(BaseModel):
    vote_id: int


class UndoOut(BaseModel):
    undone: bool
    undo_id: int | None
    pair: PairOut | None = Field(None, description="the undone vote's pair with a new token, to vote again")


class StatsOut(BaseModel):
    today: int
    total: int
    settled: float
    mean_uncertainty: float | None
    images_compared: int = Field(0, description="images with at least one vote")
    images: int = Field(0, description="images that can be shown")


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=VoteOut,
    responses={200: {"model": VoteOut, "description": "this pair token was already used: the same vote"}},
)
async def cast_vote(body: VoteIn, user: VoterDep, request: Request) -> JSONResponse:
    """Record the calling voter's choice for a pair; the same token twice answers the same vote."""
    services = app_services(request)  # not ServicesDep: one dependency fewer to solve
    # committed before the answer: a 201 means the vote is stored
    result = await in_transaction(
        services, voting.record_vote, user.id, body.pair_token, body.winner_id, channel="api"
    )
    # VoteOut's shape, answered directly (no validation of the return value on the hot path)
    code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return JSONResponse({"vote_id": result.vote_id}, status_code=code)


@router.post("/undo", response_model=UndoOut)
def undo(user: VoterDep, session: SessionDep, request: Request) -> UndoOut:
    """Undo the calling voter's last vote (a new row in the log; nothing is deleted); the
    answer carries that pair again with a new token, to vote on it again."""
    undo_id = voting.undo_last(session, user.id, channel="api")
    if undo_id is None:
        return UndoOut(undone=False, undo_id=None, pair=None)
    pair = voting_pages.undone_pair(session, user.id, undo_id)
    again = PairOut(**pair_out(pair, request, app_settings(request)))
    return UndoOut(undone=True, undo_id=undo_id, pair=again)


@router.get("/stats", response_model=StatsOut)
def stats(user: VoterDep, session: SessionDep) -> StatsOut:
    """The calling voter's votes today and in total, and how settled the ranking is (0-1)."""
    compared, images = voting_pages.compared_share(session)
    return StatsOut(**voting.voter_stats(session, user.id), images_compared=compared, images=images)


@router.get("/export", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export(_user: VoterDep, session: SessionDep) -> StreamingResponse:
    """The vote log as CSV ``voter,winner,loser,created_at`` (effective decisive votes)."""
    lines = list(voting.export_votes_csv(session))  # read inside the request's transaction
    return StreamingResponse(
        iter(lines), media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="votes.csv"'},
    )
