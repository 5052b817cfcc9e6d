"""The scorer as a prior: votes per image needed with a model of Pearson R, against no model.

N = 1,000 images, voter accuracy 0.75, 10% spammers, the same campaigns (seeds) for every
strategy (the model's scores come from their own random stream). Measured in one run:

- baseline: ``report`` + Elo at 20 votes/image (the study's scheme);
- ``active`` + crowd BT without a model, and with a model of R = 0.9, 0, -0.5, along the
  budgets 1-20 votes/image; per budget the paired difference (with model - without) per seed;
- ``threshold`` with R = 0.9 at 1-3 votes/image (top-third precision).

    nice -n 10 .venv/bin/python benchmarks/measure/simulate_prior.py --seeds 20 --jobs 2 --out prior.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from doohable.ranking import prior as model_prior
from doohable.ranking.metrics import mean_ci95
from doohable.ranking.simulate import CrowdConfig, Point, run_campaign

CURVE = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0]
CROWD = CrowdConfig(voter_accuracy=0.75, spammers=0.1)
# (label, strategy, prior Pearson, budget)
RUNS: list[tuple[str, str, float | None, float]] = [
    ("report", "report", None, 20.0),
    ("active", "active", None, 20.0),
    ("active R=0.9", "active", 0.9, 6.0),
    ("active R=0", "active", 0.0, 20.0),
    ("active R=-0.5", "active", -0.5, 20.0),
    ("threshold R=0.9", "threshold", 0.9, 3.0),
]


def one(job: tuple[int, int, int]) -> tuple[int, int, list[Point]]:
    k, seed, images = job
    _label, strategy, prior, budget = RUNS[k]
    stops = [c for c in CURVE if c <= budget]
    ratings = ["elo"] if strategy == "report" else None
    return k, seed, run_campaign(strategy, images, budget, CROWD, seed, stops, ratings, prior_pearson=prior)


def summary(points: list[Point], key: str) -> dict[str, Any]:
    mean, (lo, hi) = mean_ci95([getattr(p, key) for p in points])
    return {"mean": mean, "ci95": [lo, hi]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0, help="seed of the first campaign")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--z-min", type=float, default=None,
                    help="the prior's gate (doohable.ranking.prior.Z_MIN) instead of the shipped one")
    args = ap.parse_args()
    if args.z_min is not None:
        model_prior.Z_MIN = args.z_min  # the workers are forked: they see it too
    t0 = time.time()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(k, s, args.images) for s in seeds for k in range(len(RUNS))]
    got: dict[tuple[int, int], list[Point]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for k, s, pts in pool.map(one, jobs):
            got[k, s] = pts
            print(json.dumps({"run": RUNS[k][0], "seed": s, "points": [
                [p.votes_per_image, p.pairwise_accuracy, p.top_third_precision] for p in pts]}), flush=True)
    out: dict[str, Any] = {"seeds": list(seeds), "images": args.images, "z_min": model_prior.Z_MIN,
                           "runs": {}}
    for k, (label, *_rest) in enumerate(RUNS):
        curve = {}
        for v in sorted({p.votes_per_image for p in got[k, seeds[0]]}):
            at = [p for s in seeds for p in got[k, s] if abs(p.votes_per_image - v) < 1e-9]
            curve[v] = {m: summary(at, m) for m in ("pairwise_accuracy", "top_third_precision")}
        out["runs"][label] = curve
    target = out["runs"]["report"][20.0]
    out["target"] = target
    plain = {s: {p.votes_per_image: p.pairwise_accuracy for p in got[1, s]} for s in seeds}
    out["paired_vs_active"] = {}
    for k in (2, 3, 4):
        diffs = {}
        for v in sorted(out["runs"][RUNS[k][0]]):
            d = [p.pairwise_accuracy - plain[s][v] for s in seeds for p in got[k, s]
                 if abs(p.votes_per_image - v) < 1e-9]
            mean, (lo, hi) = mean_ci95(d)
            diffs[v] = {"mean": mean, "ci95": [lo, hi], "min": float(np.min(d))}
        out["paired_vs_active"][RUNS[k][0]] = diffs
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
