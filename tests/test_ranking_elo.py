"""Elo exactly as the original report (section 2.1), with its own worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from doohable.ranking import elo


def _truncate(x: float) -> float:
    # the report prints its results truncated to two decimals (29.6265 -> 29.62)
    return math.floor(x * 100) / 100


def test_report_example_25_beats_12() -> None:
    w, loser = elo.update(25, 12)
    assert (_truncate(w), _truncate(loser)) == (29.62, 7.37)
    assert w == pytest.approx(29.62, abs=0.01) and loser == pytest.approx(7.37, abs=0.01)


def test_report_example_12_beats_25() -> None:
    new_12, new_25 = elo.update(12, 25)
    assert (_truncate(new_25), _truncate(new_12)) == (19.62, 17.37)


def test_expected_formula_and_symmetry() -> None:
    assert elo.expected(0, 0) == pytest.approx(0.5)
    assert elo.expected(200, 0) == pytest.approx(1 / (1 + 10 ** -1))
    a = np.array([0.0, 50.0, -30.0])
    b = np.array([10.0, -20.0, 40.0])
    np.testing.assert_allclose(elo.expected(a, b) + elo.expected(b, a), 1.0)


def test_update_conserves_points_and_tie_moves_towards_each_other() -> None:
    w, loser = elo.update(100, -40)
    assert w + loser == pytest.approx(60)
    a, b = elo.update_scores(100, 0, 0.5)
    assert a < 100 and b > 0 and a + b == pytest.approx(100)


def test_replay_from_zero_matches_manual_updates() -> None:
    winners, losers = [0, 1, 0, 2], [1, 2, 2, 0]
    r = [0.0, 0.0, 0.0]
    for w, lo in zip(winners, losers, strict=True):
        r[w], r[lo] = elo.update(r[w], r[lo])
    np.testing.assert_allclose(elo.ratings_from_votes(3, winners, losers), r)
    np.testing.assert_array_equal(elo.ratings_from_votes(4, [], []), np.zeros(4))


def test_unknown_image_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown image index"):
        elo.ratings_from_votes(3, [0], [5])
