"""Held-out prediction of real votes: Elo vs. plain BT vs. BT with voter reliability.

Data: ../shared/data/pairwise-holidays/votes.csv, 6,682 votes by 10 people on 260
scenery photos (Chen et al., "Learning the Personalized Intransitive Preferences of
Images", IEEE TIP 26(9), 2017). 5-fold cross-validation over votes (shuffled, seed 0):
fit on 4 folds, predict P(winner wins) for each vote of the fifth. Elo replays the
training votes in file order and maps a rating difference to a probability with its
own formula; BT uses the logistic; crowd BT uses the voter's fitted reliability.
Screen sides are not in the data, so no position bias is fitted.

    .venv/bin/python benchmarks/measure/real_votes.py [--data ../shared/data/pairwise-holidays]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from doohable.datasets import pairwise_holidays
from doohable.ranking import bradley_terry, elo, metrics
from doohable.ranking.votes import Comparisons, read_votes_csv

DATA = pairwise_holidays()


def load(folder: Path) -> Comparisons:
    """votes.csv as winner/loser comparisons (sides unknown) over the 260 images of images.csv."""
    with (folder / "images.csv").open() as fh:
        ids = [int(r["image_id"]) for r in csv.DictReader(fh)]
    return read_votes_csv(folder / "votes.csv", ids)[0]


def predict(method: str, train: Comparisons, test: Comparisons, alpha: float) -> np.ndarray:
    """P(the recorded winner wins) for each test vote."""
    if method == "elo":
        r = elo.ratings_from_comparisons(train)
        return np.asarray(elo.expected(r[test.left], r[test.right]))
    res = bradley_terry.fit(train, alpha=alpha, crowd=method == "crowd BT")
    return res.win_probability(test.left, test.right, test.voter if method == "crowd BT" else None)


def cross_validate(comps: Comparisons, folds: int = 5, alpha: float = 1.0, seed: int = 0) -> dict:
    """Pooled held-out accuracy / log-loss per method, and per voter."""
    fold = np.random.default_rng(seed).permutation(len(comps)) % folds
    probs = {m: np.zeros(len(comps)) for m in ("elo", "BT", "crowd BT")}
    for k in range(folds):
        train, test = comps.subset(fold != k), comps.subset(fold == k)
        for m in probs:
            probs[m][fold == k] = predict(m, train, test, alpha)
    out: dict = {"pooled": {m: metrics.vote_prediction(p) for m, p in probs.items()}, "per_voter": {}}
    for v in range(comps.n_voters):
        sel = comps.voter == v
        out["per_voter"][v] = {m: metrics.vote_prediction(p[sel]) for m, p in probs.items()}
    out["reliability"] = bradley_terry.fit(comps, alpha=alpha, crowd=True).reliability.round(3).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    comps = load(args.data)
    print(f"{len(comps)} votes, {comps.n_items} images, {comps.n_voters} voters; 5-fold CV over votes")
    for alpha in (0.3, 1.0, 3.0):
        res = cross_validate(comps, alpha=alpha)
        cells = "  ".join(f"{m}: acc {a:.4f} log-loss {ll:.4f}" for m, (a, ll) in res["pooled"].items())
        print(f"prior precision {alpha}: {cells}")
    res = cross_validate(comps, alpha=1.0)
    print("per voter (alpha 1), accuracy elo / BT / crowd BT, fitted reliability:")
    for v, row in res["per_voter"].items():
        n = int((comps.voter == v).sum())
        print(f"  voter {v} ({n} votes): " + " / ".join(f"{a:.3f}" for a, _ in row.values())
              + f"   reliability {res['reliability'][v]}")


if __name__ == "__main__":
    main()
