"""RatingState grows by new images: they enter at the prior, the log and the pairs already
shown are kept, and a refit of the grown state is the refit of the same votes from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from doohable.ranking.state import RatingState
from doohable.ranking.votes import Comparisons


def _comps(n: int, rng: np.random.Generator, m: int = 60) -> Comparisons:
    left = rng.integers(0, n, m)
    right = (left + rng.integers(1, n, m)) % n
    return Comparisons(n, left, right, (left > right).astype(float), rng.integers(0, 3, m), 3)


@pytest.mark.parametrize("with_prior", [False, True])
def test_grown_state_refits_like_a_fresh_one(with_prior: bool) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=9)
    comps = _comps(6, rng)
    grown = RatingState.from_comparisons(comps, prior_scores=scores[:6] if with_prior else None)
    grown.add_items(3, scores if with_prior else None)
    assert grown.n_items == 9 and grown.mean.shape == grown.var.shape == grown.elo.shape == (9,)
    if with_prior:  # a new image enters at the model's estimate, with the learned spread
        assert grown.prior is not None
        assert np.allclose(grown.mean[6:], grown.prior.mean[6:])
        assert np.allclose(grown.var[6:], grown.prior.tau2)
    else:
        assert np.allclose(grown.mean[6:], 0.0) and np.allclose(grown.var[6:], 1.0)
    more = [(6, 0, 1.0, 1), (7, 8, 0.0, 2), (8, 1, 1.0, 0)]
    for a, b, y, v in more:
        grown.record(a, b, y, v)
    grown.refit()
    a, b, y, v = (np.array(col) for col in zip(*more, strict=True))
    full = Comparisons(9, np.r_[comps.left, a], np.r_[comps.right, b], np.r_[comps.outcome, y],
                       np.r_[comps.voter, v], 3)
    fresh = RatingState.from_comparisons(full, prior_scores=scores if with_prior else None)
    assert np.allclose(grown.elo, fresh.elo)
    assert np.allclose(grown.mean, fresh.mean, atol=1e-3) and np.allclose(grown.var, fresh.var, atol=1e-3)


def test_pairs_shown_are_remembered_and_a_refit_started_before_is_adopted() -> None:
    state = RatingState(4)
    state.record(0, 1, 1.0, "ana")
    snapshot = RatingState(4)
    snapshot.record(0, 1, 1.0, "ana")
    snapshot.refit()
    state.add_items(2)
    assert state.was_shown("ana", 1, 0) and not state.was_shown("ana", 4, 5)
    state.adopt(snapshot)  # the refit of the 4-image state: the 2 new images keep their prior
    assert np.allclose(state.mean[:4], snapshot.mean) and np.allclose(state.mean[4:], 0.0)
    assert state.neighbours(5, 1).size > 0  # the rating order knows the new images
    with pytest.raises(ValueError):
        state.add_items(0)


@pytest.mark.parametrize("name", ["random", "report", "active", "threshold"])
def test_no_scheduler_proposes_a_hidden_image(name: str) -> None:
    from doohable.ranking import scheduler as schedulers

    rng = np.random.default_rng(1)
    state = RatingState.from_comparisons(_comps(12, rng))
    state.hidden = {0, 1, 2}
    sched = schedulers.create(name)
    for k in range(100):
        i, j = sched.next_pair(state, rng, voter=k)
        assert state.showable(i, j) and i != j
