"""Ratings from the vote log: Elo (stored, exact replay), Bradley–Terry (refitted, cached by
the log's last id), how settled the ranking is, and a voter's own counts.

Bradley–Terry ratings (with posterior uncertainty) are refitted from the log on read and
cached by the id of the last row of the log.
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
from doohable.voting.log import effective_votes, last_log_id, log_rows
from doohable.voting.prior import prior_scores
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


_bt_cache: dict[str, BTFit] = {}
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


def bt_fit(session: Session, *, max_stale_s: float = 0.0) -> BTFit:
    """The BT fit of the current log, cached by the log's last id (per database).

    With ``max_stale_s`` > 0 a cached fit that old or younger is returned even if votes came
    in since (for progress indicators that must stay cheap).
    """
    key = db_key(session)
    last = last_log_id(session)
    with _bt_lock:
        cached = _bt_cache.get(key)
        if cached is not None and (
            cached.last_id == last or time.time() - cached.fitted_at <= max_stale_s
        ):
            return cached
    rows = effective_votes(session)
    scores = prior_scores(session, voted_images(rows))
    fit = fit_bt(rows, last, scores, cached.prior if cached is not None else None)
    with _bt_lock:
        _bt_cache[key] = fit
    return fit


def ratings(session: Session, method: str = ELO) -> list[RatingRow]:
    """Current ratings by ``method`` (``elo`` incremental, ``bt`` refitted), best first."""
    if method == ELO:
        stmt = select(Rating.image_id, Rating.rating, Rating.votes).where(Rating.method == ELO)
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
    """What :func:`rebuild_ratings` did: log rows replayed and the largest Elo change made."""

    log_rows: int
    images: int
    max_elo_change: float


def rebuild_ratings(session: Session) -> RebuildReport:
    """Recompute every rating from the log and store it (Elo exactly, BT refitted)."""
    # a write first (on SQLite: the write lock), then lock every rating row
    begin_write(session)
    session.execute(update(Rating).where(Rating.method == ELO).values(votes=Rating.votes))
    rows = {(r.image_id, r.method): r for r in session.scalars(select(Rating).with_for_update())}
    log = log_rows(session)
    state = elo.replay_log(log)
    max_change = 0.0
    for (image_id, method), row in rows.items():
        if method == ELO and image_id not in state.ratings:
            max_change = max(max_change, abs(row.rating - ELO_START))
            row.rating, row.votes = ELO_START, 0
    for image_id, value in state.ratings.items():
        elo_row = rows.get((image_id, ELO))
        if elo_row is None:
            elo_row = Rating(image_id=image_id, method=ELO, rating=ELO_START, votes=0)
            session.add(elo_row)
        max_change = max(max_change, abs(elo_row.rating - value))
        elo_row.rating, elo_row.votes = value, state.votes[image_id]
    fit = bt_fit(session)
    for i, r, s, n in zip(fit.image_ids, fit.rating, fit.std, fit.votes, strict=True):
        bt_row = rows.get((int(i), BT))
        if bt_row is None:
            bt_row = Rating(image_id=int(i), method=BT, rating=0.0, votes=0)
            session.add(bt_row)
        bt_row.rating, bt_row.uncertainty, bt_row.votes = float(r), float(s), int(n)
    session.flush()
    return RebuildReport(log_rows=len(log), images=len(state.ratings), max_elo_change=max_change)


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

