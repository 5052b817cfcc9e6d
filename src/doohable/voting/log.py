"""Reads of the vote log: every row, the votes that count, the CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from doohable.ranking.votes import LogRow, effective
from doohable.store.models import Image, User, Vote

_COLUMNS = (Vote.id, Vote.left_id, Vote.right_id, Vote.winner_id, Vote.undoes_vote_id, Vote.voter_id)


def log_rows(session: Session, up_to: int | None = None, *where: Any) -> list[LogRow]:
    """Rows of the log in id order (up to id ``up_to``; further SQL conditions in ``where``)."""
    stmt = select(*_COLUMNS).where(*where).order_by(Vote.id)
    if up_to is not None:
        stmt = stmt.where(Vote.id <= up_to)
    return [LogRow(*row) for row in session.execute(stmt)]


def effective_votes(session: Session, voter_id: int | None = None) -> list[LogRow]:
    """The votes that count (:func:`doohable.ranking.votes.effective`), of one voter or all.

    An undo row belongs to the voter of the vote it undoes, so one voter's rows suffice."""
    where = () if voter_id is None else (Vote.voter_id == voter_id,)
    return effective(log_rows(session, None, *where))


def without_deleted_images(session: Session, rows: Sequence[LogRow]) -> tuple[list[LogRow], set[int]]:
    """``rows`` less those that name an image no longer in the database, and the ids of those
    images.

    doohable never deletes an image with votes (the log's foreign keys forbid it), but SQL run
    with foreign keys off can. The log keeps such votes (nothing is lost); ratings, their prior's
    agreement and training labels leave them out, as they would have no image to rate."""
    stored = set(session.scalars(select(Image.id)))
    kept = [r for r in rows if r.left_id in stored and r.right_id in stored]
    deleted = {i for r in rows for i in (r.left_id, r.right_id) if i not in stored}
    return kept, deleted


def last_log_id(session: Session) -> int:
    """The id of the last row of the log (0 when empty)."""
    return int(session.scalar(select(func.coalesce(func.max(Vote.id), 0))) or 0)


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
