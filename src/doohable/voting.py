"""The voting service: the one place that the API, the pages, Slack and the CLI call.

A voter asks for a pair (:func:`next_pair`), which issues a single-use pair token stored
before it is returned; the vote (:func:`record_vote`) consumes the token, appends a row to
the vote log and updates the Elo ratings *in the same transaction*. An undo
(:func:`undo_last`) appends a row that reverses the Elo change the undone vote made; a
skip (:func:`skip_pair`) consumes the token without a vote. Nothing is ever updated or
deleted in the log, and :func:`rebuild_ratings` replays it exactly.

Why the replay equals the incremental ratings, even with several server processes:
a vote first claims its token with a write (on SQLite this takes the database's single
write lock, so everything after it is serialised), then locks the two rating rows in
image-id order (``SELECT ... FOR UPDATE`` on PostgreSQL) and only then inserts the vote,
so two votes that share an image get ids in the order they changed that image's rating.
Votes on disjoint images commute. Hence applying the log in id order gives bit-identical
ratings.

Bradley-Terry ratings (with posterior uncertainty) are refitted from the log on read and
cached by the id of the last row of the log.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Engine, Table, bindparam, event, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from doohable.store.models import Image, PairToken, Rating, Setting, Status, User, Vote
from doohable.store.users import add_user

log = logging.getLogger(__name__)
# Core tables for the hot path (one vote = a few plain statements, no ORM unit of work)
VOTES = cast(Table, Vote.__table__)
RATINGS = cast(Table, Rating.__table__)
TOKENS = cast(Table, PairToken.__table__)
ELO_K = 10.0  # the report's K factor
ELO_SCALE = 200.0  # the report's divisor: E = 1 / (1 + 10^((R2 - R1) / 200))
ELO_START = 0.0  # the report's starting rating
ELO, BT = "elo", "bt"
METHODS = (ELO, BT)
DEFAULT_SCHEDULER = "active"  # the ranking engine's best (see docs/benchmarks.md)
SCHEDULER_SETTING = "scheduler"  # Setting row {"name": ...} that selects the active scheduler
_rng = np.random.default_rng()  # used under a lock (Generators are not thread-safe)
REFIT_MIN_INTERVAL_S = 2.0  # the scheduler's background BT refit runs at most this often

# The hot path's statements, built once (no per-call construction; SQLAlchemy memoises their
# cache keys) and run on the session's Core connection.
_LOG_COLUMNS = (VOTES.c.id, VOTES.c.left_id, VOTES.c.right_id, VOTES.c.winner_id, VOTES.c.undoes_vote_id,
                VOTES.c.voter_id)
_LOG_AFTER = select(*_LOG_COLUMNS).where(VOTES.c.id > bindparam("b_after")).order_by(VOTES.c.id)
_ISSUE_TOKEN = insert(TOKENS)
_TOKEN_ROW = select(TOKENS.c.voter_id, TOKENS.c.left_id, TOKENS.c.right_id).where(
    TOKENS.c.token == bindparam("b_token")
)
# the claim: exactly one transaction marks a token used (and learns its pair)
_CLAIM = (
    update(TOKENS)
    .where(TOKENS.c.token == bindparam("b_token"), TOKENS.c.voter_id == bindparam("b_voter"),
           TOKENS.c.used_at.is_(None))
    .values(used_at=bindparam("b_now"))
    .returning(TOKENS.c.left_id, TOKENS.c.right_id)
)
_UNCLAIM = update(TOKENS).where(TOKENS.c.token == bindparam("b_token")).values(used_at=None)
_VOTE_OF_TOKEN = select(VOTES.c.id).where(VOTES.c.pair_token == bindparam("b_token"))
_INSERT_VOTE = insert(VOTES).returning(VOTES.c.id)
_LOCK_ELO_PAIR = (
    select(RATINGS.c.image_id, RATINGS.c.rating, RATINGS.c.votes)
    .where(RATINGS.c.method == ELO, RATINGS.c.image_id.in_([bindparam("b_a"), bindparam("b_b")]))
    .order_by(RATINGS.c.image_id)
    .with_for_update()
)
_STORE_ELO = (
    update(RATINGS)
    .where(RATINGS.c.image_id == bindparam("b_id"), RATINGS.c.method == ELO)
    .values(rating=bindparam("b_rating"), votes=bindparam("b_votes"), updated_at=bindparam("b_now"))
)
_ELO_IMAGES = select(RATINGS.c.image_id).where(RATINGS.c.method == ELO)


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


@dataclass(frozen=True)
class LogRow:
    """One row of the vote log as the rating replay needs it."""

    id: int
    left_id: int
    right_id: int
    winner_id: int | None
    undoes_vote_id: int | None
    voter_id: int = 0


@dataclass
class EloState:
    """Elo ratings after replaying a log: ratings, vote counts and the change each vote made."""

    ratings: dict[int, float] = field(default_factory=dict)
    votes: dict[int, int] = field(default_factory=dict)
    deltas: dict[int, tuple[int, float, int, float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- Elo (pure)


def elo_game(r_left: float, r_right: float, winner: str | None) -> tuple[float, float]:
    """New (left, right) Elo ratings after one vote; ``winner`` is "left", "right" or None (tie).

    The report's Elo (K = 10, divisor 200; a tie scores 0.5 each), from
    :func:`doohable.ranking.elo.update_scores`.
    """
    from doohable.ranking import elo

    s_left = {"left": 1.0, "right": 0.0, None: 0.5}[winner]
    new_l, new_r = elo.update_scores(r_left, r_right, s_left, k=ELO_K, scale=ELO_SCALE)
    return float(new_l), float(new_r)


def _side(row_left: int, row_right: int, winner_id: int | None) -> str | None:
    if winner_id is None:
        return None
    return "left" if winner_id == row_left else "right"


def replay_elo(rows: Iterable[LogRow]) -> EloState:
    """Replay a vote log (in id order) into Elo ratings, exactly as the incremental path.

    A vote applies :func:`elo_game` (a tie, "can't decide", scores half each); an undo row
    subtracts the change the undone vote made and its count.
    """
    state = EloState()
    r, n = state.ratings, state.votes
    for row in rows:
        if row.undoes_vote_id is not None:
            if row.undoes_vote_id in state.deltas:
                a, da, b, db = state.deltas[row.undoes_vote_id]
                r[a], r[b] = r[a] - da, r[b] - db
                n[a] -= 1
                n[b] -= 1
            continue
        a, b = row.left_id, row.right_id
        for i in (a, b):
            r.setdefault(i, ELO_START)
            n[i] = n.get(i, 0) + 1
        new_a, new_b = elo_game(r[a], r[b], _side(a, b, row.winner_id))
        state.deltas[row.id] = (a, new_a - r[a], b, new_b - r[b])
        r[a], r[b] = new_a, new_b
    return state


# --------------------------------------------------------------------------- log reads


def _log_rows(session: Session, up_to: int | None = None) -> list[LogRow]:
    stmt = select(
        Vote.id, Vote.left_id, Vote.right_id, Vote.winner_id, Vote.undoes_vote_id, Vote.voter_id
    ).order_by(Vote.id)
    if up_to is not None:
        stmt = stmt.where(Vote.id <= up_to)
    return [LogRow(*row) for row in session.execute(stmt)]


def effective_votes(session: Session) -> list[LogRow]:
    """The votes that count, ties included: not undone and not undo rows (id order)."""
    undone = select(Vote.undoes_vote_id).where(Vote.undoes_vote_id.is_not(None))
    stmt = (
        select(Vote.id, Vote.left_id, Vote.right_id, Vote.winner_id, Vote.undoes_vote_id, Vote.voter_id)
        .where(Vote.undoes_vote_id.is_(None), Vote.id.not_in(undone))
        .order_by(Vote.id)
    )
    return [LogRow(*row) for row in session.execute(stmt)]


def last_log_id(session: Session) -> int:
    """The id of the last row of the log (0 when empty)."""
    return int(session.scalar(select(func.coalesce(func.max(Vote.id), 0))) or 0)


# --------------------------------------------------------------------------- pairs


def active_scheduler(session: Session) -> str:
    """The scheduler name set by an admin (Setting ``scheduler``), else the default."""
    value = session.scalar(select(Setting.value).where(Setting.key == SCHEDULER_SETTING))
    name = value.get("name") if isinstance(value, dict) else None
    return str(name) if name else DEFAULT_SCHEDULER


_db_keys: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _db_key(session: Session) -> str:
    """The database a session works on, as the key of this process's caches and locks."""
    engine = session.get_bind().engine
    key = _db_keys.get(engine)
    if key is None:
        key = _db_keys[engine] = str(engine.url)
    return key


_ELIGIBLE = (Image.status != Status.rejected.value, Image.near_duplicate_of.is_(None))
REBUILD_AFTER_UNDO_S = 30.0  # an undo makes the scheduler's state rebuild, at most this often
RECHECK_S = 2.0  # how often a process checks for new images and a new scheduler setting


@dataclass
class _Live:
    """One process's scheduler state for one database, kept current from the log.

    The scheduler (:mod:`doohable.ranking.scheduler`) works on an in-memory
    :class:`~doohable.ranking.state.RatingState`; each request first applies the log rows
    added since the last one (by any process), so every process schedules from every vote.
    """

    name: str
    signature: tuple[int, int, int]
    images: list[PairImage]
    index: dict[int, int]
    state: Any  # doohable.ranking.state.RatingState
    scheduler: Any  # doohable.ranking.scheduler.Scheduler
    last_id: int
    built_at: float
    checked_at: float = 0.0
    refitting: bool = False
    refitted_at: float = 0.0  # when the last background refit started (monotonic)
    has_elo_rows: set[int] = field(default_factory=set)
    dirty: bool = False  # an undo arrived: rebuild (at most every REBUILD_AFTER_UNDO_S)
    lock: threading.Lock = field(default_factory=threading.Lock)


_live: dict[str, _Live] = {}
_live_lock = threading.Lock()


def _signature(session: Session) -> tuple[int, int, int]:
    """Changes whenever the set of images that can be shown changes."""
    n, top, total = session.execute(
        select(func.count(), func.coalesce(func.max(Image.id), 0), func.coalesce(func.sum(Image.id), 0))
        .where(*_ELIGIBLE)
    ).one()
    return int(n), int(top), int(total)


def _build_live(session: Session, name: str, signature: tuple[int, int, int]) -> _Live:
    from doohable.ranking import scheduler
    from doohable.ranking.state import RatingState
    from doohable.ranking.votes import Comparisons, outcome_of

    rows = session.execute(select(Image.id, Image.sha256, Image.format).where(*_ELIGIBLE).order_by(Image.id))
    images = [PairImage(*r) for r in rows]
    index = {img.id: k for k, img in enumerate(images)}
    last = last_log_id(session)
    log = [r for r in effective_votes(session) if r.left_id in index and r.right_id in index]
    comps = Comparisons(
        len(images),
        np.array([index[r.left_id] for r in log], dtype=np.int64),
        np.array([index[r.right_id] for r in log], dtype=np.int64),
        np.array([outcome_of(r.left_id, r.right_id, r.winner_id) for r in log]),
        np.array([r.voter_id for r in log], dtype=np.int64),
        n_voters=max([r.voter_id for r in log], default=0) + 1,
    )
    try:
        sched = scheduler.create(name)
    except ValueError:  # an unknown name in the settings table: keep serving pairs
        sched = scheduler.create(DEFAULT_SCHEDULER)
    state = RatingState.from_comparisons(comps)
    live = _Live(name, signature, images, index, state, sched, last, time.monotonic())
    live.has_elo_rows.update(session.scalars(_ELO_IMAGES))
    return live


def _catch_up(session: Session, live: _Live) -> None:
    """Apply the log rows added since ``live.last_id`` to the scheduler's state."""
    from doohable.ranking.votes import outcome_of

    rows = session.connection().execute(_LOG_AFTER, {"b_after": live.last_id}).all()
    for row in (LogRow(*r) for r in rows):
        live.last_id = row.id
        if row.undoes_vote_id is not None:
            live.dirty = True
        elif row.left_id in live.index and row.right_id in live.index:
            y = outcome_of(row.left_id, row.right_id, row.winner_id)
            live.state.record(live.index[row.left_id], live.index[row.right_id], y, row.voter_id)
    if rows and _refit_due(live):
        _refit_in_background(live)


def _refit_due(live: _Live) -> bool:
    """The scheduler's own rule (``refit_growth``: refit when the log grew enough), at most
    every :data:`REFIT_MIN_INTERVAL_S`; between refits each vote updates the posterior online."""
    growth = getattr(live.scheduler, "refit_growth", None)
    if growth is None or live.refitting:  # random / report schedulers need no posterior
        return False
    if time.monotonic() - live.refitted_at < REFIT_MIN_INTERVAL_S:
        return False
    st = live.state
    return bool(st.n_votes - st.votes_at_refit >= max(st.n_items // 4, int(growth * st.votes_at_refit)))


def _refit_in_background(live: _Live) -> None:
    """Refit BT on a snapshot in a thread, then adopt it: a refit (O(n^3) for the posterior
    std) must not stall every request of this process. Called with ``live.lock`` held."""
    live.refitting, live.refitted_at = True, time.monotonic()
    snapshot = copy.deepcopy(live.state)

    def work() -> None:
        try:
            snapshot.refit(crowd=getattr(live.scheduler, "crowd", True))
            with live.lock:
                st, n_voters = live.state, live.state.reliability.size
                st.mean, st.var, st.left_bias = snapshot.mean.copy(), snapshot.var.copy(), snapshot.left_bias
                rel = snapshot.reliability
                st.reliability = np.concatenate([rel, np.ones(max(0, n_voters - rel.size))])
                st.votes_at_refit = snapshot.n_votes
        except Exception:  # keep serving with the online approximation
            log.exception("background BT refit failed")
        finally:
            live.refitting = False

    threading.Thread(target=work, name="doohable-bt-refit", daemon=True).start()


def _live_state(session: Session, name: str | None) -> _Live:
    """This process's scheduler state for the session's database, current with the log.

    New images and a changed scheduler setting are looked for every :data:`RECHECK_S`."""
    key = _db_key(session)
    now = time.monotonic()
    live = _live.get(key)
    if live is not None and now - live.checked_at < RECHECK_S and name in (None, live.name) and not (
        live.dirty and now - live.built_at > REBUILD_AFTER_UNDO_S
    ):
        return live
    name = name or active_scheduler(session)
    signature = _signature(session)
    if signature[0] < 2:
        raise ConflictError("there are fewer than two images to compare; ingest some first")
    with _live_lock:
        live = _live.get(key)
        stale = live is None or live.signature != signature or live.name != name or (
            live.dirty and now - live.built_at > REBUILD_AFTER_UNDO_S
        )
        if stale:
            live = _live[key] = _build_live(session, name, signature)
        assert live is not None
        live.checked_at = now
    return live


def next_pair(
    session: Session, voter_id: int, *, rng: np.random.Generator | None = None, scheduler: str | None = None
) -> Pair:
    """Choose the next pair for a voter with the active scheduler, store its single-use
    token, return it.

    Raises :class:`ConflictError` when fewer than two images can be shown. A voter who has
    seen every pair gets a random one again.
    """
    from doohable.ranking.scheduler import NoPairAvailable

    rng = rng or _rng
    live = _live_state(session, scheduler)
    with live.lock:
        _catch_up(session, live)
        try:
            i, j = live.scheduler.next_pair(live.state, rng, voter=voter_id)
        except (NoPairAvailable, ValueError) as e:
            # NoPairAvailable: this voter has seen every pair (a small pool). ValueError: a
            # scheduler bug must not stop voting. Either way: a uniformly random pair.
            if not isinstance(e, NoPairAvailable):
                log.warning("scheduler %s failed (%s); random pair instead", live.name, e)
            i, j = (int(x) for x in rng.choice(len(live.images), 2, replace=False))
        if rng.random() < 0.5:  # the side an image appears on never depends on the scheduler
            i, j = j, i
        left, right = live.images[i], live.images[j]
    if left.id == right.id:
        raise VotingError(f"the scheduler proposed the same image twice ({left.id})")
    token = secrets.token_urlsafe(24)
    _begin_write(session)
    if not live.has_elo_rows.issuperset((left.id, right.id)):
        _create_elo_rows(session, (left.id, right.id))  # committed with the token, before any vote
        live.has_elo_rows.update((left.id, right.id))
    session.connection().execute(
        _ISSUE_TOKEN,
        {"token": token, "voter_id": voter_id, "left_id": left.id, "right_id": right.id,
         "issued_at": dt.datetime.now(dt.UTC)},
    )
    return Pair(token=token, left=left, right=right)


_writer_locks: dict[str, threading.Lock] = {}


def _begin_write(session: Session) -> None:
    """On SQLite, queue this process's writers on a lock until their transaction ends.

    SQLite has one writer at a time and its busy handler sleeps up to 100 ms between tries,
    so threads that wait in SQLite pile up latency; waiting on a Python lock hands over at
    once. PostgreSQL needs none of this (row locks)."""
    if session.get_bind().dialect.name != "sqlite" or "doohable_writer" in session.info:
        return
    key = _db_key(session)
    lock = _writer_locks.get(key)
    if lock is None:
        with _live_lock:
            lock = _writer_locks.setdefault(key, threading.Lock())
    lock.acquire()
    session.info["doohable_writer"] = lock


@event.listens_for(Session, "after_transaction_end")
def _release_writer(session: Session, transaction: Any) -> None:
    """Release the writer lock of :func:`_begin_write` when the session's transaction ends
    (one listener for every session: a listener per session costs more than a vote)."""
    if transaction.parent is None and "doohable_writer" in session.info:
        session.info.pop("doohable_writer").release()


def _token_row(conn: Connection, voter_id: int, pair_token: str) -> tuple[int, int]:
    """The (left, right) image ids of the voter's pair token; NotFoundError otherwise."""
    row = conn.execute(_TOKEN_ROW, {"b_token": pair_token}).first()
    if row is None or row[0] != voter_id:
        raise NotFoundError("unknown pair token for this voter; ask for a new pair")
    return int(row[1]), int(row[2])


def _claim(conn: Connection, voter_id: int, pair_token: str) -> tuple[int, int] | None:
    """Mark the voter's token used, atomically, and return its (left, right) image ids; None
    if it is unknown, another voter's or already used. This write comes first so that on
    SQLite the rest of the transaction runs under the write lock; on PostgreSQL a concurrent
    claim of the same token waits for this transaction and then finds it used."""
    row = conn.execute(
        _CLAIM, {"b_token": pair_token, "b_voter": voter_id, "b_now": dt.datetime.now(dt.UTC)}
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def _check_winner(left_id: int, right_id: int, winner_id: int | None) -> None:
    if winner_id is not None and winner_id not in (left_id, right_id):
        raise VotingError(f"winner_id must be {left_id}, {right_id} or null (can't decide)")


@dataclass
class _EloRow:
    rating: float
    votes: int


_CREATE_ELO = {
    "postgresql": postgresql.insert(RATINGS).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(RATINGS).on_conflict_do_nothing(),
}


def _create_elo_rows(session: Session, image_ids: Sequence[int]) -> None:
    """Create the missing Elo rows of these images (``INSERT ... ON CONFLICT DO NOTHING``)."""
    dialect = session.get_bind().dialect.name
    if dialect not in _CREATE_ELO:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise VotingError(f"unsupported database {dialect}")
    now = dt.datetime.now(dt.UTC)
    values = [{"image_id": i, "method": ELO, "rating": ELO_START, "votes": 0, "updated_at": now}
              for i in sorted(set(image_ids))]
    session.connection().execute(_CREATE_ELO[dialect], values)


def _lock_elo(session: Session, left_id: int, right_id: int) -> dict[int, _EloRow]:
    """The Elo rows of a pair's two images, locked in id order (no deadlocks).

    :func:`next_pair` creates the rows when it issues the pair, in its own transaction: a
    vote that had to insert a row while holding another row's lock could deadlock with a
    concurrent vote (seen on PostgreSQL). Creating them here is only a fallback."""
    conn, ids = session.connection(), {"b_a": left_id, "b_b": right_id}
    rows = {i: _EloRow(r, n) for i, r, n in conn.execute(_LOCK_ELO_PAIR, ids)}
    if len(rows) < 2:
        _create_elo_rows(session, (left_id, right_id))
        rows = {i: _EloRow(r, n) for i, r, n in conn.execute(_LOCK_ELO_PAIR, ids)}
    return rows


def _store_elo(conn: Connection, rows: dict[int, _EloRow]) -> None:
    """Write back Elo rows read (and locked) by :func:`_lock_elo`."""
    now = dt.datetime.now(dt.UTC)
    conn.execute(_STORE_ELO, [{"b_id": i, "b_rating": r.rating, "b_votes": r.votes, "b_now": now}
                              for i, r in rows.items()])


def record_vote(
    session: Session, voter_id: int, pair_token: str, winner_id: int | None, *, channel: str = "api"
) -> VoteResult:
    """Record the voter's choice for a pair (``winner_id`` None = can't decide).

    The same token twice returns the first vote with ``created=False``; it never counts
    twice. Raises :class:`NotFoundError` (unknown token), :class:`VotingError` (winner not
    in the pair) or :class:`ConflictError` (the pair was skipped).
    """
    _begin_write(session)
    conn = session.connection()
    pair = _claim(conn, voter_id, pair_token)
    if pair is None:  # unknown, another voter's, already voted (the same vote) or skipped
        left_id, right_id = _token_row(conn, voter_id, pair_token)
        _check_winner(left_id, right_id, winner_id)
        existing = conn.execute(_VOTE_OF_TOKEN, {"b_token": pair_token}).scalar()
        if existing is None:
            raise ConflictError("this pair was skipped; ask for a new pair")
        return VoteResult(vote_id=int(existing), created=False)
    left_id, right_id = pair
    try:
        _check_winner(left_id, right_id, winner_id)
    except VotingError:
        conn.execute(_UNCLAIM, {"b_token": pair_token})  # a refused vote leaves the token usable
        raise
    rows = _lock_elo(session, left_id, right_id)  # before the insert: ids follow lock order
    vote_id = conn.execute(
        _INSERT_VOTE,
        {"voter_id": voter_id, "left_id": left_id, "right_id": right_id, "winner_id": winner_id,
         "pair_token": pair_token, "channel": channel, "created_at": dt.datetime.now(dt.UTC)},
    ).scalar_one()
    rows[left_id].votes += 1
    rows[right_id].votes += 1
    rows[left_id].rating, rows[right_id].rating = elo_game(
        rows[left_id].rating, rows[right_id].rating, _side(left_id, right_id, winner_id)
    )
    _store_elo(conn, rows)
    return VoteResult(vote_id=int(vote_id), created=True)


def skip_pair(session: Session, voter_id: int, pair_token: str) -> None:
    """Consume a pair token without voting (the voter could not or would not judge it)."""
    conn = session.connection()
    _token_row(conn, voter_id, pair_token)
    _begin_write(session)
    _claim(conn, voter_id, pair_token)


def undo_last(session: Session, voter_id: int, *, channel: str = "api") -> int | None:
    """Undo the voter's last vote that is not undone yet; return the undo row's id, or None.

    The undo is a new row; the Elo change the undone vote made is subtracted (computed by
    replaying the log up to that vote), so a replay of the log gives the same ratings.
    """
    undone = aliased(Vote)
    target = session.execute(
        select(Vote.id, Vote.left_id, Vote.right_id)
        .outerjoin(undone, undone.undoes_vote_id == Vote.id)
        .where(Vote.voter_id == voter_id, Vote.undoes_vote_id.is_(None), undone.id.is_(None))
        .order_by(Vote.id.desc())
        .limit(1)
    ).first()
    if target is None:
        return None
    vote_id, left_id, right_id = target
    # a write first, so that on SQLite the rest runs under the write lock
    _begin_write(session)
    pair_rows = (Rating.method == ELO, Rating.image_id.in_((left_id, right_id)))
    session.execute(update(RATINGS).where(*pair_rows).values(votes=RATINGS.c.votes))
    rows = _lock_elo(session, left_id, right_id)
    delta = replay_elo(_log_rows(session, up_to=vote_id)).deltas[vote_id]
    undo = Vote(
        voter_id=voter_id, left_id=left_id, right_id=right_id, winner_id=None, channel=channel,
        undoes_vote_id=vote_id,
    )
    try:
        with session.begin_nested():
            session.add(undo)
            session.flush()
    except IntegrityError:  # the same undo raced in from another request
        return None
    a, da, b, db = delta
    rows[a].rating -= da
    rows[b].rating -= db
    rows[left_id].votes -= 1
    rows[right_id].votes -= 1
    _store_elo(session.connection(), rows)
    return undo.id


# --------------------------------------------------------------------------- ratings


@dataclass(frozen=True)
class BTFit:
    """A Bradley-Terry fit of the log: log-strengths, posterior std and vote counts per image."""

    last_id: int
    image_ids: np.ndarray
    rating: np.ndarray
    std: np.ndarray
    votes: np.ndarray
    fitted_at: float


_bt_cache: dict[str, BTFit] = {}
_bt_lock = threading.Lock()


def fit_bt(rows: Sequence[LogRow], last_id: int = 0) -> BTFit:
    """Fit Crowd-BT (:func:`doohable.ranking.bradley_terry.fit`: per-voter reliability and a
    left/right bias) to the votes that count; ties count half each way."""
    from doohable.ranking import bradley_terry
    from doohable.ranking.votes import Comparisons, IdIndex, outcome_of

    items = IdIndex(sorted({i for r in rows for i in (r.left_id, r.right_id)}))
    ids = np.array(items.ids, dtype=np.int64)
    if not rows:
        empty = np.zeros(0)
        return BTFit(last_id, ids, empty, empty, np.zeros(0, dtype=np.int64), time.time())
    voters = IdIndex(sorted({r.voter_id for r in rows}))
    comps = Comparisons(
        n_items=len(items),
        left=items.encode(r.left_id for r in rows),
        right=items.encode(r.right_id for r in rows),
        outcome=np.array([outcome_of(r.left_id, r.right_id, r.winner_id) for r in rows]),
        voter=voters.encode((r.voter_id for r in rows), "voter"),
        n_voters=len(voters),
    )
    fit = bradley_terry.fit(comps, crowd=True)
    return BTFit(last_id, ids, fit.ratings, fit.std, comps.counts(), time.time())


def bt_fit(session: Session, *, max_stale_s: float = 0.0) -> BTFit:
    """The BT fit of the current log, cached by the log's last id (per database).

    With ``max_stale_s`` > 0 a cached fit that old or younger is returned even if votes came
    in since (for progress indicators that must stay cheap).
    """
    key = _db_key(session)
    last = last_log_id(session)
    with _bt_lock:
        cached = _bt_cache.get(key)
        if cached is not None and (
            cached.last_id == last or time.time() - cached.fitted_at <= max_stale_s
        ):
            return cached
    fit = fit_bt(effective_votes(session), last)
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
    _begin_write(session)
    session.execute(update(Rating).where(Rating.method == ELO).values(votes=Rating.votes))
    rows = {(r.image_id, r.method): r for r in session.scalars(select(Rating).with_for_update())}
    log = _log_rows(session)
    state = replay_elo(log)
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
    fit = fit_bt(effective_votes(session), last_log_id(session))
    for i, r, s, n in zip(fit.image_ids, fit.rating, fit.std, fit.votes, strict=True):
        bt_row = rows.get((int(i), BT))
        if bt_row is None:
            bt_row = Rating(image_id=int(i), method=BT, rating=0.0, votes=0)
            session.add(bt_row)
        bt_row.rating, bt_row.uncertainty, bt_row.votes = float(r), float(s), int(n)
    session.flush()
    return RebuildReport(log_rows=len(log), images=len(state.ratings), max_elo_change=max_change)


# --------------------------------------------------------------------------- voters


def settled_share(rating: np.ndarray, std: np.ndarray, z: float = 1.96, max_items: int = 2000) -> float:
    """Share of image pairs whose order is known at 95 %: |r_i - r_j| > z * sqrt(s_i² + s_j²)."""
    n = len(rating)
    if n < 2:
        return 0.0
    if n > max_items:  # a deterministic subsample keeps this O(max_items²)
        keep = np.linspace(0, n - 1, max_items).astype(int)
        rating, std = rating[keep], std[keep]
    diff = np.abs(rating[:, None] - rating[None, :])
    sd = np.sqrt(std[:, None] ** 2 + std[None, :] ** 2)
    upper = np.triu_indices(len(rating), k=1)
    return float(np.mean(diff[upper] > z * sd[upper]))


SETTLED_TTL_S = 10.0
_settled_cache: dict[str, tuple[float, float, float | None]] = {}


def ranking_settled(session: Session) -> tuple[float, float | None]:
    """(share of settled image pairs, mean posterior std), recomputed at most every 10 s.

    From this process's scheduler state when it has one (kept current vote by vote),
    else from a BT fit of the log; never-compared images count as unsettled."""
    key = _db_key(session)
    now = time.monotonic()
    hit = _settled_cache.get(key)
    if hit is not None and now - hit[0] < SETTLED_TTL_S:
        return hit[1], hit[2]
    live = _live.get(key)
    if live is not None:
        with live.lock:
            rating, std = live.state.mean.copy(), np.sqrt(live.state.var)
        n_images = len(rating)
    else:
        fit = bt_fit(session)
        rating, std = fit.rating, fit.std
        n_images = int(session.scalar(select(func.count()).select_from(Image).where(*_ELIGIBLE)) or 0)
    settled = settled_share(rating, std) if len(rating) else 0.0
    settled *= (len(rating) * (len(rating) - 1)) / max(n_images * (n_images - 1), 1)
    mean_std = float(np.mean(std)) if len(std) else None
    _settled_cache[key] = (now, settled, mean_std)
    return settled, mean_std


def voter_stats(session: Session, voter_id: int) -> dict[str, Any]:
    """The voter's votes today (UTC) and in total (undone ones left out), and how settled
    the whole ranking is (share of image pairs whose order BT knows at 95 %)."""
    day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    undone = select(Vote.undoes_vote_id).where(Vote.voter_id == voter_id, Vote.undoes_vote_id.is_not(None))
    mine = select(func.count()).where(
        Vote.voter_id == voter_id, Vote.undoes_vote_id.is_(None), Vote.id.not_in(undone)
    )
    today = int(session.scalar(mine.where(Vote.created_at >= day)) or 0)
    total = int(session.scalar(mine) or 0)
    settled, mean_std = ranking_settled(session)
    return {"today": today, "total": total, "settled": round(settled, 4), "mean_uncertainty": mean_std}


def voter_for_slack_user(session: Session, slack_user_id: str) -> User:
    """The voter mapped to a Slack user, created (role voter) on first use."""
    user = session.scalar(select(User).where(User.slack_user_id == slack_user_id))
    if user is not None:
        return user
    try:
        with session.begin_nested():
            user, _token = add_user(session, f"slack-{slack_user_id}", "voter")
            user.slack_user_id = slack_user_id
            session.flush()
    except IntegrityError:  # created by a concurrent request
        user = session.scalar(select(User).where(User.slack_user_id == slack_user_id))
        if user is None:
            raise
    return user


# --------------------------------------------------------------------------- export


def export_votes_csv(session: Session) -> Iterator[str]:
    """The effective decisive votes as CSV lines ``voter,winner,loser,created_at`` (with header).

    Undone votes, undo rows and ties are left out: the file is what rankers consume.
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["voter", "winner", "loser", "created_at"])
    yield buf.getvalue()
    names = {i: n for i, n in session.execute(select(User.id, User.name))}
    created = {i: c for i, c in session.execute(select(Vote.id, Vote.created_at))}
    for row in effective_votes(session):
        if row.winner_id is None:
            continue
        buf.seek(0)
        buf.truncate()
        loser = row.right_id if row.winner_id == row.left_id else row.left_id
        out.writerow([names.get(row.voter_id, row.voter_id), row.winner_id, loser, _iso(created[row.id])])
        yield buf.getvalue()


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite drops the zone; we always store UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()

