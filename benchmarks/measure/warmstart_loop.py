"""Starting from a bundled model (``--from-model photo``) against the same fit from nothing, on
real images: SCUT-FBP5500 fold 1 as a company's collection, simulated voters.

- truth: each image's mean score; the simulated voters (accuracy 0.75, 10 % spammers, as in
  the simulator) vote on random pairs by it;
- features: the bundled ``photo`` model's own graph (``doohable.model.warmstart.features``);
- arms, for 1, 2, 4, 8 and 20 votes per image, by 2-fold cross-validation inside the
  collection (fit on the votes between one half's images, Pearson of the other half's
  scores with the truth, both halves pooled):
  ``bundled``: the shipped photo model, no votes; ``from_model``: its head refitted to the
  votes (``fit_head``, prior strength by CV); ``from_zero``: the same fit with the prior
  centred on a zero head (what the votes alone give on the same features; its logit scale is
  one per standard deviation of the bundled scores, which changes no ranking).

    nice -n 10 .venv/bin/python benchmarks/measure/warmstart_loop.py --limit 300 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from doohable import datasets
from doohable.model import warmstart as W
from doohable.model.data import load_scut
from doohable.ranking.metrics import mean_ci95_json as _ci
from doohable.ranking.simulate import CrowdConfig, campaign

BUDGETS = [1.0, 2.0, 4.0, 8.0, 20.0]
CROWD = CrowdConfig(voter_accuracy=0.75, spammers=0.1)


def cv_pearson(head: W.BundledHead, feats: np.ndarray, votes: W.Votes, truth: np.ndarray, seed: int,
               sharpness: float | None) -> float:
    """Fit on the votes inside one half, score the other half; Pearson of the pooled scores."""
    half = np.random.default_rng([seed, 9]).permutation(len(truth)) % 2 == 0
    z = (feats - head.mu) / head.sd
    pred = np.empty(len(truth))
    for side in (half, ~half):
        train = np.flatnonzero(~side)
        pos = {int(i): k for k, i in enumerate(train)}
        inside = np.array([int(w) in pos and int(lo) in pos for w, lo in zip(votes.winners, votes.losers,
                                                                                strict=True)], bool)
        sub = votes.subset(inside)
        local = W.Votes(np.array([pos[int(i)] for i in sub.winners], int),
                        np.array([pos[int(i)] for i in sub.losers], int))
        weight, _ = W.fit_head(head, feats[train], local, seed=seed, sharpness=sharpness)
        pred[side] = z[side] @ weight
    return float(np.corrcoef(pred, truth)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=datasets.scut_fbp5500())
    ap.add_argument("--limit", type=int, default=300, help="images of fold 1 (the collection)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    data = load_scut(args.data)
    coll = np.flatnonzero(data.folds == 1)[: args.limit]
    head = W.load_head("photo")
    feats, kept, errors = W.features(head, [Path(data.paths[i]).read_bytes() for i in coll], threads=2)
    assert not errors, errors
    y = data.scores[coll][kept]
    q = (y - y.mean()) / y.std()
    zero = replace(head, weight=np.zeros_like(head.weight))
    bundled = ((feats - head.mu) / head.sd) @ head.weight
    out: dict = {"images": len(y), "seeds": args.seeds,
                 "bundled_pearson": float(np.corrcoef(bundled, y)[0, 1])}
    arms = {a: {b: [] for b in BUDGETS} for a in ("from_model", "from_zero")}
    for s in range(args.seeds):
        for n, state, _ in campaign("random", q, max(BUDGETS), CROWD, s, BUDGETS):
            c = state.comparisons()
            decisive = c.outcome != 0.5
            left_won = c.outcome[decisive] == 1.0
            lw, rt = c.left[decisive], c.right[decisive]
            votes = W.Votes(np.where(left_won, lw, rt), np.where(left_won, rt, lw))
            b = n / len(y)
            for arm, h, k in (("from_model", head, None), ("from_zero", zero, 1.0 / bundled.std())):
                arms[arm][b].append(cv_pearson(h, feats, votes, y, s, k))
            print(f"seed {s} {b:g} votes/image: from_model r={arms['from_model'][b][-1]:.3f}, "
                  f"from_zero r={arms['from_zero'][b][-1]:.3f}", flush=True)
    out["loop"] = {str(b): {arm: _ci(arms[arm][b]) for arm in arms} for b in BUDGETS}
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
