"""Training on tiny data: head on features, fine-tuning (seeded, resumable), k-fold CV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from doohable.model.scorer import build_model, model_from_checkpoint
from doohable.model.train import (
    FinetuneConfig,
    crop_batch,
    cross_validate,
    cross_validate_head,
    finetune,
    fit_head,
    fit_head_pairs,
    head_scores,
    param_groups,
    save_checkpoint,
)

CFG = FinetuneConfig(
    backbone="mobilenet_v2",
    input_size=32,
    epochs=2,
    batch_size=4,
    warmup_epochs=0.5,
    val_fraction=0.25,
    patience=5,
    tta_flip=False,
)


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic images whose brightness is the score, so there is something to learn."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(1, 5, n)
    pix = (scores[:, None, None, None] * 50 + rng.normal(0, 5, (n, 37, 37, 3))).clip(0, 255).astype(np.uint8)
    return pix, scores


def _tiny_model() -> torch.nn.Module:
    return build_model("mobilenet_v2", pretrained=False, input_size=32)


def test_crop_batch_random_and_centre() -> None:
    x = torch.arange(2 * 6 * 6 * 3, dtype=torch.uint8).view(2, 6, 6, 3)
    centre = crop_batch(x, 4, train=False)
    assert centre.shape == (2, 3, 4, 4) and torch.equal(centre[0, 0, 0], x[0, 1, 1:5, 0].float())
    g = torch.Generator().manual_seed(0)
    rand = crop_batch(x, 4, train=True, gen=g)
    assert rand.shape == (2, 3, 4, 4)
    # every random crop row is a (possibly reversed) run of 4 consecutive pixels of the source row
    row = rand[0, 0, 0].tolist()
    assert abs(row[1] - row[0]) == 3 and abs(row[3] - row[0]) == 9


def test_layerwise_learning_rates_decay_towards_the_input() -> None:
    model = _tiny_model()
    groups = param_groups(model, CFG)
    lrs = [g["lr"] for g in groups]
    assert lrs[0] == CFG.lr and lrs[1] == CFG.backbone_lr
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) - 2  # minus ImageNet fc


@pytest.mark.slow
def test_head_on_features_learns_and_cv_reports_each_fold() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(80, 1280)).astype(np.float32)
    scores = 3 + feats[:, 0] * 0.5 + rng.normal(0, 0.05, 80)
    model = _tiny_model()
    hist = fit_head(model, feats, scores, epochs=300, lr=1e-2)
    assert hist[-1] < hist[0] / 2
    assert np.corrcoef(head_scores(model, feats), scores)[0, 1] > 0.9
    cv = cross_validate_head(_tiny_model(), feats, scores, np.repeat([1, 2], 40), epochs=30, lr=1e-2)
    assert [r["fold"] for r in cv.folds] == [1, 2] and not np.isnan(cv.oof).any()
    assert set(cv.summary["pearson"]) == {"mean", "std"}


def test_pairwise_head_from_vote_pairs() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(30, 1280)).astype(np.float32)
    utility = feats[:, 0]
    a, b = rng.integers(0, 30, 300), rng.integers(0, 30, 300)
    keep = a != b
    w = np.where(utility[a] > utility[b], a, b)[keep]
    lo = np.where(utility[a] > utility[b], b, a)[keep]
    model = build_model("mobilenet_v2", "pairwise", pretrained=False, input_size=32)
    fit_head_pairs(model, feats, w, lo, epochs=40, lr=1e-2)
    pred = head_scores(model, feats)
    assert np.mean(pred[w] > pred[lo]) > 0.9 and pred.min() >= 1.0 and pred.max() <= 5.0


@pytest.mark.slow
def test_finetune_is_seeded_and_resumes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pix, scores = _images(12)
    a = finetune(CFG, pix, scores, pix[:4], scores[:4], device=torch.device("cpu"))
    assert len(a.history) == 2 and "val_rmse" in a.history[0] and 0 <= a.best_epoch <= 1

    class Stop(Exception):
        pass

    def stop_after_first(stage: str, done: int, total: int, info: dict[str, float]) -> None:
        if done == 1:
            raise Stop

    ck = tmp_path / "run.pt"
    with pytest.raises(Stop):
        finetune(
            CFG,
            pix,
            scores,
            pix[:4],
            scores[:4],
            device=torch.device("cpu"),
            checkpoint=ck,
            progress=stop_after_first,
        )
    assert ck.is_file()
    b = finetune(CFG, pix, scores, pix[:4], scores[:4], device=torch.device("cpu"), checkpoint=ck)
    assert [h["train_loss"] for h in b.history] == pytest.approx([h["train_loss"] for h in a.history])
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float()), k
    with pytest.raises(ValueError, match="other settings"):
        finetune(
            FinetuneConfig(**{**CFG.__dict__, "epochs": 3}),
            pix,
            scores,
            checkpoint=ck,
            device=torch.device("cpu"),
        )
    saved = save_checkpoint(b.model, tmp_path / "m.pt")
    again = model_from_checkpoint(torch.load(saved, weights_only=False))
    assert again.config() == b.model.config()


def test_cross_validate_uses_the_fixed_folds() -> None:
    torch.set_num_threads(1)
    pix, scores = _images(16, seed=2)
    folds = np.repeat([1, 2], 8)
    cfg = FinetuneConfig(**{**CFG.__dict__, "epochs": 1})
    cv = cross_validate(cfg, pix, scores, folds, device=torch.device("cpu"))
    assert [r["fold"] for r in cv.folds] == [1, 2]
    assert not np.isnan(cv.oof).any() and len(cv.histories) == 2
    assert all(np.isfinite(r["rmse"]) for r in cv.folds)


def test_frozen_groups_do_not_move_and_leave_the_optimiser() -> None:
    pix, scores = _images(12)
    model = build_model("mobilenet_v2", "regression", input_size=32, tta_flip=False)
    lowest = [p.detach().clone() for p in model.backbone.layer_groups()[0]]
    top = [p.detach().clone() for p in model.backbone.layer_groups()[-1]]
    cfg = FinetuneConfig(**{**CFG.__dict__, "freeze_groups": 1})
    groups = param_groups(model, cfg)
    assert len(groups) == len(model.backbone.layer_groups())  # head + 5 trainable groups
    fit = finetune(cfg, pix, scores, device=torch.device("cpu"), model=model)
    after_low = fit.model.backbone.layer_groups()[0]
    after_top = fit.model.backbone.layer_groups()[-1]
    assert all(torch.equal(a, b) for a, b in zip(lowest, after_low, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(top, after_top, strict=True))
    with pytest.raises(ValueError, match="freeze_groups must be in 0..5"):
        param_groups(model, FinetuneConfig(freeze_groups=6))
