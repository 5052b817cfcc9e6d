"""Bradley–Terry family: agrees with choix, recovers known parameters, never NaN."""

from __future__ import annotations

import choix
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from doohable.ranking import bradley_terry as bt
from doohable.ranking.votes import Comparisons, IdIndex, outcome_of


def _votes(n: int, v: int, seed: int, bias: float = 0.0, n_voters: int = 1,
           spammers: tuple[int, ...] = ()) -> tuple[Comparisons, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    left = rng.integers(0, n, v)
    right = (left + rng.integers(1, n, v)) % n
    voter = rng.integers(0, n_voters, v)
    p = expit(q[left] - q[right] + bias)
    p[np.isin(voter, spammers)] = 0.5
    y = (rng.random(v) < p).astype(float)
    return Comparisons(n, left, right, y, voter, n_voters), q


def test_plain_bt_matches_choix_map() -> None:
    comps, _ = _votes(25, 300, 0)
    wins = [(int(a), int(b)) if y == 1 else (int(b), int(a))
            for a, b, y in zip(comps.left, comps.right, comps.outcome, strict=True)]
    # choix's penalty is alpha * ||theta||^2; ours is alpha/2 * ||theta||^2
    expected = choix.opt_pairwise(25, wins, alpha=0.25)
    got = bt.fit(Comparisons.from_winners(25, [w for w, _ in wins], [lo for _, lo in wins]), alpha=0.5)
    np.testing.assert_allclose(got.ratings, expected, atol=1e-4)
    assert got.converged


def test_crowd_fit_is_the_map_of_its_objective() -> None:
    comps, _ = _votes(20, 500, 1, bias=0.4, n_voters=4, spammers=(0,))
    res = bt.fit(comps, crowd=True)
    pri = bt.Priors()

    def f(z: np.ndarray) -> float:
        return bt.neg_log_posterior(comps, z[:20], float(z[20]), expit(z[21:]), pri)

    ref = minimize(f, np.zeros(25), method="BFGS", options={"gtol": 1e-8})
    np.testing.assert_allclose(res.ratings, ref.x[:20], atol=1e-4)
    assert res.left_bias == pytest.approx(ref.x[20], abs=1e-4)
    np.testing.assert_allclose(res.reliability, expit(ref.x[21:]), atol=1e-4)


def test_recovers_bias_and_spots_the_spammer() -> None:
    comps, q = _votes(60, 6000, 2, bias=0.5, n_voters=5, spammers=(3,))
    res = bt.fit(comps, crowd=True)
    assert res.left_bias == pytest.approx(0.5, abs=0.12)
    assert np.corrcoef(res.ratings, q)[0, 1] > 0.9
    assert res.reliability[3] < 0.3 < 0.8 < res.reliability[[0, 1, 2, 4]].min()
    # the spammer's votes barely move the ratings; plain BT is pulled by them
    plain = bt.fit(comps)
    assert np.corrcoef(res.ratings, q)[0, 1] >= np.corrcoef(plain.ratings, q)[0, 1] - 1e-3


def test_std_shrinks_with_votes_and_matches_exact_inverse() -> None:
    comps, _ = _votes(500, 8000, 3)
    exact = bt.fit(comps, exact_std_max_items=1000).std
    approx = bt.fit(comps, exact_std_max_items=10).std
    np.testing.assert_allclose(approx, exact, rtol=0.1)
    few = bt.fit(comps.subset(np.arange(1000))).std
    assert np.median(few) > np.median(exact)


def test_ties_count_half() -> None:
    tie = Comparisons(2, [0, 0], [1, 1], [0.5, 0.5])
    res = bt.fit(tie)
    assert res.ratings[0] == pytest.approx(res.ratings[1], abs=1e-9)
    win_and_loss = Comparisons(2, [0, 0], [1, 1], [1.0, 0.0], positions_known=False)
    np.testing.assert_allclose(bt.fit(win_and_loss).ratings, res.ratings, atol=1e-9)


@pytest.mark.parametrize("crowd", [False, True])
def test_empty_and_disconnected_logs_are_finite(crowd: bool) -> None:
    empty = bt.fit(Comparisons(4, [], [], []), crowd=crowd)
    np.testing.assert_array_equal(empty.ratings, np.zeros(4))
    assert np.all(np.isfinite(empty.std)) and np.all(empty.std > 0)
    # two islands {0,1} and {2,3}, one image never seen, one side always winning
    comps = Comparisons(5, [0, 0, 0, 2, 2], [1, 1, 1, 3, 3], [1, 1, 1, 1, 1], positions_known=False)
    res = bt.fit(comps, crowd=crowd)
    assert np.all(np.isfinite(res.ratings)) and np.all(np.isfinite(res.std))
    assert res.ratings[0] > res.ratings[1] and res.ratings[2] > res.ratings[3]
    assert res.ratings[4] == pytest.approx(0.0, abs=1e-9) and res.std[4] == pytest.approx(1.0)


def test_deterministic_replay() -> None:
    comps, _ = _votes(40, 800, 4, n_voters=3)
    a, b = bt.fit(comps, crowd=True), bt.fit(comps, crowd=True)
    np.testing.assert_array_equal(a.ratings, b.ratings)
    np.testing.assert_array_equal(a.reliability, b.reliability)


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="unknown image index"):
        Comparisons(3, [0], [3], [1.0])
    with pytest.raises(ValueError, match="itself"):
        Comparisons(3, [1], [1], [1.0])
    with pytest.raises(ValueError, match="outcome"):
        Comparisons(3, [0], [1], [2.0])
    with pytest.raises(ValueError, match="alpha"):
        bt.fit(Comparisons(3, [0], [1], [1.0]), alpha=0)
    with pytest.raises(ValueError, match="not in the pair"):
        outcome_of(10, 11, 12)
    assert (outcome_of(10, 11, 10), outcome_of(10, 11, 11), outcome_of(10, 11, None)) == (1.0, 0.0, 0.5)
    index = IdIndex([101, 205, 307])
    np.testing.assert_array_equal(index.encode([307, 101]), [2, 0])
    with pytest.raises(ValueError, match="unknown image id"):
        index.encode([101, 999])


def test_win_probability_uses_voter_reliability() -> None:
    comps, _ = _votes(10, 400, 5, n_voters=2, spammers=(1,))
    res = bt.fit(comps, crowd=True)
    i, j = int(np.argmax(res.ratings)), int(np.argmin(res.ratings))
    p_honest, p_spam = res.win_probability(np.array([i, i]), np.array([j, j]), np.array([0, 1]))
    assert 0.5 < p_spam < p_honest
