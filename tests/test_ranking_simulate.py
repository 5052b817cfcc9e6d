"""Simulator, metrics and the ``doohable simulate`` command (small and fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from doohable.cli import app
from doohable.ranking import metrics
from doohable.ranking.simulate import CrowdConfig, make_crowd, run_campaign, simulate


def test_metrics_definitions() -> None:
    truth = np.array([0.1, 0.5, 0.3, 0.9, 0.7, 0.2])
    assert metrics.pairwise_accuracy(truth, truth) == 1.0
    assert metrics.pairwise_accuracy(truth, -truth) == pytest.approx(0.0, abs=1e-12)
    est = truth.copy()
    est[[0, 5]] = est[[5, 0]]  # swap two adjacent ranks: 1 of 15 pairs wrong
    assert metrics.pairwise_accuracy(truth, est) == pytest.approx(14 / 15)
    assert metrics.pairwise_accuracy(truth, np.zeros(6)) == 0.5
    assert metrics.top_precision(truth, est) == 1.0
    assert metrics.top_precision(truth, -truth) == 0.0
    assert metrics.spearman(truth, est) == pytest.approx(stats.spearmanr(truth, est).statistic)
    m, (lo, hi) = metrics.mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(stats.t.ppf(0.975, 2) / np.sqrt(3))
    assert metrics.mean_ci95([0.7]) == (0.7, (0.7, 0.7))


@pytest.mark.parametrize(("acc", "spam"), [(0.75, 0.1), (0.6, 0.0), (0.9, 0.05)])
def test_crowd_single_vote_accuracy_is_calibrated(acc: float, spam: float) -> None:
    cfg = CrowdConfig(voter_accuracy=acc, spammers=spam, left_bias=0.3)
    crowd = make_crowd(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    n = 200_000
    diff = rng.normal(size=n) - rng.normal(size=n)
    voter = rng.integers(cfg.n_voters, size=n)
    eta = crowd.eta[voter]
    p = eta / (1 + np.exp(-(crowd.slope * diff + crowd.bias[voter]))) + (1 - eta) / 2
    right = np.where(diff > 0, rng.random(n) < p, rng.random(n) >= p)
    assert right.mean() == pytest.approx(acc, abs=0.005)
    assert (crowd.eta == 0).sum() == round(spam * cfg.n_voters)


def test_unreachable_accuracy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        make_crowd(CrowdConfig(voter_accuracy=0.9, spammers=0.5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="voter accuracy"):
        CrowdConfig(voter_accuracy=0.5)


def test_more_votes_rank_better_and_runs_are_replayable() -> None:
    cfg = CrowdConfig(0.8, 0.1)
    a = run_campaign("active", 40, 6, cfg, 0, checkpoints=[1.0], ratings=["crowd", "elo"])
    b = run_campaign("active", 40, 6, cfg, 0, checkpoints=[1.0], ratings=["crowd", "elo"])
    assert a == b
    early, late = [p.pairwise_accuracy for p in a if p.rating == "crowd"]
    assert late > early > 0.5


def test_result_json_has_the_contract_shape() -> None:
    res = simulate("report", 30, 4, CrowdConfig(0.8), seeds=3)
    doc = res.to_json()
    assert doc["strategy"] == "report" and doc["images"] == 30 and doc["votes_per_image"] == 4
    for key in ("pairwise_accuracy", "spearman", "top_third_precision"):
        lo, hi = doc[key]["ci95"]
        assert lo <= doc[key]["mean"] <= hi
    assert doc["rating"] == "elo" and "curve" not in doc


def test_cli_simulate_json_csv_plot(tmp_path: Path) -> None:
    out_csv, out_png = tmp_path / "sim.csv", tmp_path / "sim.png"
    result = CliRunner().invoke(app, [
        "simulate", "--strategy", "random", "--strategy", "threshold", "--images", "30",
        "--votes-per-image", "4", "--voter-accuracy", "0.8", "--spammers", "0.1", "--seeds", "2",
        "--csv", str(out_csv), "--plot", str(out_png), "--points", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["strategy"] for r in doc["results"]] == ["random", "threshold"]
    assert [c["votes_per_image"] for c in doc["results"][1]["curve"]] == [2.0, 4.0]
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * 2 * 2 and {r["strategy"] for r in rows} == {"random", "threshold"}
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_single_strategy_and_errors() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["simulate", "--strategy", "report", "--images", "20", "--votes-per-image", "2",
                             "--voter-accuracy", "0.75", "--spammers", "0.1", "--seeds", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    assert set(json.loads(ok.stdout)) >= {"strategy", "images", "votes_per_image", "pairwise_accuracy",
                                          "spearman", "top_third_precision"}
    bad = runner.invoke(app, ["simulate", "--strategy", "activ", "--json"])
    assert bad.exit_code != 0 and "did you mean active" in bad.output
    bad = runner.invoke(app, ["simulate", "--voter-accuracy", "0.99", "--spammers", "0.5", "--images", "10",
                              "--votes-per-image", "1", "--seeds", "1"])
    assert bad.exit_code != 0 and "out of reach" in bad.output


def test_vote_prediction_scores() -> None:
    acc, ll = metrics.vote_prediction([0.9, 0.4, 0.5])
    assert acc == pytest.approx(1.5 / 3)
    assert ll == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.5)) / 3)
    with pytest.raises(ValueError, match="no votes"):
        metrics.vote_prediction([])


def test_cli_human_output_is_a_summary_line() -> None:
    result = CliRunner().invoke(app, ["simulate", "--strategy", "random", "--images", "20",
                                      "--votes-per-image", "2", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "random (elo), 20 images, 2 votes/image, 2 seeds: pairwise accuracy" in text


def test_scheduler_factory_sees_the_campaign_truth() -> None:
    """The oracle hook: a factory gets the campaign's true qualities and crowd; runs stay comparable."""
    from doohable.ranking.scheduler import create
    from doohable.ranking.simulate import Crowd

    seen: list[tuple[np.ndarray, Crowd]] = []

    def factory(q: np.ndarray, crowd: Crowd):  # type: ignore[no-untyped-def]
        seen.append((q.copy(), crowd))
        return create("active")

    factory.name = "peek"  # type: ignore[attr-defined]
    cfg = CrowdConfig(0.8, 0.1)
    by_name = run_campaign("active", 40, 3, cfg, 0, ratings=["crowd"])
    by_factory = run_campaign(factory, 40, 3, cfg, 0, ratings=["crowd"])
    assert by_name == by_factory  # same campaign, same scheduler: same points
    q, crowd = seen[0]
    assert q.shape == (40,) and crowd.eta.shape == (cfg.n_voters,) and crowd.slope > 0
    res = simulate(factory, 40, 2, cfg, seeds=2)
    assert res.strategy == "peek" and res.rating == "crowd" and len(seen) == 3
    assert not np.array_equal(seen[1][0], seen[2][0])  # one truth per seed
