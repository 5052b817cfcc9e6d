"""Helpers for the voting tests: images rows (and blobs when asked) without the ingest stage."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from contextlib import closing

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from doohable.store.models import Image


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    """A small, distinct JPEG (a colour gradient that depends on ``seed``)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    arr = np.empty((size, size, 3), dtype=np.uint8)
    for c in range(3):
        arr[..., c] = ((base[c] + ramp[None, :] * (c + 1) + ramp[:, None]) % 256).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def add_images(session: Session, n: int, blobs: object | None = None, start: int = 0) -> list[int]:
    """Insert ``n`` image rows (and their bytes into ``blobs`` when given); return their ids."""
    ids = []
    for k in range(start, start + n):
        data = jpeg_bytes(k)
        sha = hashlib.sha256(data).hexdigest()
        if blobs is not None:
            blobs.put(sha, data)  # type: ignore[attr-defined]
        img = Image(sha256=sha, phash=f"{k:016x}", width=64, height=64, format="JPEG", size_bytes=len(data))
        session.add(img)
        session.flush()
        ids.append(img.id)
    return ids


def delete_image_unchecked(engine: Engine, image_id: int) -> None:
    """Delete an image row as SQL run with foreign-key checks off does (the ``sqlite3`` shell by
    default, a superuser on PostgreSQL): its votes, ratings and scores stay behind."""
    if engine.dialect.name == "sqlite":
        with closing(sqlite3.connect(str(engine.url.database))) as conn, conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no FK triggers
        conn.execute(delete(Image).where(Image.id == image_id))
