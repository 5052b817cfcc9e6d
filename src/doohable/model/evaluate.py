"""Evaluate an exported scorer on labelled images, with every figure the report shows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from doohable.model.data import ScoredImages, load_images
from doohable.model.default import CombinedScorer
from doohable.model.metrics import error_per_bin, regression_metrics, top_fraction_roc
from doohable.model.runtime import Scorer, center_crop, resize_side


@dataclass
class Evaluation:
    """Predictions of one model on labelled images, and the metrics derived from them."""

    model: str
    paths: list[str]
    groups: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    scale: tuple[float, float]
    errors: list[dict[str, str]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """CONTRACT's ``pearson, spearman, rmse, mae`` plus normalised errors, per subset,
        per score bin, and the top-third ROC with its Youden threshold."""
        m: dict[str, Any] = regression_metrics(self.y_true, self.y_pred, self.scale)
        m["model"] = self.model
        groups = np.asarray(self.groups)
        m["per_subset"] = {
            g: regression_metrics(self.y_true[groups == g], self.y_pred[groups == g], self.scale)
            for g in sorted(set(self.groups))
            if g and np.sum(groups == g) > 2
        }
        m["error_per_bin"] = error_per_bin(self.y_true, self.y_pred, bins=10)
        roc = top_fraction_roc(self.y_true, self.y_pred)
        m["top_third"] = {k: v for k, v in roc.items() if k not in ("fpr", "tpr")}
        m["skipped"] = self.errors
        return m


def score_dataset(
    scorer: Scorer | CombinedScorer,
    data: ScoredImages,
    *,
    batch: int = 64,
    sources: Sequence[str | bytes] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Score every image of ``data`` with ``scorer`` (ONNX Runtime); corrupt images are skipped.
    A combined scorer (``default``) scores each image as ``doohable score`` does."""
    if isinstance(scorer, CombinedScorer):
        return _score_combined(scorer, data, sources, on_progress)
    s = scorer.input_size
    pix = load_images(list(sources) if sources is not None else data.paths, resize_side(s), names=data.paths)
    preds = []
    for i in range(0, len(pix.pixels), batch):
        chunk = np.ascontiguousarray(
            center_crop(pix.pixels[i : i + batch].transpose(1, 2, 0, 3), s).transpose(2, 0, 1, 3)
        )
        preds.append(scorer.score(chunk))
        if on_progress:
            on_progress(len(chunk))
    kept = data.subset(pix.kept)
    y_pred = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    return Evaluation(
        f"{scorer.name}@{scorer.version}",
        kept.paths,
        kept.groups,
        kept.scores,
        y_pred.astype(np.float64),
        scorer.scale,
        pix.errors,
    )


def _score_combined(
    scorer: CombinedScorer,
    data: ScoredImages,
    sources: Sequence[str | bytes] | None,
    on_progress: Callable[[int], None] | None,
) -> Evaluation:
    """:func:`score_dataset` through the batch scorer (each image prepared by the scorer itself)."""
    from pathlib import Path

    from doohable.batch import score_items

    srcs = list(sources) if sources is not None else list(data.paths)

    def read(i: int) -> bytes:
        src = srcs[i]
        return src if isinstance(src, bytes) else Path(src).read_bytes()

    kept, preds, errors = [], [], []
    for i, score, error, _sha, _parts in score_items(range(len(srcs)), read, scorer, on_progress=on_progress):
        if score is None:
            errors.append({"source": data.paths[i], "error": error or "not scored"})
        else:
            kept.append(i)
            preds.append(score)
    sub = data.subset(np.asarray(kept, int))
    return Evaluation(f"{scorer.name}@{scorer.version}", sub.paths, sub.groups, sub.scores,
                      np.asarray(preds, np.float64), scorer.scale, sorted(errors, key=lambda e: e["source"]))
