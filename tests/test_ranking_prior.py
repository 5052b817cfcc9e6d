"""A scorer's opinion as the ratings' prior, with its weight learned from the votes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from doohable.cli import app
from doohable.ranking import bradley_terry, metrics
from doohable.ranking import prior as model_prior
from doohable.ranking.simulate import CrowdConfig, model_scores, run_campaign
from doohable.ranking.state import RatingState
from doohable.ranking.votes import Comparisons


def _votes(q: np.ndarray, n_votes: int, seed: int) -> Comparisons:
    rng = np.random.default_rng(seed)
    left, right = rng.integers(len(q), size=(2, n_votes))
    keep = left != right
    left, right = left[keep], right[keep]
    p = 1.0 / (1.0 + np.exp(-(q[left] - q[right])))
    return Comparisons(len(q), left, right, (rng.random(len(left)) < p).astype(float))


@pytest.mark.parametrize(("pearson", "sign"), [(0.9, 1), (0.0, 0), (-0.8, -1)])
def test_the_prior_weight_follows_the_votes(pearson: float, sign: int) -> None:
    q = 1.5 * np.random.default_rng(0).normal(size=300)
    scores = 3.0 + model_scores(q, pearson, 0)  # any scale: standardised inside
    res, prior = model_prior.fit(_votes(q, 1500, 1), model_prior.ModelPrior.from_scores(scores),
                                 crowd=False, steps=30)
    if sign == 0:
        assert abs(prior.correlation()) < 0.2  # a useless model gets (almost) no weight
    else:
        assert np.sign(prior.b) == sign and abs(prior.correlation()) > 0.6
    plain = bradley_terry.fit(_votes(q, 1500, 1))
    gain = metrics.pairwise_accuracy(q, res.ratings) - metrics.pairwise_accuracy(q, plain.ratings)
    assert gain > 0.02 if sign else gain > -0.01


def test_a_new_image_enters_at_the_model_estimate() -> None:
    state = RatingState(9)
    state.set_prior(np.array([*range(8), np.nan], dtype=float))
    assert state.prior is not None and state.prior.b == 0.0  # not trusted before any vote
    for _ in range(10):  # votes that agree with the model
        for a in range(7):
            state.record(a + 1, a, 1.0)
            state.record(min(a + 2, 7), a, 1.0)
    state.refit(crowd=False)
    assert state.prior.b > 0
    assert list(np.argsort(state.mean[:8])) == list(range(8))
    fresh = RatingState.from_comparisons(state.comparisons(), crowd=False,
                                         prior_scores=np.array([*range(8), 20.0]))
    assert fresh.mean[8] > fresh.mean[0]  # never compared, ranked by the model's opinion
    with pytest.raises(ValueError, match="3 prior scores for 9 images"):
        state.set_prior(np.ones(3))


def test_a_first_fit_on_few_votes_trusts_a_good_model_as_far_as_the_votes_allow() -> None:
    # one vote per image, fitted cold (a new collection's first ranking): a few fixed EM steps
    # left most of the model's weight unlearned, so the ranking was worse than the model alone
    q = 1.5 * np.random.default_rng(2).normal(size=2000)
    scores = model_scores(q, 0.9, 2)
    comps = _votes(q, 2000, 3)
    res, prior = model_prior.fit(comps, model_prior.ModelPrior.from_scores(scores))
    model_alone = metrics.pairwise_accuracy(q, scores)
    assert metrics.pairwise_accuracy(q, res.ratings) > model_alone + 0.003
    few, _ = model_prior.fit(comps, model_prior.ModelPrior.from_scores(scores), steps=3)
    assert metrics.pairwise_accuracy(q, few.ratings) < model_alone  # what the cap of 3 steps did
    assert prior.correlation() > 0.8


def test_simulated_model_has_the_asked_correlation_and_helps() -> None:
    q = np.random.default_rng(5).normal(size=5000)
    assert np.corrcoef(q, model_scores(q, 0.7, 1))[0, 1] == pytest.approx(0.7, abs=0.03)
    with pytest.raises(ValueError, match="Pearson"):
        model_scores(q, 1.5, 0)
    crowd = CrowdConfig(0.75, 0.1)
    with_model = run_campaign("active", 150, 2, crowd, 0, prior_pearson=0.9)[-1]
    without = run_campaign("active", 150, 2, crowd, 0)[-1]
    assert with_model.pairwise_accuracy > without.pairwise_accuracy + 0.05


def test_cli_simulate_prior_pearson() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--strategy", "active", "--images", "40", "--votes-per-image", "2",
                              "--seeds", "2", "--prior-pearson", "-0.5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["prior_pearson"] == -0.5 and 0.0 <= doc["pairwise_accuracy"]["mean"] <= 1.0
    bad = runner.invoke(app, ["simulate", "--prior-pearson", "2", "--json"])
    assert bad.exit_code != 0
