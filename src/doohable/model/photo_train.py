"""Training and nested cross-validation of the ``photo`` quality model (library code; the CLI's
``doohable train --data live-challenge`` and ``benchmarks/`` call it).

The head's penalty is always chosen inside the training part only (an inner CV on it), so the
reported figures of every outer split are honest estimates for unseen photos.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from doohable.model import photo
from doohable.model.runtime import short_side_policy

DEFAULT_POLICY = "short-side-500-center-crop-224"
GRIDS: dict[str, list[Any]] = {
    "regression": [300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0],  # ridge penalty
    "nima": [1e-6, 1e-5],  # weight decay of the EMD fit
    # (kernel width g, ridge penalty) of the RBF kernel head
    "kernel": [(g, a) for g in (0.06, 0.12, 0.25, 0.5) for a in (0.01, 0.03, 0.1, 0.3)],
}
Tick = Callable[[str, int, int], None]
Predictor = Callable[[np.ndarray], np.ndarray]
# (features, MOS, std, grid) -> one predictor per grid value
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray, list[Any]], list[Predictor]]
Split = tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]


def metrics(pred_mos: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    """SRCC, PLCC and RMSE (MOS scale 0..100) of predicted MOS."""
    return {
        "srcc": float(spearmanr(pred_mos, mos)[0]),
        "plcc": float(pearsonr(pred_mos, mos)[0]),
        "rmse": float(np.sqrt(np.mean((pred_mos - mos) ** 2))),
    }


def fold_splits(folds: np.ndarray) -> list[Split]:
    """(train, test, inner folds of train) for each fixed fold; inner folds are the other folds."""
    out = []
    for k in np.unique(folds):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        inner = [(tr[folds[tr] != j], tr[folds[tr] == j]) for j in np.unique(folds[tr])]
        out.append((tr, te, inner))
    return out


def head_fitter(kind: str) -> Fitter:
    """Fit a photo head of ``kind`` (see :data:`GRIDS`); predictions on the MOS scale."""

    def fit(x: np.ndarray, mos: np.ndarray, std: np.ndarray, grid: list[Any]) -> list[Predictor]:
        return [functools.partial(_predict_mos, h) for h in photo.fit_heads(x, mos, std, kind, grid)]

    return fit


def _predict_mos(head: photo.Head, feats: np.ndarray) -> np.ndarray:
    return photo.score_to_mos(photo.predict_head(head, feats))


def choose(
    feats: np.ndarray, labels: photo.PhotoLabels, fit: Fitter, grid: list[Any], inner: list
) -> Any:
    """The grid value with the best mean inner SRCC + PLCC (``inner``: positions into ``feats``)."""
    vals = np.zeros((len(inner), len(grid)))
    for i, (itr, ite) in enumerate(inner):
        for j, pred in enumerate(fit(feats[itr], labels.mos[itr], labels.std[itr], grid)):
            m = metrics(pred(feats[ite]), labels.mos[ite])
            vals[i, j] = m["srcc"] + m["plcc"]
    return grid[int(np.argmax(vals.mean(0)))]


def nested_cv(
    feats: np.ndarray, labels: photo.PhotoLabels, fit: Fitter, grid: list[Any], splits: list[Split]
) -> dict[str, Any]:
    """Outer-split metrics (the grid value chosen on each training part), their mean and std, and
    the out-of-split predictions (MOS; NaN where a photo was never tested)."""
    rows, chosen = [], []
    oof = np.full(len(labels), np.nan)
    for tr, te, inner in splits:
        sub = labels.subset(tr)
        g = choose(feats[tr], sub, fit, grid, [(_pos(tr, a), _pos(tr, b)) for a, b in inner])
        oof[te] = fit(feats[tr], sub.mos, sub.std, [g])[0](feats[te])
        rows.append(metrics(oof[te], labels.mos[te]))
        chosen.append(g)
    summary = {
        k: [float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))] for k in rows[0]
    }
    return {"splits": rows, "chosen": chosen, **summary, "oof_mos": oof}


def _pos(outer: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Positions of ``idx`` inside the sorted index array ``outer``."""
    return np.searchsorted(outer, idx)


@dataclass
class PhotoTrainOptions:
    """What ``doohable train`` on a quality dataset needs."""

    data: Path
    out: Path
    backbone: str = "efficientnet_lite0"  # the bundled photo model's
    head: str = "nima"
    policy: str = DEFAULT_POLICY
    folds: bool = True
    device: str = "auto"


def train_photo_job(opts: PhotoTrainOptions, tick: Tick | None = None) -> dict[str, Any]:
    """Crops -> frozen features -> (nested 5-fold CV) -> head on every photo -> ONNX.

    Returns ``{"model", "metrics", "skipped", ...}``; unreadable photos are skipped and listed.
    """
    from doohable.model.export import export_photo
    from doohable.model.train import pick_device

    parsed = short_side_policy(opts.policy)
    if parsed is None:
        raise ValueError(f"policy must be short-side-R-center-crop-S, got {opts.policy!r}")
    labels = photo.load_live(opts.data)
    got = photo.load_crops(labels.paths, *parsed, on_progress=_counter(tick, "decode", len(labels)))
    labels = labels.subset(got.kept)
    if len(labels) < 20:
        raise ValueError(f"only {len(labels)} readable photos; at least 20 are needed")
    dev = pick_device(opts.device)
    net = photo.multilevel(opts.backbone).to(dev)
    feats = photo.extract(net, got.pixels, device=dev, on_batch=_counter(tick, "features", len(labels)))
    result: dict[str, Any] = {"model": str(opts.out), "n": len(labels), "skipped": got.errors}
    if opts.folds and len(np.unique(labels.folds)) > 2:
        cv = nested_cv(feats, labels, head_fitter(opts.head), GRIDS[opts.head], fold_splits(labels.folds))
        result["metrics"] = {k: cv[k] for k in ("srcc", "plcc", "rmse", "splits", "chosen")}
    all_inner = [(a, b) for a, b, _ in fold_splits(labels.folds)] if len(np.unique(labels.folds)) > 2 else []
    grid = GRIDS[opts.head]
    l2 = choose(feats, labels, head_fitter(opts.head), grid, all_inner) if all_inner else grid[len(grid) // 2]
    head = photo.fit_head(feats, labels.mos, labels.std, opts.head, l2)
    model = photo.PhotoScorer(net.cpu(), head, parsed[1])
    extra = {"l2": l2, "trained_on": f"{opts.data.name} ({len(labels)} photos)", "score": "1 + 4 * MOS / 100"}
    export_photo(model, opts.out, name=opts.out.stem, policy=opts.policy, extra=extra)
    result["l2"] = l2
    return result


def _counter(tick: Tick | None, stage: str, total: int) -> Callable[[int], None] | None:
    """Turn per-item increments into ``tick(stage, done, total)`` calls."""
    if tick is None:
        return None
    done = [0]

    def on(n: int) -> None:
        done[0] += n
        tick(stage, done[0], total)

    return on


def torch_scores(model: photo.PhotoScorer, batch: np.ndarray) -> np.ndarray:
    """Scores of uint8 (N, S, S, 3) crops by the torch module (to compare with its ONNX export)."""
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()
