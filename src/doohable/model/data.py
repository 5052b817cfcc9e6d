"""Datasets for the scorer: SCUT-FBP5500, AVA.txt, and in-house labels from the database.

Label files are parsed strictly: a bad line raises :class:`LabelError` naming the file and
line. Images are decoded leniently: a corrupt image is reported and skipped, never fatal.
Decoded images are kept as uint8 arrays squashed to the resize policy's side
(``runtime.resize_side``), so that training crops and serving crops see the same scale.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from doohable.model.preprocess import squash

SUBSETS = ("AF", "AM", "CF", "CM")


class LabelError(ValueError):
    """A label file has a bad line; the message names the file and the line number."""


@dataclass(frozen=True)
class ScoredImages:
    """Images with a mean score each (SCUT-FBP5500, in-house ratings).

    Attributes
    ----------
    paths : image file paths (or ``blob:<sha256>`` for database images).
    scores : float (N,) mean scores on ``scale``.
    groups : subset per image (SCUT: AF/AM/CF/CM), "" where unknown.
    folds : int (N,) fixed CV fold per image (1..k), 0 where unknown.
    """

    paths: list[str]
    scores: np.ndarray
    groups: list[str]
    folds: np.ndarray
    scale: tuple[float, float] = (1.0, 5.0)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Sequence[int] | np.ndarray) -> ScoredImages:
        """The images at positions ``idx``."""
        ix = np.asarray(idx, dtype=int)
        return ScoredImages(
            [self.paths[i] for i in ix],
            self.scores[ix],
            [self.groups[i] for i in ix],
            self.folds[ix],
            self.scale,
        )


def label_rows(path: Path, need: set[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a label CSV whose header has the columns ``need``; a missing
    column raises :class:`LabelError` naming the file's first line."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not need <= set(reader.fieldnames or []):
            raise LabelError(f"{path}:1: header must have columns {sorted(need)}, got {reader.fieldnames}")
        yield from enumerate(reader, start=2)


def load_scut(root: str | Path, *, limit: int | None = None) -> ScoredImages:
    """Read SCUT-FBP5500's ``labels.csv`` (``image,score,subset,fold``) under ``root``.

    ``limit`` keeps the first ``limit`` rows of each fold (for quick runs and tests).
    """
    root = Path(root)
    path = root / "labels.csv"
    paths, scores, groups, folds = [], [], [], []
    for lineno, row in label_rows(path, {"image", "score", "subset", "fold"}):
        try:
            score, fold = float(row["score"]), int(row["fold"])
        except (TypeError, ValueError) as exc:
            raise LabelError(f"{path}:{lineno}: bad score or fold in {row!r} ({exc})") from exc
        if not 1.0 <= score <= 5.0 or not row["image"]:
            raise LabelError(f"{path}:{lineno}: score {score} outside 1..5 or empty image name")
        paths.append(str(root / "images" / row["image"]))
        scores.append(score)
        groups.append(row["subset"])
        folds.append(fold)
    data = ScoredImages(paths, np.asarray(scores, np.float64), groups, np.asarray(folds, int))
    if limit is None:
        return data
    keep = np.concatenate([np.flatnonzero(data.folds == f)[:limit] for f in np.unique(data.folds)])
    return data.subset(np.sort(keep))


# ---------------------------------------------------------------- AVA


@dataclass(frozen=True)
class AvaLabels:
    """AVA.txt labels: ``index image_id c1..c10 tag1 tag2 challenge``.

    Attributes
    ----------
    image_ids : int (N,)
    counts : int (N, 10) votes for scores 1..10.
    """

    image_ids: np.ndarray
    counts: np.ndarray

    def distributions(self) -> np.ndarray:
        """Vote histograms normalised to probabilities (N, 10)."""
        return counts_to_distribution(self.counts)


def counts_to_distribution(counts: np.ndarray) -> np.ndarray:
    """Histogram(s) of votes -> probabilities over the bins (rows sum to 1)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("a histogram has no votes")
    return c / total


def distribution_mean_std(p: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of score distributions (N, K) over ``values`` (default 1..K)."""
    p = np.asarray(p, dtype=np.float64)
    v = np.arange(1, p.shape[-1] + 1, dtype=np.float64) if values is None else np.asarray(values, float)
    mean = p @ v
    std = np.sqrt(np.clip(p @ v**2 - mean**2, 0.0, None))
    return mean, std


def load_ava(path: str | Path) -> AvaLabels:
    """Parse an AVA.txt file; a malformed line raises :class:`LabelError` with its number."""
    path = Path(path)
    ids: list[int] = []
    counts: list[list[int]] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 15:
                raise LabelError(f"{path}:{lineno}: expected 15 fields, got {len(parts)}")
            try:
                nums = [int(x) for x in parts]
            except ValueError as exc:
                raise LabelError(f"{path}:{lineno}: non-integer field ({exc})") from exc
            c = nums[2:12]
            if min(c) < 0 or sum(c) == 0:
                raise LabelError(f"{path}:{lineno}: vote counts must be >= 0 with at least one vote")
            ids.append(nums[1])
            counts.append(c)
    return AvaLabels(np.asarray(ids, np.int64), np.asarray(counts, np.int64).reshape(-1, 10))


# ---------------------------------------------------------------- images


@dataclass
class ImageArray:
    """Decoded images, uint8 (N, side, side, 3), and what could not be decoded."""

    pixels: np.ndarray
    kept: np.ndarray  # indices into the requested list
    errors: list[dict[str, str]] = field(default_factory=list)


def _decode(source: str | bytes, side: int) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        im.draft("RGB", (side, side))  # JPEG: decode at reduced size, at least side x side
        return squash(im, side)


def load_images(
    sources: Sequence[str | bytes],
    side: int,
    *,
    names: Sequence[str] | None = None,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImageArray:
    """Decode and squash images to ``side``; corrupt ones are listed in ``errors`` and skipped.

    ``sources`` are file paths or raw bytes; ``names`` label them in errors (default: the path).
    """
    names = (
        list(names)
        if names is not None
        else [s if isinstance(s, str) else f"#{i}" for i, s in enumerate(sources)]
    )
    out = np.zeros((len(sources), side, side, 3), np.uint8)
    ok = np.zeros(len(sources), bool)
    errors: list[dict[str, str]] = []

    def work(i: int) -> None:
        try:
            out[i] = _decode(sources[i], side)
            ok[i] = True
        except Exception as exc:  # PIL raises many types for a bad file; report, never stop
            errors.append({"source": names[i], "error": f"{type(exc).__name__}: {exc}"})

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(work, range(len(sources))):
            if on_progress:
                on_progress(1)
    kept = np.flatnonzero(ok)
    return ImageArray(out[kept], kept, sorted(errors, key=lambda e: e["source"]))


def cache_key(paths: Sequence[str], side: int) -> str:
    """Key of a decoded-image cache: the paths, their sizes and mtimes, and the side."""
    h = hashlib.sha256(str(side).encode())
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


def load_images_cached(
    paths: Sequence[str], side: int, cache_dir: str | Path | None, **kw: Any
) -> ImageArray:
    """:func:`load_images`, kept as ``.npz`` in ``cache_dir`` (None: no cache)."""
    if cache_dir is None:
        return load_images(paths, side, **kw)
    f = Path(cache_dir) / f"images-{cache_key(paths, side)}.npz"
    if f.is_file():
        z = np.load(f, allow_pickle=False)
        errs = [{"source": s, "error": e} for s, e in zip(z["err_src"], z["err_msg"], strict=True)]
        return ImageArray(z["pixels"], z["kept"], errs)
    arr = load_images(paths, side, **kw)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        pixels=arr.pixels,
        kept=arr.kept,
        err_src=np.asarray([e["source"] for e in arr.errors], str),
        err_msg=np.asarray([e["error"] for e in arr.errors], str),
    )
    tmp.replace(f)
    return arr


# ---------------------------------------------------------------- in-house labels (database)


@dataclass(frozen=True)
class VotePairs:
    """Raw pairwise votes: image ids of winners and losers, aligned."""

    winners: np.ndarray
    losers: np.ndarray


def vote_pairs_from_db(session: Any) -> VotePairs:
    """Every counted decisive vote as (winner, loser) (:func:`doohable.voting.effective_votes`),
    less those that name a deleted image."""
    from doohable.voting.log import effective_votes, without_deleted_images

    w, lo = [], []
    for r in without_deleted_images(session, effective_votes(session))[0]:
        if r.winner_id is None:
            continue
        w.append(r.winner_id)
        lo.append(r.loser_id)
    return VotePairs(np.asarray(w, np.int64), np.asarray(lo, np.int64))


def ratings_from_db(session: Any, method: str = "bt", *, min_votes: int = 1) -> ScoredImages:
    """In-house labels: the images' ratings by ``method`` from the vote log as it is now
    (:func:`doohable.voting.ratings`: Elo kept vote by vote, BT refitted from the log),
    rescaled linearly to 1..5. Votes for images no longer in the database are left out.

    ``paths`` are ``blob:<sha256>`` (read them with :func:`blob_sources`).
    """
    from sqlalchemy import select

    from doohable.store.models import Image as ImageRow
    from doohable.voting.ratings import ratings

    rated = {r.image_id: r.rating for r in ratings(session, method) if r.votes >= min_votes}
    if not rated:
        raise ValueError(f"no images have {min_votes} or more counted votes yet: cast votes first "
                         "(doohable serve, then the vote page), then train")
    q = select(ImageRow.id, ImageRow.sha256).where(ImageRow.id.in_(rated)).order_by(ImageRow.id)
    rows = list(session.execute(q))
    if not rows:
        raise ValueError("every voted image has been deleted: no labels to train on")
    r = np.asarray([rated[row.id] for row in rows], np.float64)
    span = float(r.max() - r.min()) or 1.0
    scores = 1.0 + 4.0 * (r - r.min()) / span
    return ScoredImages(
        [f"blob:{row.sha256}" for row in rows], scores, [""] * len(rows), np.zeros(len(rows), int)
    )


def blob_sources(paths: Sequence[str], blobs: Any) -> list[str | bytes]:
    """Turn ``blob:<sha256>`` entries into their bytes from a blob store; other paths unchanged."""
    return [blobs.get(p[5:]) if p.startswith("blob:") else p for p in paths]
