"""Read-side queries over the stored images (for ``doohable images list`` and pages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from doohable.store.models import Image, Source


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
