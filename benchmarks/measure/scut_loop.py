"""The in-house loop on real images: SCUT-FBP5500 fold 1 as a company's new collection.

- truth: each image's mean score; the simulated voters (accuracy 0.75, 10% spammers, as in
  the simulator) vote on pairs by it;
- the prior: a head on frozen ImageNet features (mobilenet_v2) trained on the other folds
  only, its predictions on the collection (out-of-fold);
- the loop, for 1, 2, 4, 8 and 20 votes per image: ``active`` with the prior -> crowd-BT
  ratings -> the same head trained on those ratings; its Pearson with the true scores is
  measured by 2-fold cross-validation inside the collection (train on one half's ratings,
  predict the other half), against the same head trained on the true means.

    nice -n 10 .venv/bin/python benchmarks/measure/scut_loop.py --seeds 3 --out scut_loop.json
    (--limit N: the first N images of each fold, for a quick run)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from doohable import datasets
from doohable.model import train as T
from doohable.model.data import load_images_cached, load_scut
from doohable.model.runtime import resize_side
from doohable.model.scorer import build_model
from doohable.ranking.metrics import mean_ci95_json as _ci
from doohable.ranking.simulate import CrowdConfig, campaign, estimate

BUDGETS = [1.0, 2.0, 4.0, 8.0, 20.0]
CROWD = CrowdConfig(voter_accuracy=0.75, spammers=0.1)


def features(root: Path, limit: int | None, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, true mean scores, folds) of the SCUT images, features cached under ``cache``."""
    data = load_scut(root, limit=limit)
    model = build_model("mobilenet_v2", "regression")
    arr = load_images_cached(data.paths, resize_side(model.input_size), cache)
    data = data.subset(arr.kept)
    f = cache / f"scut-loop-features-{len(data)}-{limit}.npy"
    if f.is_file():
        feats = np.load(f)
    else:
        feats = T.extract_features(model, arr.pixels, device=T.pick_device("cpu"))
        np.save(f, feats)
    return feats, data.scores, data.folds


def head_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int) -> np.ndarray:
    """The bundled recipe's regression head, fitted on features, predicting others."""
    model = build_model("mobilenet_v2", "regression", pretrained=False)
    T.fit_head(model, train_x, train_y, epochs=300, seed=seed)
    return T.head_scores(model, test_x)


def cv_pearson(x: np.ndarray, labels: np.ndarray, truth: np.ndarray, seed: int) -> float:
    """2-fold CV inside the collection: train on one half's labels, Pearson of the other half's
    predictions with the truth (both halves' predictions pooled)."""
    half = np.random.default_rng(seed).permutation(len(x)) % 2 == 0
    pred = np.empty(len(x))
    for side in (half, ~half):
        lab = labels[~side]
        lab = 1.0 + 4.0 * (lab - lab.min()) / (float(lab.max() - lab.min()) or 1.0)  # ratings -> 1..5
        pred[side] = head_predict(x[~side], lab, x[side], seed)
    return float(np.corrcoef(pred, truth)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=datasets.scut_fbp5500())
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    cache = Path(os.environ.get("DOOHABLE_HOME", ".doohable")) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    feats, truth, folds = features(args.data, args.limit, cache)
    coll = folds == 1
    x, y = feats[coll], truth[coll]
    prior = head_predict(feats[~coll], truth[~coll], x, 0)  # out-of-fold: never saw the collection
    q = (y - y.mean()) / y.std()
    out: dict = {"images": int(coll.sum()), "train_images": int((~coll).sum()), "seeds": args.seeds,
                 "prior_pearson": float(np.corrcoef(prior, y)[0, 1])}
    ref = [cv_pearson(x, y, y, s) for s in range(args.seeds)]
    out["true_means"] = _ci(ref)
    rows: dict[float, list[float]] = {b: [] for b in BUDGETS}
    rank_acc: dict[float, list[float]] = {b: [] for b in BUDGETS}
    for s in range(args.seeds):
        for votes, state, _ in campaign("active", q, max(BUDGETS), CROWD, s, BUDGETS, prior):
            b = votes / len(q)
            ratings = estimate(state, "crowd")
            rows[b].append(cv_pearson(x, ratings, y, s))
            rank_acc[b].append(float(np.corrcoef(ratings, y)[0, 1]))
            print(f"seed {s} {b:g} votes/image: ratings r={rank_acc[b][-1]:.3f}, model r={rows[b][-1]:.3f}",
                  flush=True)
    out["loop"] = {str(b): {"model_pearson": _ci(rows[b]), "ratings_pearson": _ci(rank_acc[b]),
                            "share_of_true_means": float(np.mean(rows[b]) / np.mean(ref))} for b in BUDGETS}
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
