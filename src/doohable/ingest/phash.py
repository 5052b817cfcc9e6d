"""Perceptual hashes: how near-duplicates are found."""

from __future__ import annotations

from collections.abc import Iterable

import imagehash
import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable.store.models import Image


def perceptual_hash(image: PILImage.Image) -> str:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) as 16 hex digits."""
    return str(imagehash.phash(image))


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two 16-hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


class PhashIndex:
    """Perceptual hashes of known images, searched by Hamming distance (vectorised)."""

    def __init__(self, ids: Iterable[int] = (), hashes: Iterable[str] = ()) -> None:
        self._ids = list(ids)
        self._hashes = [int(h, 16) for h in hashes]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, session: Session) -> PhashIndex:
        """All images' hashes from the database."""
        rows = session.execute(select(Image.id, Image.phash).order_by(Image.id)).all()
        return cls((r[0] for r in rows), (r[1] for r in rows))

    def add(self, image_id: int, phash: str) -> None:
        self._ids.append(image_id)
        self._hashes.append(int(phash, 16))
        self._arrays = None

    def nearest(self, phash: str, max_distance: int) -> int | None:
        """The id of the closest image within ``max_distance`` bits (lowest id on ties), or None."""
        if not self._ids:
            return None
        if self._arrays is None:
            self._arrays = (np.array(self._ids), np.array(self._hashes, dtype=np.uint64))
        ids, hashes = self._arrays
        dist = np.bitwise_count(hashes ^ np.uint64(int(phash, 16)))
        best = int(np.argmin(dist))  # argmin returns the first: ids are in insertion order
        return int(ids[best]) if int(dist[best]) <= max_distance else None
