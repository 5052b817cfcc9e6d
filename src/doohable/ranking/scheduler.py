"""Which two images to show next: schedulers behind one interface, created by name.

>>> sched = create("active")
>>> left, right = sched.next_pair(state, rng, voter="ana")     # doctest: +SKIP
>>> sched.observe(state, left, right, outcome=1.0, voter="ana")  # doctest: +SKIP

Known names: ``random``; ``report`` (the report's scheme: random with less-drawn images
favoured, then close Elo ratings after ``random_share`` of the budget); ``active`` (most
informative pair under the BT posterior, after a warm-up); ``threshold`` (votes spent
where an image's side of a quantile cut is unsure). Every scheduler randomises left/right,
never shows a voter the same pair twice, and ``next_pairs(k)`` returns k distinct pairs.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, ClassVar

import numpy as np
from scipy.special import ndtr

from doohable.ranking.state import RatingState
from doohable.ranking.votes import FloatArray, IntArray

Pair = tuple[int, int]

# logistic(x) ~ Phi(x / 1.702); the BALD closed form below is for a probit link
_PROBIT = 1.702
_BALD_C2 = math.pi * math.log(2.0) / 2.0


class NoPairAvailable(LookupError):
    """Every pair has already been shown to this voter."""


def pair_information(mean_diff: FloatArray, var_sum: FloatArray) -> FloatArray:
    """Expected information gain (bits) about the ratings from one vote on each pair.

    Mutual information between the vote and the rating difference ``d ~ N(mean_diff, var_sum)``
    under a logistic link (BALD; Houlsby et al. 2011, probit closed form). Largest for
    close, uncertain pairs; 0 when ``var_sum`` is 0.
    """
    m = np.asarray(mean_diff, dtype=np.float64) / _PROBIT
    v = np.asarray(var_sum, dtype=np.float64) / _PROBIT**2
    p = np.clip(ndtr(m / np.sqrt(1.0 + v)), 1e-12, 1 - 1e-12)
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    expected_entropy = np.sqrt(_BALD_C2 / (v + _BALD_C2)) * np.exp(-(m * m) / (2.0 * (v + _BALD_C2)))
    return np.asarray(np.maximum(entropy - expected_entropy, 0.0), dtype=np.float64)


def _sample(rng: np.random.Generator, weights: FloatArray, size: int = 1) -> IntArray:
    """Indices drawn with probability proportional to ``weights`` (with replacement), O(n)."""
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), weights.size - 1)


class Scheduler(ABC):
    """Proposes pairs from a :class:`RatingState` and learns from the votes it gets back."""

    name: ClassVar[str]
    #: which ratings the strategy ranks images by at the end: "elo", "bt" or "crowd"
    rating: ClassVar[str]

    def __init__(self, max_tries: int = 20) -> None:
        self.max_tries = max_tries

    def plan(self, budget: int) -> None:
        """Tell the scheduler how many votes the campaign plans (only ``report`` uses it)."""
        del budget

    def next_pair(self, state: RatingState, rng: np.random.Generator, voter: Hashable = 0) -> Pair:
        """The next (left, right) pair for ``voter``; sides are random."""
        return self.next_pairs(state, rng, 1, voter)[0]

    def next_pairs(self, state: RatingState, rng: np.random.Generator, k: int,
                   voter: Hashable = 0) -> list[Pair]:
        """k distinct pairs for ``voter`` (or k concurrent voters), each marked as shown."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        taken: set[int] = set()
        pairs: list[Pair] = []
        for _ in range(k):
            def ok(i: int, j: int) -> bool:
                return state.pair_key(i, j) not in taken and state.showable(i, j) \
                    and not state.was_shown(voter, i, j)

            i, j = self._pick(state, rng, ok)
            taken.add(state.pair_key(i, j))
            state.mark_shown(voter, i, j)
            pairs.append((i, j) if rng.random() < 0.5 else (j, i))
        return pairs

    def observe(self, state: RatingState, left: int, right: int, outcome: float, voter: Hashable = 0) -> None:
        """Record a vote (1 left won, 0 right won, 0.5 tie)."""
        state.record(left, right, outcome, voter)

    def _pick(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]) -> Pair:
        for _ in range(self.max_tries):
            pair = self._propose(state, rng, ok)
            if pair is not None and pair[0] != pair[1] and ok(*pair):
                return pair
        return _any_pair(state, rng, ok)

    @abstractmethod
    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]
                 ) -> Pair | None:
        """One candidate pair (may be rejected by ``ok`` and asked again)."""


def _any_pair(state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]) -> Pair:
    """Fallback: a uniformly random acceptable pair, or NoPairAvailable."""
    n = state.n_items
    for _ in range(64):
        i, j = (int(x) for x in rng.choice(n, 2, replace=False))
        if ok(i, j):
            return i, j
    if n > 2000:
        raise NoPairAvailable("could not find a pair this voter has not seen")
    a, b = np.triu_indices(n, 1)
    for t in rng.permutation(a.size):
        if ok(int(a[t]), int(b[t])):
            return int(a[t]), int(b[t])
    raise NoPairAvailable("this voter has already been shown every pair")


class RandomScheduler(Scheduler):
    """Uniformly random pairs (ranked with Elo, as the report's first simulations)."""

    name = "random"
    rating = "elo"

    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]) -> Pair:
        i, j = rng.choice(state.n_items, 2, replace=False)
        return int(i), int(j)


class ReportScheduler(Scheduler):
    """The report's scheme (section 2.2), ranked with Elo.

    For the first ``random_share`` of the ``budget`` (total votes planned; default 20 per
    image, the report's figure): random pairs where images drawn often are less likely
    (weight ``1 / (1 + count - min_count) ** 2``). Then: one image drawn the same way, its
    partner among the ``window`` images of closest Elo rating.
    """

    name = "report"
    rating = "elo"

    def __init__(self, random_share: float = 0.75, budget: int | None = None, window: int = 3) -> None:
        super().__init__()
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be in [0, 1], got {random_share}")
        self.random_share, self.budget, self.window = random_share, budget, window

    def plan(self, budget: int) -> None:
        """Use ``budget`` unless one was given at creation."""
        if self.budget is None:
            self.budget = budget

    def _weights(self, state: RatingState) -> FloatArray:
        c = state.counts
        return np.asarray(1.0 / (1.0 + c - c.min()) ** 2, dtype=np.float64)

    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]) -> Pair:
        budget = self.budget if self.budget is not None else 20 * state.n_items
        w = self._weights(state)
        if state.n_votes < self.random_share * budget:
            i, j = _sample(rng, w, 2)
            return int(i), int(j)
        i = int(_sample(rng, w)[0])
        near = state.neighbours(i, self.window, ratings="elo")
        return i, int(near[rng.integers(near.size)])


class ActiveScheduler(Scheduler):
    """The most informative pair under the Bradley–Terry posterior (the project's best).

    1. Warm-up: until every image has ``warmup`` comparisons (``prior_warmup`` once the
       ratings' model prior counts: the model already places each image), pair the
       least-compared images.
    2. Then draw ``candidates`` images with probability proportional to their posterior
       variance, take for each the ``window`` images of closest rating on either side, and
       keep the pair of largest expected information gain (:func:`pair_information`).
       With probability ``explore`` the partner is a random image instead.
    3. Each vote updates the posterior online; a full (Crowd-)BT refit runs when the log
       has grown by ``refit_growth`` since the last one (:meth:`refit_due`).
    O(n) NumPy work per call at most (weights), never O(n^2).
    """

    name = "active"
    rating = "crowd"

    def __init__(self, warmup: int = 3, candidates: int = 8, window: int = 8, explore: float = 0.05,
                 refit_growth: float = 0.15, crowd: bool = True, prior_warmup: int = 1) -> None:
        super().__init__()
        self.warmup, self.candidates, self.window, self.explore = warmup, candidates, window, explore
        self.refit_growth, self.crowd, self.prior_warmup = refit_growth, crowd, prior_warmup

    def observe(self, state: RatingState, left: int, right: int, outcome: float, voter: Hashable = 0) -> None:
        """Record the vote; refit the whole model when the log has grown enough."""
        state.record(left, right, outcome, voter)
        if self.refit_due(state):
            state.refit(crowd=self.crowd)

    def refit_due(self, state: RatingState) -> bool:
        """Whether the log has grown enough since the last refit: by ``refit_growth`` of it, and
        by at least a quarter of the image count (a sixteenth with a model prior, whose weight
        only a refit learns)."""
        step = max(state.n_items // (16 if state.prior is not None else 4),
                   int(self.refit_growth * state.votes_at_refit))
        return state.n_votes - state.votes_at_refit >= step

    def _focus(self, state: RatingState) -> FloatArray:
        """Weight of each image as the first of the pair."""
        return state.var

    def _worth(self, focus: FloatArray) -> FloatArray:
        """How much a pair's information counts given its first image's focus weight."""
        return np.ones_like(focus)  # the posterior variance is already inside the information gain

    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]
                 ) -> Pair | None:
        c = state.counts
        cmin = int(c.min())
        model_counts = state.prior is not None and state.prior.informative
        if cmin < (self.prior_warmup if model_counts else self.warmup):
            return _least_compared(state, rng, cmin)
        focus = self._focus(state)
        firsts = np.unique(_sample(rng, focus, self.candidates))
        if rng.random() < self.explore:
            return int(firsts[0]), int(rng.integers(state.n_items))
        # all candidate pairs at once: (first images) x (their closest-rated partners)
        near = state.neighbours_of(firsts, self.window)
        mean, var = state.mean, state.var
        gain = pair_information(mean[firsts][:, None] - mean[near], var[firsts][:, None] + var[near])
        gain = np.where(near >= 0, gain * self._worth(focus[firsts])[:, None], -1.0)
        for flat in np.argsort(-gain, axis=None).tolist():
            r, k = divmod(flat, near.shape[1])
            if gain[r, k] < 0:
                break
            if ok(int(firsts[r]), int(near[r, k])):
                return int(firsts[r]), int(near[r, k])
        return None


def _least_compared(state: RatingState, rng: np.random.Generator, cmin: int) -> Pair:
    """Two images among the least compared ones (warm-up)."""
    low = np.flatnonzero(state.counts <= cmin)
    if low.size < 2:
        low = np.flatnonzero(state.counts <= cmin + 1)
    i, j = rng.choice(low, 2, replace=False)
    return int(i), int(j)


class ThresholdScheduler(ActiveScheduler):
    """Active pairs where it is unsure on which side of a cut an image falls.

    The cut is the ``1 - top`` quantile of the current ratings (``top = 1/3``: the top third,
    the report's final use). Images are drawn with probability proportional to
    ``P(wrong side) = Phi(-|mean - cut| / std)``; partners as in :class:`ActiveScheduler`.
    """

    name = "threshold"

    def __init__(self, top: float = 1.0 / 3.0, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < top < 1.0:
            raise ValueError(f"top must be in (0, 1), got {top}")
        self.top = top

    def _focus(self, state: RatingState) -> FloatArray:
        cut = float(np.quantile(state.mean, 1.0 - self.top))
        std = np.sqrt(state.var)
        return np.asarray(ndtr(-np.abs(state.mean - cut) / std) + 1e-6, dtype=np.float64)

    def _worth(self, focus: FloatArray) -> FloatArray:
        return focus  # information about an image whose side of the cut is sure is worth little


SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (RandomScheduler, ReportScheduler, ActiveScheduler, ThresholdScheduler)
}


def create(name: str, **kwargs: Any) -> Scheduler:
    """A scheduler by name (``random``, ``report``, ``active``, ``threshold``) with its options.

    Raises
    ------
    ValueError
        For an unknown name, listing the known names and the close matches.
    """
    cls = SCHEDULERS.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, SCHEDULERS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown scheduler {name!r}: known are {', '.join(sorted(SCHEDULERS))}{hint}")
    return cls(**kwargs)
