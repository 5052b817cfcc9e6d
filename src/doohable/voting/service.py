"""The voting service's writes: pair tokens, votes, skips and undos, under one write order.

A voter asks for a pair (:func:`next_pair`), which issues a single-use pair token stored
before it is returned; the vote (:func:`record_vote`) consumes the token, appends a row to
the vote log and updates the Elo ratings *in the same transaction*. An undo
(:func:`undo_last`) appends a row that reverses the Elo change the undone vote made; a
skip (:func:`skip_pair`) consumes the token without a vote. Nothing is ever updated or
deleted in the log, and :func:`doohable.voting.ratings.rebuild_ratings` replays it exactly.

Why the replay equals the incremental ratings, even with several server processes:
a vote first claims its token with a write (on SQLite this takes the database's single
write lock, so everything after it is serialised), then locks the two rating rows in
image-id order (``SELECT ... FOR UPDATE`` on PostgreSQL) and only then inserts the vote,
so two votes that share an image get ids in the order they changed that image's rating.
Votes on disjoint images commute. Hence applying the log in id order gives bit-identical
ratings.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Table, bindparam, event, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from doohable.ranking import elo
from doohable.ranking.scheduler import NoPairAvailable
from doohable.store.models import PairToken, Rating, Vote
from doohable.voting.common import ELO, ConflictError, NotFoundError, Pair, VoteResult, VotingError, db_key
from doohable.voting.live import live_state
from doohable.voting.log import effective_votes, log_rows

log = logging.getLogger(__name__)
# Core tables for the hot path (one vote = a few plain statements, no ORM unit of work)
VOTES = cast(Table, Vote.__table__)
RATINGS = cast(Table, Rating.__table__)
TOKENS = cast(Table, PairToken.__table__)
ELO_START = elo.START
_rng = np.random.default_rng()  # used under a lock (Generators are not thread-safe)

# The hot path's statements, built once (no per-call construction; SQLAlchemy memoises their
# cache keys) and run on the session's Core connection.
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

def next_pair(
    session: Session, voter_id: int, *, rng: np.random.Generator | None = None, scheduler: str | None = None
) -> Pair:
    """Choose the next pair for a voter with the active scheduler, store its single-use
    token, return it.

    Raises :class:`ConflictError` when fewer than two images can be shown. A voter who has
    seen every pair gets a random one again.
    """
    rng = rng or _rng
    live = live_state(session, scheduler)
    with live.lock:
        live.catch_up(session)
        try:
            i, j = live.scheduler.next_pair(live.state, rng, voter=voter_id)
        except (NoPairAvailable, ValueError) as e:
            # NoPairAvailable: this voter has seen every pair (a small pool). ValueError: a
            # scheduler bug must not stop voting. Either way: a uniformly random pair.
            if not isinstance(e, NoPairAvailable):
                log.warning("scheduler %s failed (%s); random pair instead", live.name, e)
            i, j = (int(x) for x in rng.choice(live.showable_indices(), 2, replace=False))
        if rng.random() < 0.5:  # the side an image appears on never depends on the scheduler
            i, j = j, i
        left, right = live.images[i], live.images[j]
    if left.id == right.id:
        raise VotingError(f"the scheduler proposed the same image twice ({left.id})")
    token = secrets.token_urlsafe(24)
    begin_write(session)
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
_writer_locks_lock = threading.Lock()


def begin_write(session: Session) -> None:
    """On SQLite, queue this process's writers on a lock until their transaction ends.

    SQLite has one writer at a time and its busy handler sleeps up to 100 ms between tries,
    so threads that wait in SQLite pile up latency; waiting on a Python lock hands over at
    once. PostgreSQL needs none of this (row locks)."""
    if session.get_bind().dialect.name != "sqlite" or "doohable_writer" in session.info:
        return
    key = db_key(session)
    lock = _writer_locks.get(key)
    if lock is None:
        with _writer_locks_lock:
            lock = _writer_locks.setdefault(key, threading.Lock())
    lock.acquire()
    session.info["doohable_writer"] = lock


@event.listens_for(Session, "after_transaction_end")
def _release_writer(session: Session, transaction: Any) -> None:
    """Release the writer lock of :func:`begin_write` when the session's transaction ends
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
    begin_write(session)
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
    rows[left_id].rating, rows[right_id].rating = elo.game(
        rows[left_id].rating, rows[right_id].rating, elo.side(left_id, right_id, winner_id)
    )
    _store_elo(conn, rows)
    return VoteResult(vote_id=int(vote_id), created=True)


def skip_pair(session: Session, voter_id: int, pair_token: str) -> None:
    """Consume a pair token without voting (the voter could not or would not judge it)."""
    conn = session.connection()
    _token_row(conn, voter_id, pair_token)
    begin_write(session)
    _claim(conn, voter_id, pair_token)


def undo_last(session: Session, voter_id: int, *, channel: str = "api") -> int | None:
    """Undo the voter's last vote that is not undone yet; return the undo row's id, or None.

    The undo is a new row; the Elo change the undone vote made is subtracted (computed by
    replaying the log up to that vote), so a replay of the log gives the same ratings.
    """
    mine = effective_votes(session, voter_id)
    if not mine:
        return None
    vote_id, left_id, right_id = mine[-1].id, mine[-1].left_id, mine[-1].right_id
    # a write first, so that on SQLite the rest runs under the write lock
    begin_write(session)
    pair_rows = (Rating.method == ELO, Rating.image_id.in_((left_id, right_id)))
    session.execute(update(RATINGS).where(*pair_rows).values(votes=RATINGS.c.votes))
    rows = _lock_elo(session, left_id, right_id)
    delta = elo.replay_log(log_rows(session, up_to=vote_id)).deltas[vote_id]
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

