"""How far can a model-assisted ranking go at 1-6 votes/image? Oracles with the scorer as a prior.

The loop issue asks: with a model of Pearson R = 0.9, do <= 3 votes/image reach the study's
scheme (``report`` + Elo at 20 votes/image)? This measures what is possible at all, on the
campaigns of ``simulate_prior.py`` (N = 1,000, voter accuracy 0.75, 10 % spammers; seed k
is the same truth, crowd, voter sequence and model as there):

- designs: ``active`` as shipped (it learns the model's weight from the votes), and oracle
  designs that KNOW every true quality (``simulate_oracle.py``'s ``rank<d>`` / ``qwin<c>``);
- estimators, at every checkpoint: crowd BT with the learned prior as shipped; and an
  oracle estimator, the MAP under the TRUE vote model (the crowd's slope, each voter's
  reliability and the left bias) and the TRUE prior of q given the model's score
  (``N(R s, 1 - R²)``, precision 5.26 at R = 0.9): nothing learned, only q fitted;
- the information bound: by the van Trees inequality the mean squared error of any
  estimator of q, whatever the design, is at least ``1 / (1/(1 - R²) + 2 k I*)`` at k
  votes/image, with ``I*`` the Fisher information of a vote on the best pair (each vote
  informs two images; counting its whole information for both is generous). Turned into
  pairwise accuracy as if the errors were Gaussian and independent (``1 - arccos(r)/π``,
  ``r = sqrt(1 - MSE)``): a guide, not a theorem, since correlated errors between
  neighbours could order them better than independent ones.

    nice -n 10 .venv/bin/python benchmarks/research/simulate_prior_bound.py --seeds 10 --out bound.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from simulate_headline import fmt
from simulate_oracle import (
    HEADLINE,
    Recording,
    _oracle_from_spec,
    crowd_of,
    information_ratio,
    true_model_map,
)

from doohable.ranking import metrics
from doohable.ranking.scheduler import Scheduler, create
from doohable.ranking.simulate import Crowd, run_campaign, simulate
from doohable.ranking.state import RatingState

CHECKPOINTS = [1.0, 2.0, 3.0, 4.0, 6.0]
R = 0.9


def recorded(name: str, make_inner: Callable[[np.ndarray, Crowd], Scheduler], n: int,
             sinks: list[dict[float, float]], mses: list[dict[float, float]]
             ) -> Callable[[np.ndarray, Crowd], Scheduler]:
    """A factory for :func:`run_campaign`: ``make_inner``'s scheduler, also ranked by the oracle
    estimator at each checkpoint (pairwise accuracy into ``sinks``, squared error into ``mses``,
    a new dict per campaign)."""
    stops = {round(c * n): c for c in CHECKPOINTS}

    def make(q: np.ndarray, crowd: Crowd) -> Scheduler:
        sink: dict[float, float] = {}
        mse: dict[float, float] = {}
        sinks.append(sink)
        mses.append(mse)
        last: list[np.ndarray | None] = [None]

        def measure(state: RatingState, at: float) -> None:
            assert state.prior is not None
            mean = R * state.prior.scores  # E[q | s]: q ~ N(0, 1), s standardised, Pearson R
            last[0] = est = true_model_map(state, crowd, 1.0 / (1.0 - R * R), last[0], mean)
            sink[at] = metrics.pairwise_accuracy(q, est)
            mse[at] = float(np.mean((est - q) ** 2))
        return Recording(make_inner(q, crowd), stops, measure)
    make.name = name  # type: ignore[attr-defined]
    return make


def accuracy_of_mse(mse: float) -> float:
    """Pairwise accuracy of estimates with independent Gaussian errors of this MSE (q ~ N(0, 1))."""
    return 1.0 - math.acos(math.sqrt(max(0.0, 1.0 - mse))) / math.pi


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--designs", default="active,threshold,rank16,rank256,qwin1,qwin2,qwin3")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    out: dict[str, Any] = {"seeds": args.seeds, "images": args.images, "prior_pearson": R,
                           "checkpoints": CHECKPOINTS}

    base = simulate("report", args.images, 20.0, HEADLINE, args.seeds, "elo")
    target = base.summary()["pairwise_accuracy"]
    out["baseline"] = target
    print(f"baseline report+elo @20: {fmt(target)}", flush=True)

    best = np.array([information_ratio(crowd_of(s, args.images, HEADLINE))[1] for s in range(args.seeds)])
    prior_precision = 1.0 / (1.0 - R * R)
    bound = {k: float(np.mean([accuracy_of_mse(1.0 / (prior_precision + 2.0 * k * i)) for i in best]))
             for k in [0.0, *CHECKPOINTS]}
    mse_needed = 1.0 - math.cos(math.pi * (1.0 - target["mean"])) ** 2
    need = (1.0 / mse_needed - prior_precision) / (2.0 * best.mean())
    out["information_bound"] = {"best_pair_information": best.tolist(), "accuracy": bound,
                                "votes_per_image_to_target": need}
    print(f"information of a vote on the best pair: {best.mean():.4f}; bound (Gaussian mapping): "
          + "  ".join(f"{k:g}:{a:.4f}" for k, a in bound.items())
          + f"; the target needs >= {need:.2f} votes/image", flush=True)

    for design in args.designs.split(","):
        t = time.time()
        sinks: list[dict[float, float]] = []
        inner: Callable[[np.ndarray, Crowd], Scheduler]
        if design in ("active", "threshold"):
            inner = lambda q, crowd, d=design: create(d)  # noqa: E731
        else:
            inner = _oracle_from_spec(design)
        mses: list[dict[float, float]] = []
        make = recorded(design, inner, args.images, sinks, mses)
        shipped: list[dict[float, float]] = []
        for seed in range(args.seeds):
            pts = run_campaign(make, args.images, max(CHECKPOINTS), HEADLINE, seed, CHECKPOINTS,
                               prior_pearson=R)
            shipped.append({p.votes_per_image: p.pairwise_accuracy for p in pts})
        entry = {}
        for label, curves in (("crowd BT, learned prior (shipped)", shipped),
                              ("true vote model, true prior (oracle)", sinks)):
            entry[label] = {v: metrics.mean_ci95_json([c[v] for c in curves]) for v in CHECKPOINTS}
        # the Gaussian mapping checked on a real estimator: the accuracy its own MSE would give
        entry["oracle estimator: mean squared error"] = {
            v: float(np.mean([m[v] for m in mses])) for v in CHECKPOINTS}
        entry["oracle estimator: accuracy its MSE maps to"] = {
            v: float(np.mean([accuracy_of_mse(m[v]) for m in mses])) for v in CHECKPOINTS}
        out[design] = entry
        print(f"{design}  [{time.time() - t:.0f} s]", flush=True)
        for label, curve in entry.items():
            print(f"   {label:<42} " + "  ".join(
                f"{v:g}:{a['mean'] if isinstance(a, dict) else a:.4f}" for v, a in curve.items()), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1))
    out["seconds"] = time.time() - t0
    print(f"{out['seconds']:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
