"""How close an estimated ranking is to the truth, and how sure we are of an average.

``pairwise_accuracy`` is the share of image pairs put in the right order, counted as
``(1 + Kendall tau-b) / 2`` (ties count half): the simulation tables' "accuracy".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from doohable.ranking.votes import LogRow


def pairwise_accuracy(truth: ArrayLike, estimate: ArrayLike) -> float:
    """Share of pairs ordered as the truth: ``(1 + Kendall tau-b) / 2`` (0.5 if undefined)."""
    tau = stats.kendalltau(truth, estimate).statistic
    return 0.5 if not np.isfinite(tau) else float((1.0 + tau) / 2.0)


def spearman(truth: ArrayLike, estimate: ArrayLike) -> float:
    """Spearman rank correlation (0 if undefined, e.g. constant estimates)."""
    rho = stats.spearmanr(truth, estimate).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


def top_precision(truth: ArrayLike, estimate: ArrayLike, fraction: float = 1.0 / 3.0) -> float:
    """Share of the estimated top ``fraction`` that is truly in the top ``fraction``."""
    t, e = np.asarray(truth), np.asarray(estimate)
    k = max(1, round(fraction * t.size))
    true_top = set(np.argsort(-t, kind="stable")[:k].tolist())
    est_top = np.argsort(-e, kind="stable")[:k].tolist()
    return sum(i in true_top for i in est_top) / k


def mean_ci95(values: ArrayLike) -> tuple[float, tuple[float, float]]:
    """Mean and two-sided 95% Student-t interval; one value gives a zero-width interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    m = float(x.mean())
    if x.size == 1:
        return m, (m, m)
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, (m - half, m + half)


def mean_ci95_json(values: ArrayLike) -> dict[str, float | list[float]]:
    """:func:`mean_ci95` as benchmarks write it: ``{"mean": m, "ci95": [lo, hi]}``."""
    m, (lo, hi) = mean_ci95(values)
    return {"mean": m, "ci95": [lo, hi]}


def vote_prediction(p_winner: ArrayLike) -> tuple[float, float]:
    """Accuracy and log-loss of predicted probabilities that each held-out vote's winner wins.

    A probability of exactly 0.5 counts as half right. Probabilities are clipped to
    [1e-12, 1 - 1e-12] for the log-loss.
    """
    p = np.asarray(p_winner, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no votes to score")
    acc = float(np.mean((p > 0.5) + 0.5 * (p == 0.5)))
    return acc, float(-np.mean(np.log(np.clip(p, 1e-12, 1 - 1e-12))))


def settled_share(rating: ArrayLike, std: ArrayLike, z: float = 1.96, max_items: int = 2000) -> float:
    """Share of item pairs whose order is known at 95 %: |r_i - r_j| > z * sqrt(s_i² + s_j²)."""
    r, s = np.asarray(rating, dtype=np.float64), np.asarray(std, dtype=np.float64)
    n = len(r)
    if n < 2:
        return 0.0
    if n > max_items:  # a deterministic subsample keeps this O(max_items²)
        keep = np.linspace(0, n - 1, max_items).astype(int)
        r, s = r[keep], s[keep]
    diff = np.abs(r[:, None] - r[None, :])
    sd = np.sqrt(s[:, None] ** 2 + s[None, :] ** 2)
    upper = np.triu_indices(len(r), k=1)
    return float(np.mean(diff[upper] > z * sd[upper]))


def vote_agreement(scores: dict[int, float], votes: Sequence[LogRow]) -> tuple[float | None, int]:
    """(share of decisive votes whose winner has the higher score, ties half; votes measured).

    Votes with an image that has no score are left out."""
    hits, n = 0.0, 0
    for r in votes:
        if r.winner_id is None:
            continue
        loser = r.loser_id
        if r.winner_id in scores and loser in scores:
            w, lo = scores[r.winner_id], scores[loser]
            hits += 1.0 if w > lo else 0.5 if w == lo else 0.0
            n += 1
    return (hits / n if n else None), n
