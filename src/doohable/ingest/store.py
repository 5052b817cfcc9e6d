"""Bytes -> blob store + ``images``/``sources`` rows, atomically.

The blob is written first, then the rows in the caller's transaction; if that transaction
fails, a blob written for it is deleted again unless a committed row references it (it may
have been there before). :func:`sweep_orphan_blobs` removes what a crash left between the two.
"""

from __future__ import annotations

import hashlib
import logging
import time

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from doohable.config import Settings
from doohable.images import decode
from doohable.ingest.common import IngestResult, SourceInfo
from doohable.ingest.phash import PhashIndex, perceptual_hash
from doohable.store.blobs import BlobStore
from doohable.store.models import Image, Source

log = logging.getLogger(__name__)

_NEW_BLOBS = "doohable.ingest.new_blobs"


def _discard_orphan(engine: Engine, blobs: BlobStore, sha256: str) -> None:
    """Delete the blob ``sha256`` unless a committed row references it. When that cannot be
    checked (database down), keep it: an orphan blob is harmless, a row without bytes is not."""
    try:
        with engine.connect() as conn:
            referenced = conn.execute(select(Image.id).where(Image.sha256 == sha256)).first() is not None
    except Exception:
        log.warning("kept blob %s: could not check whether a row references it", sha256, exc_info=True)
        return
    if not referenced:
        blobs.delete(sha256)


def sweep_orphan_blobs(engine: Engine, blobs: BlobStore, older_than_s: float) -> int:
    """Delete the blobs that no image row references and that are older than ``older_than_s``
    (and a crashed local write's temporary files); return how many blobs were deleted.

    A crash (``kill -9``, power loss) between a blob's write and its transaction's commit
    leaves such an orphan; ``doohable serve`` runs this at start-up. The age guard keeps
    the blobs of ingests still in flight in other processes: it must exceed the longest
    ingest transaction (``DOOHABLE_ORPHAN_BLOB_GRACE_S``; 0 only when nothing else writes)."""
    limit = time.time() - older_than_s
    old = [sha for sha, mtime in blobs.iter_blobs() if mtime <= limit]
    deleted = 0
    with engine.connect() as conn:
        for start in range(0, len(old), 500):
            chunk = old[start : start + 500]
            known = set(conn.execute(select(Image.sha256).where(Image.sha256.in_(chunk))).scalars())
            for sha in chunk:
                if sha not in known:
                    blobs.delete(sha)
                    deleted += 1
    remove_temp = getattr(blobs, "remove_temp_files", None)
    if remove_temp is not None:
        remove_temp(older_than_s)
    if deleted:
        log.warning("deleted %d orphan blob(s) left by an interrupted ingest", deleted)
    return deleted


@event.listens_for(Session, "after_commit")
def _forget_new_blobs(session: Session) -> None:
    session.info.pop(_NEW_BLOBS, None)


@event.listens_for(Session, "after_rollback")
def _discard_new_blobs(session: Session) -> None:
    """A transaction that wrote blobs rolled back (even at commit time): remove its orphans."""
    for blobs, sha256 in session.info.pop(_NEW_BLOBS, []):
        _discard_orphan(session.get_bind(), blobs, sha256)  # type: ignore[arg-type]


def _source_row(image_id: int, source: SourceInfo) -> Source:
    return Source(
        image_id=image_id,
        kind=source.kind,
        uri=source.uri,
        network=source.network,
        page_url=source.page_url,
        author=source.author,
        caption=source.caption,
        posted_at=source.posted_at,
        added_by=source.added_by,
    )


def _insert_image(session: Session, image: Image, source: SourceInfo) -> Image:
    """Insert the image and its first source (one flush, inside the caller's transaction)."""
    session.add(image)
    session.flush()
    session.add(_source_row(image.id, source))
    session.flush()
    return image


def ingest_bytes(
    session: Session,
    blobs: BlobStore,
    data: bytes,
    *,
    source: SourceInfo,
    settings: Settings,
    index: PhashIndex | None = None,
) -> IngestResult:
    """Decode ``data`` safely, store it (once) and record this sighting.

    Parameters
    ----------
    session : an open transaction; the caller commits (see module doc for atomicity).
    index : known perceptual hashes; None = read them from the database.

    Raises
    ------
    ImageError : not an acceptable image (the reason is in the message).
    """
    sha = hashlib.sha256(data).hexdigest()
    existing = session.scalar(select(Image).where(Image.sha256 == sha))
    if existing is not None:  # the same bytes were decoded and accepted before
        session.add(_source_row(existing.id, source))
        session.flush()
        if not blobs.exists(sha):  # heal a blob lost outside doohable
            blobs.put(sha, data)
        return IngestResult(existing.id, sha, True, None, existing.phash)

    decoded = decode(
        data,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
    )
    phash = perceptual_hash(decoded.image)
    near = (index if index is not None else PhashIndex.load(session)).nearest(
        phash, settings.near_duplicate_distance
    )
    wrote = not blobs.exists(sha)
    if wrote:
        blobs.put(sha, data)
        session.info.setdefault(_NEW_BLOBS, []).append((blobs, sha))
    row = Image(
        sha256=sha,
        phash=phash,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        size_bytes=len(data),
        near_duplicate_of=near,
    )
    try:
        _insert_image(session, row, source)
    except BaseException:
        if wrote:
            _discard_orphan(session.get_bind(), blobs, sha)  # type: ignore[arg-type]
        raise
    return IngestResult(row.id, sha, False, near, phash)
