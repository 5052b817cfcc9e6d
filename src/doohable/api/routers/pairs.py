"""Pairs: the next pair for the calling voter, and skipping it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from doohable import voting, voting_pages
from doohable.api.deps import SessionDep, VoterDep, app_settings, in_transaction
from doohable.api.routers.images import absolute_url
from doohable.config import Settings
from doohable.signing import image_url

router = APIRouter(prefix="/api/v1/pairs", tags=["pairs"])


class Side(BaseModel):
    id: int
    url: str


class PairOut(BaseModel):
    pair_token: str
    left: Side
    right: Side


def pair_out(pair: voting.Pair, request: Request, settings: Settings) -> dict[str, Any]:
    """The JSON shape of a pair (:class:`PairOut`), with signed absolute image URLs.

    A plain dict: the hot route answers it as-is instead of validating a pydantic model."""
    base = absolute_url(request, "")

    def side(img: voting.PairImage) -> dict[str, Any]:
        return {"id": img.id, "url": base + image_url(img.sha256, img.format, settings)}

    return {"pair_token": pair.token, "left": side(pair.left), "right": side(pair.right)}


@router.get("/next", response_model=PairOut)
async def next_pair(user: VoterDep, request: Request) -> JSONResponse:
    """A new pair for the calling voter, with a single-use ``pair_token`` (409: < 2 images)."""
    settings = app_settings(request)  # not SettingsDep: one dependency fewer to solve
    pair = await in_transaction(settings, voting.next_pair, user.id)  # stored before it is shown
    return JSONResponse(pair_out(pair, request, settings))  # PairOut's shape (documented above)


@router.post("/{pair_token}/skip", status_code=status.HTTP_204_NO_CONTENT)
def skip(pair_token: str, user: VoterDep, session: SessionDep) -> None:
    """Skip a pair without voting; its token can no longer be used."""
    voting.skip_pair(session, user.id, pair_token)


@router.post("/{pair_token}/again", response_model=PairOut)
def again(pair_token: str, user: VoterDep, session: SessionDep, request: Request) -> PairOut:
    """The pair of a skipped token again, with a new token (the page's undo of a skip)."""
    pair = voting_pages.pair_again(session, user.id, pair_token)
    return PairOut(**pair_out(pair, request, app_settings(request)))
