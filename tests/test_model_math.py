"""Losses, heads and metrics: pure functions checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from doohable.model import losses, metrics
from doohable.model.heads import create_head


def test_emd_loss_values() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    same = losses.emd_loss(p, p)
    # one bin apart: CDF differs by 1 in one of 4 bins -> sqrt(1/4) = 0.5; two apart -> sqrt(2/4)
    one = losses.emd_loss(p, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    two = losses.emd_loss(p, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert float(same) == 0.0
    assert float(one) == pytest.approx(0.5)
    assert float(two) == pytest.approx(math.sqrt(0.5))
    assert metrics.emd(p.numpy(), np.array([[0.0, 0.0, 1.0, 0.0]])) == pytest.approx(math.sqrt(0.5))


def test_pairwise_losses() -> None:
    u = torch.zeros(3)
    assert float(losses.bradley_terry_loss(u, u)) == pytest.approx(math.log(2))
    assert float(losses.bradley_terry_loss(u + 10, u)) < 1e-4
    assert float(losses.margin_ranking_loss(u + 1, u, margin=0.5)) == 0.0
    assert float(losses.margin_ranking_loss(u, u, margin=0.5)) == pytest.approx(0.5)


def test_unknown_head_names_known_ones() -> None:
    with pytest.raises(ValueError, match="known: nima, pairwise, regression"):
        create_head("regresion", 8, (1.0, 5.0))


def test_regression_head_normalises_like_the_report() -> None:
    head = create_head("regression", 8, (1.0, 5.0))
    target = head.target_from_score(torch.tensor([1.0, 3.0, 5.0]))
    assert target.tolist() == [0.0, 0.5, 1.0]  # (s - 1) / 4
    assert head.to_score(target).tolist() == [1.0, 3.0, 5.0]


def test_nima_head_target_mean_and_std() -> None:
    head = create_head("nima", 8, (1.0, 10.0), label_std=0.5)
    target = head.target_from_score(torch.tensor([3.0, 7.5]))
    assert torch.allclose(target.sum(1), torch.ones(2))
    assert head.to_score(target).tolist() == pytest.approx([3.0, 7.5], abs=0.01)
    assert head.score_std(target).tolist() == pytest.approx([0.5, 0.5], abs=0.05)  # type: ignore[attr-defined]
    assert float(head.loss(target, target)) == 0.0


def test_pairwise_head_loss_prefers_the_right_order() -> None:
    head = create_head("pairwise", 8, (1.0, 5.0))
    scores = torch.tensor([1.0, 2.0, 3.0])
    right, wrong = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2.0, 1.0, 0.0])
    assert float(head.loss(right, scores)) < float(head.loss(wrong, scores))
    assert 1.0 < float(head.to_score(torch.tensor([0.0]))) == 3.0 < 5.0


def test_regression_metrics_by_hand() -> None:
    t, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 4.0])
    m = metrics.regression_metrics(t, p)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5 / 4))
    assert m["mae"] == pytest.approx(0.25)
    assert m["rmse_normalised"] == pytest.approx(m["rmse"] / 4)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(np.corrcoef(t, p)[0, 1])
    with pytest.raises(ValueError, match="same length"):
        metrics.rmse(t, p[:2])


def test_fold_metrics_are_each_folds_own_in_fold_order() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 5.0])
    p = np.array([1.5, 2.0, 2.5, 4.0, 3.0, 3.0, 4.0])
    folds = np.array([3, 1, 3, 1, 3, 1, 1])
    rows = metrics.fold_metrics(t, p, folds)
    assert [r["fold"] for r in rows] == [1, 3]
    for r, k in zip(rows, (1, 3), strict=True):
        assert r["rmse"] == pytest.approx(metrics.regression_metrics(t[folds == k], p[folds == k])["rmse"])
    assert rows[0]["rmse"] == pytest.approx(math.sqrt(1.0 / 4))  # fold 1: errors 0, 0, 0, -1
    table = metrics.mean_std_table(rows)
    assert table["rmse"]["mean"] == pytest.approx((rows[0]["rmse"] + rows[1]["rmse"]) / 2)


def test_error_per_bin_uses_ten_equal_parts() -> None:
    t = np.array([1.0, 1.1, 4.9, 5.0])
    bins = metrics.error_per_bin(t, t + np.array([0.1, 0.1, -0.2, -0.2]), bins=10, scale=(1.0, 5.0))
    assert len(bins) == 10 and bins[0]["n"] == 2 and bins[-1]["n"] == 2
    assert bins[0]["mae"] == pytest.approx(0.1) and bins[-1]["bias"] == pytest.approx(-0.2)
    assert all(b["n"] == 0 and math.isnan(b["mae"]) for b in bins[1:-1])


def test_top_third_roc_and_youden() -> None:
    t = np.arange(30, dtype=float)
    perfect = metrics.top_fraction_roc(t, t)
    assert perfect["auc"] == 1.0 and perfect["sensitivity"] == 1.0 and perfect["specificity"] == 1.0
    # top third = true 20..29; swap the predictions of 19 and 20: Youden keeps all ten positives
    # and one false positive (J = 1 - 1/20), so precision of the top third is 10/11
    p = t.copy()
    p[[19, 20]] = p[[20, 19]]
    r = metrics.top_fraction_roc(t, p)
    assert (r["sensitivity"], r["specificity"]) == (1.0, pytest.approx(0.95))
    assert r["precision_positive"] == pytest.approx(10 / 11) and r["precision_negative"] == 1.0
    assert r["auc"] == pytest.approx(1 - 1 / 200)


def test_mean_std_table() -> None:
    rows = [{"pearson": 0.8, "rmse": 0.3}, {"pearson": 0.9, "rmse": 0.2}]
    tab = metrics.mean_std_table(rows, keys=("pearson", "rmse"))
    assert tab["pearson"]["mean"] == pytest.approx(0.85)
    assert tab["rmse"]["std"] == pytest.approx(np.std([0.3, 0.2], ddof=1))
