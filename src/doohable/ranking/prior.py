"""A scorer's opinion as the prior of Bradley–Terry ratings, with its weight learned from the votes.

Every image has a model score ``s`` (standardised to mean 0, std 1). The ratings' prior is

    theta_i ~ N(a + b * s_i, tau²)

so an image with no votes sits at the model's estimate, with uncertainty ``tau``. ``a``, ``b``
and ``tau²`` are not set by hand: they are fitted to the votes by empirical Bayes, with EM on
the Laplace approximation of the posterior (E-step: a MAP fit of the ratings under the current
prior, giving each rating's mean ``mu_i`` and variance ``v_i``; M-step: ``(a, b)`` by least
squares of ``mu`` on ``s``, ``tau² = mean((mu - a - b s)² + v)``). A model that agrees with
the voters gets a large ``b`` and a small ``tau``; a useless one (Pearson 0) gets ``b ≈ 0``
and ``tau²`` the spread of the ratings, i.e. the plain prior; an inverted one a negative ``b``.

The prior starts with ``b = 0`` and ``tau² = 1`` (the plain BT prior: the model is not
trusted before the first votes) and stays there while the fitted slope is within
:data:`Z_MIN` standard errors of 0, so a useless model changes nothing; each refit of a
:class:`~doohable.ranking.state.RatingState` runs E/M steps (warm-started) until the weight
settles (:data:`EM_TOL`, at most :data:`EM_STEPS`), so the weight follows the votes as they
come: one or two steps once it has settled, more on a new collection's first votes, where EM
moves slowly away from the untrusting start (a fixed three steps left a quarter to a half of
the slope unlearned at one vote per image).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from doohable.ranking import bradley_terry
from doohable.ranking.votes import Comparisons, FloatArray

EM_STEPS = 20  # at most this many E/M steps per refit (each one a warm-started MAP fit)
EM_TOL = 0.02  # ... stopping once the prior's slope and tau² move by less than this (relative)
TAU2_MIN = 1e-3  # keeps the prior proper: a perfect-looking model is never trusted blindly
Z_MIN = 2.5  # a slope this many standard errors from 0 before the model counts at all (3 kept an
# R = 0.9 model out of many small collections' first votes: docs/simulation.md, "Small collections")


@dataclass(frozen=True)
class ModelPrior:
    """The learned prior ``N(a + b * s, tau2)`` of every image's rating (``s`` standardised)."""

    scores: FloatArray
    a: float = 0.0
    b: float = 0.0
    tau2: float = 1.0

    @classmethod
    def from_scores(cls, scores: ArrayLike) -> ModelPrior:
        """Standardise raw model scores (any scale); constant or non-finite scores carry no opinion."""
        raw = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(raw)
        s = np.zeros(raw.shape)
        if ok.sum() >= 2 and float(raw[ok].std()) > 0:
            s[ok] = (raw[ok] - raw[ok].mean()) / raw[ok].std()
        return cls(s)

    @property
    def mean(self) -> FloatArray:
        """Prior mean of each rating."""
        return np.asarray(self.a + self.b * self.scores, dtype=np.float64)

    @property
    def informative(self) -> bool:
        """Whether the model counts: its slope was learned away from 0 (see :meth:`m_step`)."""
        return self.b != 0.0

    @property
    def alpha(self) -> float:
        """Prior precision (1 / tau²)."""
        return 1.0 / self.tau2

    def m_step(self, mu: FloatArray, var: FloatArray) -> ModelPrior:
        """The prior that maximises the expected complete-data likelihood given the posterior;
        the plain prior (``b = 0``, ``tau² = 1``) while the slope is within :data:`Z_MIN`
        standard errors of 0 (images count by the share of their information from votes)."""
        s = self.scores
        design = np.column_stack([np.ones_like(s), s])
        (a, b), *_ = np.linalg.lstsq(design, mu, rcond=None)
        resid = mu - a - b * s
        n_eff = float(np.clip(1.0 - var / self.tau2, 0.0, 1.0).sum())
        se_b = np.sqrt(float(np.mean(resid**2)) / max(n_eff * float(np.var(s)), 1e-12))
        if abs(b) < Z_MIN * se_b:
            return replace(self, a=float(np.mean(mu)), b=0.0, tau2=1.0)
        tau2 = max(float(np.mean(resid**2 + var)), TAU2_MIN)
        return replace(self, a=float(a), b=float(b), tau2=tau2)

    def correlation(self) -> float:
        """The prior's implied Pearson correlation between model score and rating."""
        return float(self.b / np.sqrt(self.b**2 + self.tau2))


def fit(
    comps: Comparisons,
    prior: ModelPrior,
    *,
    crowd: bool = True,
    init: FloatArray | None = None,
    init_reliability: FloatArray | None = None,
    steps: int = EM_STEPS,
    tol: float = EM_TOL,
) -> tuple[bradley_terry.BTResult, ModelPrior]:
    """EM from ``prior`` until the prior's slope and tau² change by less than ``tol`` (relative;
    at most ``steps`` MAP fits): the last MAP fit and the prior after one more M-step (so the
    returned prior is the one to use next).

    EM crawls where the votes say little next to the prior (a new collection's first votes:
    each step moves the slope by the votes' small share of the information), hence a
    tolerance on the change rather than a fixed number of steps.
    """
    if len(comps) == 0:
        n = comps.n_items
        empty = bradley_terry.BTResult(prior.mean, np.full(n, np.sqrt(prior.tau2)), np.ones(comps.n_voters),
                                       0.0, True)
        return empty, prior
    res = None
    for _ in range(max(1, steps)):
        res = bradley_terry.fit(comps, alpha=prior.alpha, crowd=crowd, prior_mean=prior.mean,
                                init=init, init_reliability=init_reliability)
        init, init_reliability = res.ratings, res.reliability
        old, prior = prior, prior.m_step(res.ratings, res.std**2)
        if (abs(prior.b - old.b) <= tol * max(abs(old.b), 1e-3)
                and abs(prior.tau2 - old.tau2) <= tol * old.tau2):
            break
    assert res is not None
    return res, prior
