"""Quality metrics as pure functions on NumPy arrays (scores on the model's scale)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true, np.float64).ravel(), np.asarray(y_pred, np.float64).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need two non-empty arrays of the same length, got {t.size} and {p.size}")
    return t, p


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson linear correlation (PC / PLCC)."""
    t, p = _pair(y_true, y_pred)
    return float(stats.pearsonr(t, p)[0])


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman rank correlation (SRCC)."""
    t, p = _pair(y_true, y_pred)
    return float(stats.spearmanr(t, p)[0])


def emd(p: np.ndarray, q: np.ndarray, r: float = 2.0) -> float:
    """Mean earth mover's distance between rows of two (N, K) distributions (NIMA's EMD, r = 2)."""
    d = np.cumsum(np.asarray(p, float), axis=-1) - np.cumsum(np.asarray(q, float), axis=-1)
    return float(np.mean(np.mean(np.abs(d) ** r, axis=-1) ** (1.0 / r)))


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scale: tuple[float, float] = (1.0, 5.0)
) -> dict[str, float]:
    """RMSE, MAE, Pearson, Spearman on the original scale, and RMSE/MAE on the normalised one."""
    span = scale[1] - scale[0]
    r, m = rmse(y_true, y_pred), mae(y_true, y_pred)
    return {
        "pearson": pearson(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
        "rmse": r,
        "mae": m,
        "rmse_normalised": r / span,
        "mae_normalised": m / span,
        "n": int(np.size(y_true)),
    }


def error_per_bin(
    y_true: np.ndarray, y_pred: np.ndarray, *, bins: int = 10, scale: tuple[float, float] | None = None
) -> list[dict[str, float]]:
    """Errors per score bin (the report cuts the score interval into 10 equal parts).

    ``scale`` gives the interval; default: the range of ``y_true``. Empty bins have n = 0 and NaNs.
    """
    t, p = _pair(y_true, y_pred)
    lo, hi = scale if scale is not None else (float(t.min()), float(t.max()))
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        e = p[m] - t[m]
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "mae": float(np.mean(np.abs(e))) if m.any() else float("nan"),
                "rmse": float(np.sqrt(np.mean(e**2))) if m.any() else float("nan"),
                "bias": float(np.mean(e)) if m.any() else float("nan"),
            }
        )
    return out


def top_fraction_roc(y_true: np.ndarray, y_pred: np.ndarray, top: float = 1 / 3) -> dict[str, Any]:
    """ROC for finding the top ``top`` fraction of images (by true score) from predicted scores.

    Returns the AUC, the ROC curve, and at the Youden-optimal threshold (max TPR - FPR):
    sensitivity, specificity, precision of predicted-positive ("beautiful") and of
    predicted-negative images (the report: 89% / 95% at the top-third cut).
    """
    t, p = _pair(y_true, y_pred)
    cut = float(np.quantile(t, 1.0 - top))
    pos = t >= cut
    if pos.all() or not pos.any():
        raise ValueError("both classes are needed for a ROC curve")
    fpr, tpr, thr = roc_curve(pos, p)
    k = int(np.argmax(tpr - fpr))
    threshold = float(thr[k])
    pred_pos = p >= threshold
    tp, fp = int(np.sum(pred_pos & pos)), int(np.sum(pred_pos & ~pos))
    tn, fn = int(np.sum(~pred_pos & ~pos)), int(np.sum(~pred_pos & pos))
    return {
        "true_cut": cut,
        "threshold": threshold,
        "auc": float(roc_auc_score(pos, p)),
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "precision_positive": tp / (tp + fp) if tp + fp else float("nan"),
        "precision_negative": tn / (tn + fn) if tn + fn else float("nan"),
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
    }


def fold_metrics(y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray) -> list[dict[str, Any]]:
    """``regression_metrics`` of each fold (ascending), with its ``fold`` number: the rows of a
    k-fold table (:func:`mean_std_table`)."""
    return [
        {"fold": int(k), **regression_metrics(y_true[folds == k], y_pred[folds == k])}
        for k in np.unique(folds)
    ]


def mean_std_table(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = ("pearson", "rmse", "mae", "spearman")
) -> dict[str, dict[str, float]]:
    """Mean and sample std over folds for each metric in ``keys``."""
    return {
        k: {
            "mean": float(np.mean([r[k] for r in rows])),
            "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
        }
        for k in keys
    }
