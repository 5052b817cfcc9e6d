"""Bradley–Terry family fitted on the whole vote log (MAP, deterministic, replayable).

Model of one vote by voter v between ``left`` and ``right``::

    x      = theta[left] - theta[right] + b            (b: left/right position bias)
    p      = sigmoid(x)                                (Bradley–Terry)
    P(left)= eta[v] * p + (1 - eta[v]) / 2             (Crowd-BT: eta = P(voting by the model),
                                                        1 - eta = P(a coin flip))

A tie ("can't decide") counts as half a win for each side. Priors: ``theta ~ N(0, 1/alpha)``
(keeps ratings finite on empty logs, unseen images and disconnected comparison graphs),
``b ~ N(0, 1)``, ``eta ~ Beta(a, b)`` (only with ``crowd=True``; otherwise ``eta = 1``, plain BT).

The MAP is found by Fisher scoring (sparse Laplacian systems solved by conjugate gradients)
alternating with Newton steps for the reliabilities, all vectorised with ``np.bincount``.
Plain BT gives the same answer as ``choix.opt_pairwise`` (tested); ``choix`` itself loops in
Python over votes (too slow for 200k votes) and has no voter reliability or position bias.
The uncertainty is the Laplace approximation: the square root of the diagonal of the
inverse Fisher information of ``theta`` (exact for small n, a second-order Neumann
approximation of the inverse for large n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import cg
from scipy.special import expit
from threadpoolctl import threadpool_limits

from doohable.ranking.votes import Comparisons, FloatArray

EXACT_STD_MAX_ITEMS = 400


@dataclass(frozen=True)
class BTResult:
    """A fitted Bradley–Terry model.

    Attributes
    ----------
    ratings : (n_items,) MAP strengths on the logit scale (difference 1 = odds e:1).
    std : (n_items,) posterior standard deviation of each rating (Laplace).
    reliability : (n_voters,) probability that each voter votes by the model rather than
        at random (all 1 for plain BT).
    left_bias : logit bonus of the left side (0 when positions are unknown).
    converged : whether the optimiser met its tolerance.
    """

    ratings: FloatArray
    std: FloatArray
    reliability: FloatArray
    left_bias: float
    converged: bool

    def win_probability(self, left: np.ndarray, right: np.ndarray, voter: np.ndarray | None = None,
                        with_bias: bool = True) -> FloatArray:
        """P(left is voted over right); by each voter's own reliability when ``voter`` is given."""
        p = expit(self.ratings[left] - self.ratings[right] + (self.left_bias if with_bias else 0.0))
        if voter is None:
            return np.asarray(p, dtype=np.float64)
        eta = self.reliability[voter]
        return np.asarray(eta * p + (1.0 - eta) / 2.0, dtype=np.float64)


@dataclass(frozen=True)
class Priors:
    """Prior of ratings, N(mean, 1/alpha) (mean None: 0), and Beta(a, b) prior of voters' reliability."""

    alpha: float = 1.0
    reliability: tuple[float, float] = (4.0, 1.0)
    mean: FloatArray | None = None


def neg_log_posterior(c: Comparisons, theta: FloatArray, b: float, eta_v: FloatArray | None,
                      pri: Priors) -> float:
    """The objective: minus the log-posterior of ratings, bias and reliabilities (up to a constant).

    ``eta_v = None`` is plain BT. The reliability prior is ``a log(eta) + b log(1 - eta)``.
    """
    x = theta[c.left] - theta[c.right] + b
    y = c.outcome
    if eta_v is None:
        ll = float(y @ x - np.logaddexp(0.0, x).sum())  # y log s(x) + (1-y) log s(-x)
    else:
        eta = eta_v[c.voter]
        rest = (1.0 - eta) / 2.0  # keeps both probabilities > 0: plain logs are safe
        ll = float(y @ np.log(eta * expit(x) + rest) + (1.0 - y) @ np.log(eta * expit(-x) + rest))
        e = np.clip(eta_v, 1e-12, 1 - 1e-12)
        ll += float(np.sum(pri.reliability[0] * np.log(e) + pri.reliability[1] * np.log1p(-e)))
    d = theta if pri.mean is None else theta - pri.mean
    return -ll + 0.5 * pri.alpha * float(d @ d) + 0.5 * b * b


def _vote_terms(c: Comparisons, x: np.ndarray, eta: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per vote: d loglik / d x and the Fisher information about x."""
    p = expit(x)
    y = c.outcome
    if eta is None:
        return y - p, p * (1.0 - p)
    rest = (1.0 - eta) / 2.0
    p1, p0 = eta * p + rest, eta * (1.0 - p) + rest
    slope = eta * p * (1.0 - p)  # d P(left) / d x
    return (y / p1 - (1.0 - y) / p0) * slope, slope * slope / (p1 * p0)


def _reliability_newton(c: Comparisons, x: np.ndarray, eta_v: np.ndarray, pri: Priors,
                        steps: int) -> np.ndarray:
    """Each voter's MAP reliability with the ratings held fixed (1-D concave: Newton steps)."""
    d, y = expit(x) - 0.5, c.outcome  # P(left) = 1/2 + eta * d
    a, b = pri.reliability
    for _ in range(steps):
        eta = eta_v[c.voter]
        p1, p0 = 0.5 + eta * d, 0.5 - eta * d
        g = np.bincount(c.voter, d * (y / p1 - (1.0 - y) / p0), c.n_voters) + a / eta_v - b / (1.0 - eta_v)
        h = -np.bincount(c.voter, d * d * (y / p1**2 + (1.0 - y) / p0**2), c.n_voters) \
            - a / eta_v**2 - b / (1.0 - eta_v) ** 2
        # a Newton step, kept inside (0, 1) by going at most halfway to either end
        new = eta_v - g / h
        eta_v = np.clip(new, eta_v / 2.0, (1.0 + eta_v) / 2.0)
    return eta_v


class _FisherPattern:
    """Fisher information of (ratings[, bias]): a weighted graph Laplacian plus the prior.

    Its sparsity is fixed by the log, so it is computed once per fit; each scoring step
    only sums the new weights into place (one ``np.bincount``).
    """

    def __init__(self, c: Comparisons, fit_bias: bool) -> None:
        n = c.n_items
        self.m, self.fit_bias = n + int(fit_bias), fit_bias
        items = np.arange(n)
        rows = [c.left, c.right, c.left, c.right, items]
        cols = [c.left, c.right, c.right, c.left, items]
        if fit_bias:
            rows += [items, np.full(n, n), np.array([n])]
            cols += [np.full(n, n), items, np.array([n])]
        keys, self.slot = np.unique(np.concatenate(rows) * self.m + np.concatenate(cols), return_inverse=True)
        self.indices = keys % self.m
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // self.m, minlength=self.m))])

    def matrix(self, c: Comparisons, w: np.ndarray, alpha: float) -> sparse.csr_matrix:
        """The matrix for per-vote weights ``w``."""
        n = c.n_items
        vals = [w, w, -w, -w, np.full(n, alpha)]
        if self.fit_bias:
            side = np.bincount(c.left, w, n) - np.bincount(c.right, w, n)
            vals += [side, side, np.array([w.sum() + 1.0])]
        data = np.bincount(self.slot, np.concatenate(vals), self.indices.size)
        return sparse.csr_matrix((data, self.indices, self.indptr), shape=(self.m, self.m))


# Vector-sized BLAS calls gain nothing from threads, and on a busy machine OpenBLAS's
# spinning threads made a refit 5x slower: fits run single-threaded.
@threadpool_limits.wrap(limits=1, user_api="blas")
def fit(
    comps: Comparisons,
    *,
    alpha: float = 1.0,
    crowd: bool = False,
    bias: bool | None = None,
    priors: Priors | None = None,
    init: FloatArray | None = None,
    init_reliability: FloatArray | None = None,
    prior_mean: FloatArray | None = None,
    tol: float = 1e-5,
    max_iter: int = 100,
    exact_std_max_items: int = EXACT_STD_MAX_ITEMS,
) -> BTResult:
    """MAP Bradley–Terry ratings, their posterior std, voter reliability and position bias.

    Fisher scoring (Newton with the expected Hessian, a sparse graph Laplacian solved by
    conjugate gradients) for the ratings and bias, alternating with per-voter Newton steps
    for the reliabilities. Converges in a few steps even on badly connected comparison graphs
    (e.g. an active scheduler's chains of close pairs), where first-order methods crawl.

    Parameters
    ----------
    comps : the vote log.
    alpha : precision of the Gaussian prior on ratings (> 0); overrides ``priors.alpha``.
    crowd : fit per voter a reliability, P(voting by the model) vs. a coin flip (Crowd-BT);
        otherwise plain BT.
    bias : fit a left/right bias; default: when ``comps.positions_known``.
    priors : the reliability prior (see :class:`Priors`).
    init, init_reliability : optional starting ratings and voter reliabilities (a warm
        start); the answer does not depend on them beyond the optimiser's tolerance.
    prior_mean : (n_items,) mean of each rating's Gaussian prior (e.g. a scorer's opinion,
        see :mod:`doohable.ranking.prior`); default 0.

    Returns
    -------
    BTResult; never NaN (the prior makes the ratings' problem strictly convex).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (prior precision), got {alpha}")
    m = np.zeros(comps.n_items) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    pri = Priors(alpha, (priors or Priors()).reliability, None if prior_mean is None else m)
    fit_bias = (comps.positions_known if bias is None else bias) and len(comps) > 0
    theta = m.copy() if init is None else np.array(init, dtype=np.float64)
    b = 0.0
    eta_v = _start_reliability(comps, init_reliability) if crowd else None
    converged = len(comps) == 0
    pattern = _FisherPattern(comps, fit_bias)
    for _ in range(max_iter if len(comps) else 0):
        x = theta[comps.left] - theta[comps.right] + b
        eta_v, eta_moved = _update_reliability(comps, x, eta_v, pri)
        step = _scoring_step(comps, x, theta, b, eta_v, pattern, pri)
        theta, b, moved = _line_search(comps, theta, b, eta_v, step, pri, fit_bias)
        if max(moved, eta_moved) < tol:
            converged = True
            break
    eta = eta_v if eta_v is not None else np.ones(comps.n_voters)
    std = posterior_std(comps, theta, b, eta, alpha, exact_std_max_items)
    return BTResult(theta, std, np.asarray(eta, dtype=np.float64), float(b), converged)


def _start_reliability(c: Comparisons, init: FloatArray | None) -> np.ndarray:
    """Each voter's starting reliability: ``init`` or 0.9, inside the prior's (0, 1)."""
    start = np.full(c.n_voters, 0.9) if init is None else np.asarray(init)
    return np.clip(start.astype(np.float64), 0.05, 0.99)  # the prior keeps the answer inside (0, 1)


def _update_reliability(c: Comparisons, x: np.ndarray, eta_v: np.ndarray | None,
                        pri: Priors) -> tuple[np.ndarray | None, float]:
    """Crowd-BT's reliability half-step (none for plain BT) and how far it moved."""
    if eta_v is None:
        return None, 0.0
    new = _reliability_newton(c, x, eta_v, pri, steps=4)
    return new, float(np.abs(new - eta_v).max())


def _scoring_step(c: Comparisons, x: np.ndarray, theta: np.ndarray, b: float, eta_v: np.ndarray | None,
                  pattern: _FisherPattern, pri: Priors) -> np.ndarray:
    """The Fisher scoring step of (ratings[, bias]) at logits ``x``: the expected Hessian's
    system solved by Jacobi-preconditioned conjugate gradients."""
    n = c.n_items
    d = theta if pri.mean is None else theta - pri.mean
    g, w = _vote_terms(c, x, None if eta_v is None else eta_v[c.voter])
    grad = np.bincount(c.left, g, n) - np.bincount(c.right, g, n) - pri.alpha * d
    if pattern.fit_bias:
        grad = np.append(grad, g.sum() - b)
    h = pattern.matrix(c, w, pri.alpha)
    step, _ = cg(h, grad, rtol=1e-8, maxiter=500, M=sparse.diags(1.0 / h.diagonal()))
    return np.asarray(step)


def _line_search(c: Comparisons, theta: np.ndarray, b: float, eta_v: np.ndarray | None, step: np.ndarray,
                 pri: Priors, fit_bias: bool) -> tuple[np.ndarray, float, float]:
    """Backtrack the scoring step until the objective does not increase; returns the move size."""
    f0 = neg_log_posterior(c, theta, b, eta_v, pri)
    t = 1.0
    for _ in range(30):
        th, bb = theta + t * step[: c.n_items], b + (t * float(step[-1]) if fit_bias else 0.0)
        if neg_log_posterior(c, th, bb, eta_v, pri) <= f0 + 1e-12 * abs(f0):
            return th, bb, t * float(np.abs(step).max())
        t /= 2.0
    return theta, b, 0.0


def fisher_weights(comps: Comparisons, theta: FloatArray, b: float, eta: FloatArray) -> FloatArray:
    """Fisher information each vote carries about its rating difference, shape (V,)."""
    p = expit(theta[comps.left] - theta[comps.right] + b)
    e = eta[comps.voter]
    p1 = e * p + (1.0 - e) / 2.0
    return np.asarray((e * p * (1.0 - p)) ** 2 / (p1 * (1.0 - p1)), dtype=np.float64)


def posterior_std(comps: Comparisons, theta: FloatArray, b: float, eta: FloatArray, alpha: float,
                  exact_max_items: int = EXACT_STD_MAX_ITEMS) -> FloatArray:
    """Laplace posterior std of each rating: sqrt(diag(H^-1)), H = weighted Laplacian + alpha I."""
    n = comps.n_items
    w = fisher_weights(comps, theta, b, eta)
    deg = np.bincount(comps.left, w, n) + np.bincount(comps.right, w, n) + alpha
    if n <= exact_max_items:
        h = np.zeros(n * n)
        h += np.bincount(comps.left * n + comps.right, w, n * n)
        h += np.bincount(comps.right * n + comps.left, w, n * n)
        hm = np.diag(deg) - h.reshape(n, n)
        var = np.diag(np.linalg.inv(hm))
    else:
        # H^-1 = D^-1 + D^-1 W D^-1 + D^-1 W D^-1 W D^-1 + ...; the first-order term has a zero
        # diagonal, the second adds sum_j W_ij^2 / (D_ii^2 D_jj) (pairs assumed mostly unique)
        w2 = w * w
        second = np.bincount(comps.left, w2 / deg[comps.right], n)
        second += np.bincount(comps.right, w2 / deg[comps.left], n)
        var = 1.0 / deg + second / deg**2
    return np.asarray(np.sqrt(np.maximum(var, 0.0)), dtype=np.float64)
