"""Pairs: the next pair for the calling voter, and skipping it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from doohable import voting, voting_pages
from doohable.api.deps import SessionDep, VoterDep, app_services, app_settings, in_transaction
from doohable.api.pair_view import PairOut, pair_out

router = APIRouter(prefix="/pairs", tags=["pairs"])


@router.get("/next", response_model=PairOut)
async def next_pair(user: VoterDep, request: Request) -> JSONResponse:
    """A new pair for the calling voter, with a single-use ``pair_token`` (409: < 2 images)."""
    services = app_services(request)  # not ServicesDep: one dependency fewer to solve
    pair = await in_transaction(services, voting.next_pair, user.id)  # stored before it is shown
    return JSONResponse(pair_out(pair, request, services.settings))  # PairOut's shape (documented above)


@router.post("/{pair_token}/skip", status_code=status.HTTP_204_NO_CONTENT)
def skip(pair_token: str, user: VoterDep, session: SessionDep) -> None:
    """Skip a pair without voting; its token can no longer be used."""
    voting.skip_pair(session, user.id, pair_token)


@router.post("/{pair_token}/again", response_model=PairOut)
def again(pair_token: str, user: VoterDep, session: SessionDep, request: Request) -> PairOut:
    """The pair of a skipped token again, with a new token (the page's undo of a skip)."""
    pair = voting_pages.pair_again(session, user.id, pair_token)
    return PairOut(**pair_out(pair, request, app_settings(request)))
