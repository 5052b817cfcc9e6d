"""This process's scheduler state per database, kept current from the vote log.

The scheduler (:mod:`doohable.ranking.scheduler`) works on an in-memory
:class:`~doohable.ranking.state.RatingState`; each request first applies the log rows added
since the last one (by any process), so every process schedules from every vote. A full
Bradley–Terry refit runs in a background thread on a copy and is then adopted.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Table, bindparam, func, or_, select
from sqlalchemy.orm import Session

from doohable.ranking import scheduler as schedulers
from doohable.ranking.scheduler import ActiveScheduler, Scheduler
from doohable.ranking.state import RatingState
from doohable.ranking.votes import IdIndex, LogRow, comparisons_from_log, outcome_of
from doohable.store.models import Image, Rating, Setting, Vote
from doohable.voting.common import (
    DEFAULT_SCHEDULER,
    ELIGIBLE,
    ELO,
    SCHEDULER_SETTING,
    ConflictError,
    PairImage,
    db_key,
)
from doohable.voting.log import effective_votes, last_log_id
from doohable.voting.prior import prior_model, prior_scores

log = logging.getLogger(__name__)
REFIT_MIN_INTERVAL_S = 2.0  # the scheduler's background BT refit runs at most this often
REBUILD_AFTER_UNDO_S = 30.0  # an undo makes the scheduler's state rebuild, at most this often
RECHECK_S = 2.0  # how often a process checks for new images and a new scheduler setting
MAX_EXTEND = 500  # more new images than this at once: rebuild the state instead of extending it
MAX_HIDDEN = 0.25  # more than this share of the state no longer showable: rebuild it

_VOTES, _RATINGS = Vote.__table__, Rating.__table__
assert isinstance(_VOTES, Table) and isinstance(_RATINGS, Table)
_LOG_AFTER = (
    select(_VOTES.c.id, _VOTES.c.left_id, _VOTES.c.right_id, _VOTES.c.winner_id, _VOTES.c.undoes_vote_id,
           _VOTES.c.voter_id)
    .where(_VOTES.c.id > bindparam("b_after")).order_by(_VOTES.c.id)
)
_ELO_IMAGES = select(_RATINGS.c.image_id).where(_RATINGS.c.method == ELO)


def active_scheduler(session: Session) -> str:
    """The scheduler name set by an admin (Setting ``scheduler``), else the default."""
    value = session.scalar(select(Setting.value).where(Setting.key == SCHEDULER_SETTING))
    name = value.get("name") if isinstance(value, dict) else None
    return str(name) if name else DEFAULT_SCHEDULER


def _showable(session: Session) -> list[PairImage]:
    """The images pairs may show, by id."""
    rows = session.execute(select(Image.id, Image.sha256, Image.format).where(*ELIGIBLE).order_by(Image.id))
    return [PairImage(*r) for r in rows]


@dataclass
class Live:
    """One process's scheduler state for one database; use it with ``lock`` held."""

    name: str
    signature: tuple[int, int, int]
    images: list[PairImage]
    index: dict[int, int]
    state: RatingState
    scheduler: Scheduler
    last_id: int
    built_at: float
    checked_at: float = 0.0
    refitting: bool = False
    refitted_at: float = 0.0  # when the last background refit started (monotonic)
    has_elo_rows: set[int] = field(default_factory=set)
    prior_model: tuple[str, str] | None = None  # whose scores are the prior (name, version)
    dirty: bool = False  # an undo arrived: rebuild (at most every REBUILD_AFTER_UNDO_S)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, session: Session, name: str, signature: tuple[int, int, int]) -> Live:
        """Replay the log's counted votes between shown images into a fresh state."""
        images = _showable(session)
        index = {img.id: k for k, img in enumerate(images)}
        last = last_log_id(session)
        votes = [r for r in effective_votes(session) if r.left_id in index and r.right_id in index]
        comps = comparisons_from_log(votes, IdIndex(index))
        try:
            sched = schedulers.create(name)
        except ValueError:  # an unknown name in the settings table: keep serving pairs
            sched = schedulers.create(DEFAULT_SCHEDULER)
        scores = prior_scores(session, [img.id for img in images])
        state = RatingState.from_comparisons(comps, prior_scores=scores)
        live = cls(name, signature, images, index, state, sched, last, time.monotonic())
        live.prior_model = prior_model(session)
        live.has_elo_rows.update(session.scalars(_ELO_IMAGES))
        return live

    def extend(self, session: Session, signature: tuple[int, int, int]) -> bool:
        """Follow a change of the showable images without replaying the log: images that left
        are hidden (their votes keep counting; pairs no longer show them), new ones are added at
        the prior (the model's estimate, if any). False, and the caller rebuilds, when more than
        :data:`MAX_HIDDEN` of the state would be hidden, more than :data:`MAX_EXTEND` images are
        new, or a vote already names a new image."""
        showable = {img.id: img for img in _showable(session)}
        new = [img for i, img in showable.items() if i not in self.index]
        hidden = {k for i, k in self.index.items() if i not in showable}
        if len(new) > MAX_EXTEND or len(hidden) > MAX_HIDDEN * (len(self.images) + len(new)):
            return False
        new_ids = [img.id for img in new]
        if new_ids and session.scalar(select(func.count()).select_from(Vote)
                                      .where(or_(Vote.left_id.in_(new_ids), Vote.right_id.in_(new_ids)))):
            return False
        scores = None
        if new and self.state.prior is not None:
            scores = prior_scores(session, [img.id for img in self.images] + new_ids)
        with self.lock:
            if new:
                self.state.add_items(len(new), scores)
            for img in new:
                self.index[img.id] = len(self.images)
                self.images.append(img)
            self.state.hidden = hidden
            self.signature = signature
        return True

    def showable_indices(self) -> list[int]:
        """Indices of the images pairs may show."""
        return [k for k in range(len(self.images)) if k not in self.state.hidden]

    def stale(self, now: float) -> bool:
        """An undo arrived long enough ago that the state must be rebuilt."""
        return self.dirty and now - self.built_at > REBUILD_AFTER_UNDO_S

    def catch_up(self, session: Session) -> None:
        """Apply the log rows added since ``last_id`` to the state."""
        rows = session.connection().execute(_LOG_AFTER, {"b_after": self.last_id}).all()
        for row in (LogRow(*r) for r in rows):
            self.last_id = row.id
            if row.undoes_vote_id is not None:
                self.dirty = True
            elif row.left_id in self.index and row.right_id in self.index:
                y = outcome_of(row.left_id, row.right_id, row.winner_id)
                self.state.record(self.index[row.left_id], self.index[row.right_id], y, row.voter_id)
        if rows and self.refit_due():
            self.refit_in_background()

    def refit_due(self) -> bool:
        """The scheduler's own rule (:meth:`ActiveScheduler.refit_due`: refit when the log grew
        enough), at most every :data:`REFIT_MIN_INTERVAL_S`; between refits each vote updates the
        posterior online."""
        if not isinstance(self.scheduler, ActiveScheduler) or self.refitting:  # random / report: no posterior
            return False
        if time.monotonic() - self.refitted_at < REFIT_MIN_INTERVAL_S:
            return False
        return self.scheduler.refit_due(self.state)

    def refit_in_background(self) -> None:
        """Refit BT on a snapshot in a thread, then adopt it: a refit (O(n^3) for the posterior
        std) must not stall every request of this process. Called with ``lock`` held."""
        self.refitting, self.refitted_at = True, time.monotonic()
        snapshot = copy.deepcopy(self.state)

        def work() -> None:
            try:
                snapshot.refit(crowd=getattr(self.scheduler, "crowd", True))
                with self.lock:
                    self.state.adopt(snapshot)
            except Exception:  # keep serving with the online approximation
                log.exception("background BT refit failed")
            finally:
                self.refitting = False

        threading.Thread(target=work, name="doohable-bt-refit", daemon=True).start()

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of every showable image's rating, copied under the lock."""
        with self.lock:
            keep = self.showable_indices() if self.state.hidden else slice(None)
            return self.state.mean[keep].copy(), np.sqrt(self.state.var[keep])


_live: dict[str, Live] = {}
_live_lock = threading.Lock()


def _signature(session: Session) -> tuple[int, int, int]:
    """Changes whenever the set of images that can be shown changes."""
    n, top, total = session.execute(
        select(func.count(), func.coalesce(func.max(Image.id), 0), func.coalesce(func.sum(Image.id), 0))
        .where(*ELIGIBLE)
    ).one()
    return int(n), int(top), int(total)


def current(session: Session) -> Live | None:
    """This process's state for the session's database, if it has one (never builds)."""
    return _live.get(db_key(session))


def live_state(session: Session, name: str | None) -> Live:
    """This process's scheduler state for the session's database, current with the log.

    New images and a changed scheduler setting are looked for every :data:`RECHECK_S`."""
    key = db_key(session)
    now = time.monotonic()
    live = _live.get(key)
    if live is not None and now - live.checked_at < RECHECK_S and name in (None, live.name) \
            and not live.stale(now):
        return live
    name = name or active_scheduler(session)
    signature = _signature(session)
    model = prior_model(session)
    if signature[0] < 2:
        raise ConflictError("there are fewer than two images to compare; ingest some first")
    with _live_lock:
        live = _live.get(key)
        if live is None or live.name != name or live.stale(now) or live.prior_model != model \
                or (live.signature != signature and not live.extend(session, signature)):
            live = _live[key] = Live.build(session, name, signature)
        live.checked_at = now
    return live

