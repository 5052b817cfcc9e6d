"""The in-house loop as one job: votes -> ratings -> a new scorer -> compared on held-out votes.

:func:`retrain` splits the votes that count at random into a training part and a held-out
part (``holdout``), fits Crowd-BT to the training votes only (labels that never saw the
held-out votes, nor any model's opinion), trains a head on frozen ImageNet features of the
voted images (or, with ``from_model``, fits a bundled photo model's head to the training
votes: :mod:`doohable.model.warmstart`), and measures the new and the current scorer on the
held-out votes: the share of decisive votes whose winner the scorer scores higher (ties count half). The
caller promotes the new scorer only if it agrees with the held-out voters more often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable.ranking.metrics import vote_agreement as agreement
from doohable.ranking.votes import LogRow

Tick = Callable[[str, int, int], None]
MIN_VOTES = 10  # decisive votes needed before a retrain means anything


@dataclass(frozen=True)
class RetrainOptions:
    """What ``doohable retrain`` was asked for."""

    out: Path  # where the candidate model is written
    current: str | None  # the serving scorer (name or path; None = the bundled default, as served)
    cache_dir: Path | None = None
    holdout: float = 0.2
    seed: int = 0
    backbone: str = "mobilenet_v2"
    head_epochs: int = 300
    from_model: str | None = None  # start from this photo model's head (doohable.model.warmstart)


def split_votes(rows: Sequence[LogRow], holdout: float, seed: int) -> tuple[list[LogRow], list[LogRow]]:
    """(training votes, held-out decisive votes): a seeded random share ``holdout`` of the
    decisive votes is held out; ties only ever train."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a share in (0, 1), got {holdout}")
    rng = np.random.default_rng(seed)
    out = rng.random(len(rows)) < holdout
    test = [r for r, o in zip(rows, out, strict=True) if o and r.winner_id is not None]
    held = {r.id for r in test}
    return [r for r in rows if r.id not in held], test


def score_images(model: str | Path | None, sources: dict[int, bytes]) -> dict[int, float]:
    """A scorer's score of each image (bytes); undecodable images are left out."""
    import io

    from PIL import Image as PILImage

    from doohable.model.load import load_any

    scorer = load_any(model, threads=1)
    out: dict[int, float] = {}
    for image_id, data in sources.items():
        try:
            with PILImage.open(io.BytesIO(data)) as img:
                out[image_id] = float(scorer.score_images([img.convert("RGB")])[0])
        except (OSError, ValueError):
            continue
    return out


def _labels(session: Session, blobs: Any, rows: Sequence[LogRow]) -> tuple[Any, list[int], list[str | bytes]]:
    """Training labels: Crowd-BT ratings of the training votes, rescaled to 1..5, with image bytes."""
    from doohable.model.data import ScoredImages
    from doohable.store.models import Image
    from doohable.voting.ratings import fit_bt

    fit = fit_bt(rows)
    voted = select(Image.id, Image.sha256).where(Image.id.in_(fit.image_ids.tolist()))
    shas = dict(session.execute(voted).all())
    keep = [k for k, i in enumerate(fit.image_ids.tolist()) if i in shas]  # images still in the database
    if len(keep) < 2:
        raise ValueError("fewer than two voted images are in the database: nothing to train on")
    ids = [int(fit.image_ids[k]) for k in keep]
    r = fit.rating[keep]
    scores = 1.0 + 4.0 * (r - r.min()) / (float(r.max() - r.min()) or 1.0)
    data = ScoredImages([f"blob:{shas[i]}" for i in ids], scores, [""] * len(ids), np.zeros(len(ids), int))
    return data, ids, [blobs.get(shas[i]) for i in ids]


def voted_bytes(session: Session, blobs: Any, rows: Sequence[LogRow]) -> dict[int, bytes]:
    """The bytes of every image voted on in ``rows`` that is still in the database."""
    from doohable.store.models import Image

    ids = sorted({i for r in rows for i in (r.left_id, r.right_id)})
    shas = dict(session.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids))).all())
    return {int(i): blobs.get(s) for i, s in shas.items()}


def retrain(session: Session, blobs: Any, opts: RetrainOptions, tick: Tick | None = None) -> dict[str, Any]:
    """Train a candidate scorer on part of the votes and compare it with the current one on
    the rest. Returns ``{"candidate", "votes": {...}, "new": {...}, "current": {...}, "better"}``;
    a current scorer that cannot be loaded is reported (``current.error``), never fatal."""
    from doohable.model.jobs import TrainOptions, train_job
    from doohable.model.load import default_name
    from doohable.model.train import FinetuneConfig
    from doohable.model.warmstart import WarmStartOptions, warmstart_job
    from doohable.voting.log import effective_votes

    rows = effective_votes(session)
    decisive = sum(r.winner_id is not None for r in rows)
    if decisive < MIN_VOTES:
        raise ValueError(f"{decisive} decisive vote(s) in the log; retraining needs at least {MIN_VOTES}")
    train_rows, test_rows = split_votes(rows, opts.holdout, opts.seed)
    if opts.from_model is not None:
        images = voted_bytes(session, blobs, train_rows)
        wopts = WarmStartOptions(opts.from_model, train_rows, images, opts.out, seed=opts.seed)
        trained = warmstart_job(wopts, tick)
    else:
        data, _ids, sources = _labels(session, blobs, train_rows)
        cfg = FinetuneConfig(backbone=opts.backbone, head="regression", seed=opts.seed)
        topts = TrainOptions(data=data, out=opts.out, cache_dir=opts.cache_dir, finetune=False, folds=False,
                             config=cfg, head_epochs=opts.head_epochs, sources=sources, name="in-house")
        trained = train_job(topts, tick)
    test_bytes = voted_bytes(session, blobs, test_rows)
    new_acc, n = agreement(score_images(opts.out, test_bytes), test_rows)
    current: dict[str, Any] = {"model": opts.current or default_name()}
    try:
        current["pairwise_accuracy"], _ = agreement(score_images(opts.current, test_bytes), test_rows)
    except (FileNotFoundError, ValueError) as exc:
        current |= {"pairwise_accuracy": None, "error": str(exc)}
    old = current["pairwise_accuracy"]
    better = new_acc is not None and new_acc > (0.5 if old is None else old)
    return {
        "candidate": str(opts.out),
        "votes": {"counted": len(rows), "train": len(train_rows), "held_out": len(test_rows), "measured": n},
        "new": {"pairwise_accuracy": new_acc, "train": trained["metrics"].get("train")},
        "current": current,
        "better": better,
        "skipped": trained["skipped"],
    }
