"""What the schedulers read: live ratings of every image, kept current vote by vote.

:class:`RatingState` holds the report's Elo ratings and a Gaussian approximation of the
Bradley–Terry posterior (mean and variance per image). Each vote updates both cheaply
(Elo's rule; a one-step Laplace update of the two images' Gaussians); :meth:`RatingState.refit`
replaces the approximation with a full MAP fit on the whole log, which is the source of truth.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import numpy as np

from doohable.ranking import bradley_terry, elo
from doohable.ranking import prior as model_prior
from doohable.ranking.votes import Comparisons, FloatArray, IntArray


@dataclass
class RatingState:
    """Live ratings of ``n_items`` images (indices ``0..n_items-1``) and the vote log.

    Attributes
    ----------
    mean, var : (n,) approximate BT posterior (logit scale), exact right after :meth:`refit`.
    elo : (n,) the report's Elo ratings, replayed vote by vote.
    counts : (n,) comparisons per image.
    reliability : per dense voter index, the voters' fitted reliability (1 until a crowd refit).
    left_bias : fitted left/right bias (logit).
    prior : a scorer's opinion as the ratings' prior, its weight learned at each refit
        (:mod:`doohable.ranking.prior`); None: the plain ``N(0, 1/alpha)`` prior.
    hidden : images that stay in the ratings (their votes still count) but that no pair shows
        (e.g. rejected since the state was built).
    """

    n_items: int
    alpha: float = 1.0
    mean: FloatArray = field(init=False)
    var: FloatArray = field(init=False)
    elo: FloatArray = field(init=False)
    counts: IntArray = field(init=False)
    reliability: FloatArray = field(init=False)
    left_bias: float = 0.0
    n_votes: int = 0
    votes_at_refit: int = 0
    prior: model_prior.ModelPrior | None = None
    _order: IntArray = field(init=False, repr=False)
    _rank: IntArray = field(init=False, repr=False)
    _sorted_at: int = field(default=-1, repr=False)
    _order_of: str = field(default="", repr=False)
    hidden: set[int] = field(default_factory=set, repr=False)  # images pairs must not show
    _voters: dict[Hashable, int] = field(default_factory=dict, repr=False)
    _seen: dict[int, set[int]] = field(default_factory=dict, repr=False)
    _log: tuple[list[int], list[int], list[float], list[int]] = field(
        default_factory=lambda: ([], [], [], []), repr=False)

    def __post_init__(self) -> None:
        if self.n_items < 2:
            raise ValueError(f"pairs need at least 2 images, got {self.n_items}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        n = self.n_items
        self.mean = np.zeros(n)
        self.var = np.full(n, 1.0 / self.alpha)
        self.elo = np.zeros(n)
        self.counts = np.zeros(n, dtype=np.int64)
        self.reliability = np.ones(1)

    def set_prior(self, scores: FloatArray) -> None:
        """Use a scorer's scores (one per image, any scale; NaN = no opinion) as the prior."""
        if len(scores) != self.n_items:
            raise ValueError(f"{len(scores)} prior scores for {self.n_items} images")
        self.prior = model_prior.ModelPrior.from_scores(scores)
        if self.n_votes == 0:
            self.mean, self.var = self.prior.mean, np.full(self.n_items, self.prior.tau2)

    @classmethod
    def from_comparisons(cls, comps: Comparisons, alpha: float = 1.0, crowd: bool = True,
                         prior_scores: FloatArray | None = None) -> RatingState:
        """Replay a whole log (Elo in order), then fit BT on it: the state a service starts from."""
        state = cls(comps.n_items, alpha)
        if prior_scores is not None:
            state.set_prior(prior_scores)
        for a, b, y, v in zip(comps.left.tolist(), comps.right.tolist(), comps.outcome.tolist(),
                              comps.voter.tolist(), strict=True):
            state.record(a, b, y, v, online=False)
        if len(comps):
            state.refit(crowd=crowd)
        return state

    # -- voters and the pairs they have seen -------------------------------------------
    def voter_index(self, voter: Hashable) -> int:
        """Dense index of a voter key (new keys get the next index)."""
        idx = self._voters.get(voter)
        if idx is None:
            idx = self._voters[voter] = len(self._voters)
            if idx >= self.reliability.size:
                grow = np.ones(idx + 1 - self.reliability.size)
                self.reliability = np.concatenate([self.reliability, grow])
        return idx

    def pair_key(self, i: int, j: int) -> int:
        """One integer per unordered pair (the same whatever ``n_items`` becomes)."""
        return (min(i, j) << 32) | max(i, j)

    def add_items(self, k: int, prior_scores: FloatArray | None = None) -> None:
        """Append ``k`` images without votes (indices ``n_items .. n_items+k-1``).

        Each enters at its prior: the model's estimate when the state has a prior (then
        ``prior_scores`` holds every image's raw score, old and new; the learned weight
        ``a, b, tau2`` is kept until the next refit), else ``N(0, 1/alpha)``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n = self.n_items + k
        if self.prior is not None and prior_scores is not None:
            if len(prior_scores) != n:
                raise ValueError(f"{len(prior_scores)} prior scores for {n} images")
            old, fresh = self.prior, model_prior.ModelPrior.from_scores(prior_scores)
            self.prior = replace(fresh, a=old.a, b=old.b, tau2=old.tau2)
            new_mean, new_var = self.prior.mean[self.n_items:], np.full(k, self.prior.tau2)
        else:
            if self.prior is not None:  # no new scores: the new images get no opinion (s = 0)
                self.prior = replace(self.prior, scores=np.concatenate([self.prior.scores, np.zeros(k)]))
            alpha = self.prior.alpha if self.prior is not None else self.alpha
            new_mean = np.full(k, self.prior.a if self.prior is not None else 0.0)
            new_var = np.full(k, 1.0 / alpha)
        self.mean = np.concatenate([self.mean, new_mean])
        self.var = np.concatenate([self.var, new_var])
        self.elo = np.concatenate([self.elo, np.zeros(k)])
        self.counts = np.concatenate([self.counts, np.zeros(k, dtype=np.int64)])
        self.n_items = n
        self._sorted_at = -1

    def showable(self, i: int, j: int) -> bool:
        """Whether a pair may show both images (neither is :attr:`hidden`)."""
        return i not in self.hidden and j not in self.hidden

    def was_shown(self, voter: Hashable, i: int, j: int) -> bool:
        """Whether this voter has already been shown the pair {i, j}."""
        seen = self._seen.get(self.voter_index(voter))
        return seen is not None and self.pair_key(i, j) in seen

    def mark_shown(self, voter: Hashable, i: int, j: int) -> None:
        """Remember that this voter was shown {i, j} (so it is never proposed to them again)."""
        self._seen.setdefault(self.voter_index(voter), set()).add(self.pair_key(i, j))

    # -- votes ---------------------------------------------------------------------------
    def record(self, left: int, right: int, outcome: float, voter: Hashable = 0, online: bool = True) -> None:
        """Add one vote: Elo update, counts, and (``online``) a cheap update of the BT posterior."""
        if not (0 <= left < self.n_items and 0 <= right < self.n_items) or left == right:
            raise ValueError(f"bad pair ({left}, {right}) for {self.n_items} images")
        if outcome not in (0.0, 0.5, 1.0):
            raise ValueError("outcome must be 1 (left won), 0 (right won) or 0.5 (tie)")
        v = self.voter_index(voter)
        self.mark_shown(voter, left, right)
        new = elo.update_scores(float(self.elo[left]), float(self.elo[right]), outcome)
        self.elo[left], self.elo[right] = new
        self.counts[left] += 1
        self.counts[right] += 1
        for lst, val in zip(self._log, (left, right, outcome, v), strict=True):
            lst.append(val)  # type: ignore[attr-defined]
        self.n_votes += 1
        if online:
            self._online_update(left, right, outcome, float(self.reliability[v]))

    def _online_update(self, a: int, b: int, y: float, weight: float) -> None:
        # one Laplace/Kalman step of a logistic observation on d = mean_a - mean_b
        va, vb = float(self.var[a]), float(self.var[b])
        m = float(self.mean[a] - self.mean[b]) + self.left_bias
        v = va + vb
        p = 1.0 / (1.0 + math.exp(-m / math.sqrt(1.0 + math.pi * v / 8.0)))
        g, h = weight * (y - p), weight * p * (1.0 - p)
        denom = 1.0 + v * h
        self.mean[a] += va * g / denom
        self.mean[b] -= vb * g / denom
        self.var[a] = va * (1.0 - va * h / denom)
        self.var[b] = vb * (1.0 - vb * h / denom)

    def comparisons(self) -> Comparisons:
        """The log so far, as :class:`Comparisons` (dense voter indices)."""
        left, right, outcome, voter = self._log
        return Comparisons(self.n_items, np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64),
                           np.asarray(outcome), np.asarray(voter, dtype=np.int64), max(1, len(self._voters)))

    def refit(self, crowd: bool = True) -> bradley_terry.BTResult:
        """Full MAP fit on the whole log (warm-started); replaces mean, var, reliability, bias."""
        comps = self.comparisons()
        eta0 = self.reliability if self.reliability.size == comps.n_voters else None
        if self.prior is not None:
            res, self.prior = model_prior.fit(comps, self.prior, crowd=crowd, init=self.mean,
                                              init_reliability=eta0)
        else:
            res = bradley_terry.fit(comps, alpha=self.alpha, crowd=crowd, init=self.mean,
                                    init_reliability=eta0)
        self.mean = res.ratings.copy()
        self.var = res.std**2
        self.reliability = res.reliability.copy()
        self.left_bias = res.left_bias
        self.votes_at_refit = self.n_votes
        self._sorted_at = -1
        return res

    def adopt(self, fitted: RatingState) -> None:
        """Take the posterior of ``fitted`` (a refitted copy of an earlier state of this one):
        mean, variance, bias and voter reliabilities; votes recorded since keep their counts."""
        n_voters, m = self.reliability.size, fitted.n_items  # images added since keep their prior
        self.mean[:m], self.var[:m], self.left_bias = fitted.mean, fitted.var, fitted.left_bias
        rel = fitted.reliability
        self.reliability = np.concatenate([rel, np.ones(max(0, n_voters - rel.size))])
        self.votes_at_refit = fitted.n_votes
        if fitted.prior is not None:
            p = fitted.prior
            self.prior = p if self.prior is None or m == self.n_items else \
                replace(self.prior, a=p.a, b=p.b, tau2=p.tau2)
        self._sorted_at = -1

    # -- rating order (for "close rating" partners) ---------------------------------------
    def neighbours(self, i: int, width: int, ratings: str = "bt") -> IntArray:
        """Up to ``2 * width`` images whose ratings are closest to image i's (i excluded).

        ``ratings`` is ``"bt"`` (posterior mean) or ``"elo"``. The sorted order is cached
        and refreshed every ``n/20`` votes: O(log n) per call amortised.
        """
        row = self.neighbours_of(np.array([i]), width, ratings)[0]
        return row[row >= 0]

    def neighbours_of(self, items: IntArray, width: int, ratings: str = "bt") -> IntArray:
        """For each image in ``items``, the ``width`` closest-rated images on either side.

        Shape (len(items), 2 * width); -1 where the rating order ends.
        """
        self._refresh_order(ratings)
        offsets = np.concatenate([np.arange(-width, 0), np.arange(1, width + 1)])
        pos = self._rank[items][:, None] + offsets[None, :]
        inside = (pos >= 0) & (pos < self.n_items)
        return np.where(inside, self._order[np.clip(pos, 0, self.n_items - 1)], -1)

    def _refresh_order(self, ratings: str) -> None:
        stale = self.n_votes - self._sorted_at >= max(1, self.n_items // 20) or self._sorted_at < 0
        if stale or self._order_of != ratings:
            values = self.elo if ratings == "elo" else self.mean
            self._order = np.argsort(values, kind="stable")
            self._rank = np.empty(self.n_items, dtype=np.int64)
            self._rank[self._order] = np.arange(self.n_items)
            self._sorted_at = self.n_votes
            self._order_of = ratings
