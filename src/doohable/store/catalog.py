"""Read-side queries over the stored images (for ``doohable images list`` and pages) and their
scores (for the moderation queue)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from doohable.store.models import Image, Score, Source

if TYPE_CHECKING:
    from doohable.batch import Parts


def iter_images(session: Session, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Images oldest first as ``{"id", "sha256", "width", "height", "source"}``, where
    ``source`` is the URI of the first sighting (None if the image has no source row).
    Rows are streamed, so this stays cheap on large tables."""
    first = select(Source.image_id, func.min(Source.id).label("sid")).group_by(Source.image_id).subquery()
    stmt = (
        select(Image.id, Image.sha256, Image.width, Image.height, Source.uri)
        .outerjoin(first, first.c.image_id == Image.id)
        .outerjoin(Source, Source.id == first.c.sid)
        .order_by(Image.id)
        .execution_options(yield_per=500)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    for row in session.execute(stmt):
        yield {"id": row[0], "sha256": row[1], "width": row[2], "height": row[3], "source": row[4]}


def latest_parts(session: Session, model: str | None, image_ids: Sequence[int]) -> dict[int, Parts | None]:
    """image id → the parts of its newest score by ``model`` (the row whose score
    :func:`doohable.moderation.latest_scores` gives; None for a single model's score)."""
    q = select(Score.image_id, Score.parts).where(Score.model == model, Score.image_id.in_(list(image_ids)))
    rows = session.execute(q.order_by(Score.created_at, Score.id))
    return {i: parts for i, parts in rows}  # later rows win


def newest_scored_model(session: Session) -> tuple[str, str] | None:
    """(model, version) of the newest stored score (None when nothing is scored)."""
    newest = session.execute(
        select(Score.model, Score.model_version).order_by(Score.created_at.desc(), Score.id.desc()).limit(1)
    ).first()
    return None if newest is None else (str(newest[0]), str(newest[1]))
