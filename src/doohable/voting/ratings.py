"""Ratings from the vote log: Elo (stored, exact replay), Bradley–Terry (refitted, cached),
how settled the ranking is, and a voter's own counts.

Bradley–Terry ratings (with posterior uncertainty) are refitted from the log on read and
cached by what the fit depends on (:func:`fit_key`): the log's last id, the stored images
and the prior model.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from doohable.ranking import bradley_terry, elo
from doohable.ranking import prior as model_prior
from doohable.ranking.metrics import settled_share
from doohable.ranking.prior import ModelPrior
from doohable.ranking.votes import IdIndex, LogRow, comparisons_from_log
from doohable.store.models import Image, Rating, Vote
from doohable.voting import live as live_states
from doohable.voting.common import BT, ELIGIBLE, ELO, METHODS, RatingRow, VotingError, db_key
from doohable.voting.log import effective_votes, last_log_id, log_rows, without_deleted_images
from doohable.voting.prior import prior_model, prior_scores
from doohable.voting.service import ELO_START, begin_write


@dataclass(frozen=True)
class BTFit:
    """A Bradley-Terry fit of the log: log-strengths, posterior std and vote counts per image."""

    last_id: int
    image_ids: np.ndarray
    rating: np.ndarray
    std: np.ndarray
    votes: np.ndarray
    fitted_at: float
    prior: ModelPrior | None = None  # the scorer's prior as learned from these votes
    deleted_votes: int = 0  # counted votes left out because they name a deleted image


FitKey = tuple[int, int, int, tuple[str, str] | None]
_bt_cache: dict[str, tuple[FitKey, BTFit]] = {}
_bt_lock = threading.Lock()


def voted_images(rows: Sequence[LogRow]) -> list[int]:
    """The ids of the images in these votes, sorted (the order of a :class:`BTFit`)."""
    return sorted({i for r in rows for i in (r.left_id, r.right_id)})


def fit_bt(rows: Sequence[LogRow], last_id: int = 0, prior_scores: np.ndarray | None = None,
           start: ModelPrior | None = None) -> BTFit:
    """Fit Crowd-BT (:func:`doohable.ranking.bradley_terry.fit`: per-voter reliability and a
    left/right bias) to the votes that count; ties count half each way.

    ``prior_scores`` (one per image of :func:`voted_images`): a scorer's opinion as the
    prior, its weight learned by EM (:mod:`doohable.ranking.prior`), warm-started from the
    weight learned by an earlier fit (``start``)."""
    items = IdIndex(voted_images(rows))
    ids = np.array(items.ids, dtype=np.int64)
    if not rows:
        empty = np.zeros(0)
        return BTFit(last_id, ids, empty, empty, np.zeros(0, dtype=np.int64), time.time())
    voters = IdIndex(sorted({r.voter_id for r in rows}))
    comps = comparisons_from_log(rows, items, voters)
    if prior_scores is None:
        fit = bradley_terry.fit(comps, crowd=True)
        return BTFit(last_id, ids, fit.ratings, fit.std, comps.counts(), time.time())
    prior = ModelPrior.from_scores(prior_scores)
    if start is not None:
        prior = replace(prior, b=start.b, tau2=start.tau2)
    fit, learned = model_prior.fit(comps, prior, crowd=True)
    return BTFit(last_id, ids, fit.ratings, fit.std, comps.counts(), time.time(), learned)


def fit_key(session: Session) -> FitKey:
    """What a BT fit of the database depends on: the log's last id, the stored images (count
    and id sum: a deleted image changes them) and the prior model (a promotion changes it)."""
    n, total = session.execute(select(func.count(), func.coalesce(func.sum(Image.id), 0))).one()
    return last_log_id(session), int(n), int(total), prior_model(session)


def bt_fit(session: Session, *, max_stale_s: float = 0.0) -> BTFit:
    """The BT fit of the current log, cached by :func:`fit_key` (per database). Votes that name
    a deleted image are left out (:func:`~doohable.voting.log.without_deleted_images`).

    With ``max_stale_s`` > 0 a cached fit that old or younger is returned even if votes came
    in since (for progress indicators that must stay cheap).
    """
    key = fit_key(session)
    with _bt_lock:
        hit = _bt_cache.get(db_key(session))
        if hit is not None and (hit[0] == key or time.time() - hit[1].fitted_at <= max_stale_s):
            return hit[1]
    votes = effective_votes(session)
    rows, _ = without_deleted_images(session, votes)
    scores = prior_scores(session, voted_images(rows))
    # the weight learned for the same prior model is a good start; another model's is not
    start = hit[1].prior if hit is not None and hit[0][3] == key[3] else None
    fit = replace(fit_bt(rows, key[0], scores, start), deleted_votes=len(votes) - len(rows))
    with _bt_lock:
        _bt_cache[db_key(session)] = (key, fit)
    return fit


def ratings(session: Session, method: str = ELO) -> list[RatingRow]:
    """Current ratings by ``method`` (``elo`` incremental, ``bt`` refitted), best first."""
    if method == ELO:
        # an inner join: an image deleted with foreign keys off may have left its row
        stmt = (select(Rating.image_id, Rating.rating, Rating.votes)
                .join(Image, Image.id == Rating.image_id).where(Rating.method == ELO))
        out = [RatingRow(i, float(r), None, int(n)) for i, r, n in session.execute(stmt)]
    elif method == BT:
        fit = bt_fit(session)
        out = [
            RatingRow(int(i), float(r), float(s), int(n))
            for i, r, s, n in zip(fit.image_ids, fit.rating, fit.std, fit.votes, strict=True)
        ]
    else:
        raise VotingError(f"unknown rating method {method!r}; choose one of {', '.join(METHODS)}")
    return sorted(out, key=lambda row: (-row.rating, row.image_id))


@dataclass(frozen=True)
class RebuildReport:
    """What :func:`rebuild_ratings` did: log rows replayed, images rated, the largest Elo change
    made, and the counted votes left out of Bradley–Terry because they name a deleted image."""

    log_rows: int
    images: int
    max_elo_change: float
    deleted_votes: int = 0


def rebuild_ratings(session: Session) -> RebuildReport:
    """Recompute every rating from the log and store it (Elo exactly, BT refitted).

    Rows are written for images still in the database only. Elo replays the whole log (a game
    against an image deleted since still moved its opponent); BT fits the votes between stored
    images, and its rows of images it no longer rates are removed. A deleted image's own Elo
    row, if left behind, is kept as the votes made it (an undo of its vote needs it) and is
    never served."""
    # a write first (on SQLite: the write lock), then lock every rating row
    begin_write(session)
    session.execute(update(Rating).where(Rating.method == ELO).values(votes=Rating.votes))
    rows = {(r.image_id, r.method): r for r in session.scalars(select(Rating).with_for_update())}
    stored = set(session.scalars(select(Image.id)))
    log = log_rows(session)
    state = elo.replay_log(log)
    max_change = 0.0
    for (image_id, method), row in rows.items():
        if method == ELO and image_id in stored and image_id not in state.ratings:
            max_change = max(max_change, abs(row.rating - ELO_START))
            row.rating, row.votes = ELO_START, 0
    rated = {i: v for i, v in state.ratings.items() if i in stored}
    for image_id, value in rated.items():
        elo_row = rows.get((image_id, ELO))
        if elo_row is None:
            elo_row = Rating(image_id=image_id, method=ELO, rating=ELO_START, votes=0)
            session.add(elo_row)
        max_change = max(max_change, abs(elo_row.rating - value))
        elo_row.rating, elo_row.votes = value, state.votes[image_id]
    fit = bt_fit(session)
    fitted = set(fit.image_ids.tolist())
    for key in [k for k in rows if k[1] == BT and k[0] not in fitted]:  # no counted vote any more
        session.delete(rows.pop(key))
    for i, r, s, n in zip(fit.image_ids, fit.rating, fit.std, fit.votes, strict=True):
        bt_row = rows.get((int(i), BT))
        if bt_row is None:
            bt_row = Rating(image_id=int(i), method=BT, rating=0.0, votes=0)
            session.add(bt_row)
        bt_row.rating, bt_row.uncertainty, bt_row.votes = float(r), float(s), int(n)
    session.flush()
    return RebuildReport(log_rows=len(log), images=len(rated), max_elo_change=max_change,
                         deleted_votes=fit.deleted_votes)


# --------------------------------------------------------------------------- voters


SETTLED_TTL_S = 10.0
_settled_cache: dict[str, tuple[float, float, float | None]] = {}


def ranking_settled(session: Session) -> tuple[float, float | None]:
    """(share of settled image pairs, mean posterior std), recomputed at most every 10 s.

    From this process's scheduler state when it has one (kept current vote by vote),
    else from a BT fit of the log; never-compared images count as unsettled."""
    key = db_key(session)
    now = time.monotonic()
    hit = _settled_cache.get(key)
    if hit is not None and now - hit[0] < SETTLED_TTL_S:
        return hit[1], hit[2]
    live = live_states.current(session)
    if live is not None:
        rating, std = live.posterior()
        n_images = len(rating)
    else:
        fit = bt_fit(session)
        rating, std = fit.rating, fit.std
        n_images = int(session.scalar(select(func.count()).select_from(Image).where(*ELIGIBLE)) or 0)
    settled = settled_share(rating, std) if len(rating) else 0.0
    settled *= (len(rating) * (len(rating) - 1)) / max(n_images * (n_images - 1), 1)
    mean_std = float(np.mean(std)) if len(std) else None
    _settled_cache[key] = (now, settled, mean_std)
    return settled, mean_std


def voter_stats(session: Session, voter_id: int) -> dict[str, Any]:
    """The voter's votes today (UTC) and in total (undone ones left out), and how settled
    the whole ranking is (share of image pairs whose order BT knows at 95 %)."""
    day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    mine = effective_votes(session, voter_id)
    since = set(session.scalars(select(Vote.id).where(Vote.voter_id == voter_id, Vote.created_at >= day)))
    today = sum(1 for r in mine if r.id in since)
    total = len(mine)
    settled, mean_std = ranking_settled(session)
    return {"today": today, "total": total, "settled": round(settled, 4), "mean_uncertainty": mean_std}

