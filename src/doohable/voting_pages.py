"""What the voting page needs beyond :mod:`doohable.voting`: a pair shown again with a fresh
token (after an undone vote or a skip), and a progress measure that moves with every vote."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from doohable.store.models import Image, PairToken, Rating, Status, Vote
from doohable.voting import ELO, ConflictError, NotFoundError, Pair, PairImage


def issue_pair(session: Session, voter_id: int, left_id: int, right_id: int) -> Pair:
    """A new single-use token for the voter on a given pair of images (sides kept)."""
    images = {
        i: PairImage(i, sha, fmt)
        for i, sha, fmt in session.execute(
            select(Image.id, Image.sha256, Image.format).where(Image.id.in_((left_id, right_id)))
        )
    }
    if len(images) != 2:
        raise NotFoundError("an image of this pair is gone; ask for a new pair")
    token = secrets.token_urlsafe(24)
    session.add(PairToken(token=token, voter_id=voter_id, left_id=left_id, right_id=right_id,
                          issued_at=dt.datetime.now(dt.UTC)))
    session.flush()
    return Pair(token=token, left=images[left_id], right=images[right_id])


def pair_again(session: Session, voter_id: int, pair_token: str) -> Pair:
    """The pair of the voter's skipped token again, with a new token (undo of a skip).

    Raises NotFoundError (not this voter's token) or ConflictError (the token was voted on:
    undo the vote instead)."""
    row = session.get(PairToken, pair_token)
    if row is None or row.voter_id != voter_id:
        raise NotFoundError("unknown pair token for this voter")
    if session.scalar(select(Vote.id).where(Vote.pair_token == pair_token)) is not None:
        raise ConflictError("this pair was voted on; undo the vote instead")
    return issue_pair(session, voter_id, row.left_id, row.right_id)


def undone_pair(session: Session, voter_id: int, undo_id: int) -> Pair:
    """The pair of the vote that undo row ``undo_id`` took back, with a new token to re-vote."""
    undo = session.get(Vote, undo_id)
    if undo is None or undo.voter_id != voter_id:
        raise NotFoundError(f"no undo {undo_id} by this voter")
    return issue_pair(session, voter_id, undo.left_id, undo.right_id)


def compared_share(session: Session) -> tuple[int, int]:
    """(images compared at least once, images that can be shown): moves with the first votes,
    while the share of settled pairs stays near 0 until there are many."""
    shown = select(Image.id).where(Image.status != Status.rejected.value, Image.near_duplicate_of.is_(None))
    total = int(session.scalar(select(func.count()).select_from(shown.subquery())) or 0)
    compared = session.scalar(
        select(func.count()).where(Rating.method == ELO, Rating.votes > 0, Rating.image_id.in_(shown))
    )
    return int(compared or 0), total
