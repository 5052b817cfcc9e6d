"""What every part of the voting service shares: errors, answer types, names, the database key."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from doohable.store.models import Image, Status

ELO, BT = "elo", "bt"
METHODS = (ELO, BT)
DEFAULT_SCHEDULER = "active"  # the ranking engine's best (see docs/benchmarks.md)
SCHEDULER_SETTING = "scheduler"  # Setting row {"name": ...} that selects the active scheduler
# images that can be shown in a pair and ranked
ELIGIBLE = (Image.status != Status.rejected.value, Image.near_duplicate_of.is_(None))


class VotingError(ValueError):
    """A request the voting service refuses; the message says why (HTTP 400)."""


class NotFoundError(VotingError):
    """An unknown pair token, image or vote (HTTP 404)."""


class ConflictError(VotingError):
    """The request conflicts with the log, e.g. voting on a skipped pair (HTTP 409)."""


@dataclass(frozen=True)
class PairImage:
    """One side of a pair: the image id and what a signed URL needs."""

    id: int
    sha256: str
    format: str


@dataclass(frozen=True)
class Pair:
    """A pair shown to one voter, with its single-use token; ``left``/``right`` are randomised."""

    token: str
    left: PairImage
    right: PairImage


@dataclass(frozen=True)
class VoteResult:
    """The vote a token produced; ``created`` is False when the token had already been used."""

    vote_id: int
    created: bool


@dataclass(frozen=True)
class RatingRow:
    """One image's rating by one method; ``uncertainty`` is a posterior std (None for Elo)."""

    image_id: int
    rating: float
    uncertainty: float | None
    votes: int


_db_keys: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def db_key(session: Session) -> str:
    """The database a session works on, as the key of this process's caches and locks."""
    engine = session.get_bind().engine
    key = _db_keys.get(engine)
    if key is None:
        key = _db_keys[engine] = str(engine.url)
    return key
