"""Fit the default scorer's combination on labelled data, with cross-validated figures.

Scores the parts (``CombinedScorer.score_parts``) of SCUT-FBP5500 faces (target: the beauty
mean, 1-5) and live-challenge photos (target: ``1 + 4 * MOS / 100``), then:

- cross-validation on the sets' fixed folds (SCUT's 4, live-challenge's 5, paired as
  ``fold % 4``): the coefficients fitted on the other folds, applied to the held-out one;
  Pearson and RMSE on the faces, SRCC and PLCC on the photos, of the out-of-fold scores; the
  same for the face part alone and the photo part alone;
- the combination fitted on everything, written to ``--out`` (``bundled/default.json`` to ship
  it).

Run: ``.venv/bin/python benchmarks/recipes/fit_default.py --model default --out /tmp/default.json``
(``--faces N --photos N`` for a subset).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from doohable import datasets
from doohable.batch import prepare_bytes
from doohable.model.calibrate import fit_from_labels
from doohable.model.default import CombinedScorer, fit_combination
from doohable.model.load import load_any

SHARED = datasets.shared_data()


def rows_of(name: str, limit: int) -> list[dict[str, str]]:
    with (SHARED / name / "labels.csv").open() as f:
        return list(csv.DictReader(f))[:limit]


def parts_of(scorer: CombinedScorer, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    photo, face = [], []
    for i in range(0, len(paths), 8):
        prepared = [prepare_bytes(p.read_bytes(), scorer) for p in paths[i : i + 8]]
        _, parts = scorer.score_parts(scorer.stack(prepared))
        photo.append(parts["photo"])
        face.append(parts["face"])
    return np.concatenate(photo), np.concatenate(face)


def cross_validate(photo: np.ndarray, face: np.ndarray, y: np.ndarray, folds: np.ndarray,
                   scorer: CombinedScorer) -> np.ndarray:
    """Out-of-fold scores: the combination refitted without each fold."""
    out = np.zeros(len(y))
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        comb = fit_combination(photo[tr], face[tr], y[tr], scorer.combination, fitted={})
        out[te] = comb.combine(photo[te], face[te])
    return out


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    ok = ~np.isnan(pred)
    p, t = pred[ok], y[ok]
    return {"n": int(ok.sum()), "pearson": float(pearsonr(p, t)[0]), "srcc": float(spearmanr(p, t)[0]),
            "rmse": float(np.sqrt(np.mean((p - t) ** 2)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="a combined scorer (name or combination JSON)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--photos", type=int, default=100_000)
    args = ap.parse_args()
    scorer = load_any(args.model, threads=1)
    if not isinstance(scorer, CombinedScorer):
        raise SystemExit(f"{args.model}: not a combined scorer")
    scut, live = rows_of("scut-fbp5500", args.faces), rows_of("live-challenge", args.photos)
    sets = {
        "scut": ([SHARED / "scut-fbp5500" / "images" / r["image"] for r in scut],
                 np.array([float(r["score"]) for r in scut]), np.array([int(r["fold"]) % 4 for r in scut])),
        "live": ([SHARED / "live-challenge" / "images" / r["image"] for r in live],
                 np.array([1 + 4 * float(r["mos"]) / 100 for r in live]),
                 np.array([int(r["fold"]) % 4 for r in live])),
    }
    parts = {k: parts_of(scorer, paths) for k, (paths, _, _) in sets.items()}
    photo = np.concatenate([parts[k][0] for k in sets])
    face = np.concatenate([parts[k][1] for k in sets])
    y = np.concatenate([sets[k][1] for k in sets])
    folds = np.concatenate([sets[k][2] for k in sets])
    oof = cross_validate(photo, face, y, folds, scorer)
    report: dict[str, Any] = {"model": scorer.name, "version": scorer.version}
    start = 0
    for k, (_, yk, _) in sets.items():
        sl = slice(start, start + len(yk))
        start += len(yk)
        report[k] = {"default_cv": metrics(oof[sl], yk), "photo_part": metrics(photo[sl], yk),
                     "face_part": metrics(face[sl], yk) if (~np.isnan(face[sl])).sum() > 2 else None,
                     "gate_open_share": float(np.mean(~np.isnan(face[sl])))}
    data = f"SCUT-FBP5500 ({len(scut)}) + live-challenge ({len(live)})"
    comb = fit_from_labels(scorer, photo, face, y, data=data)
    cv = {k: report[k]["default_cv"] for k in sets}
    comb = dataclasses.replace(comb, fitted={**comb.fitted, "cv": cv})
    report["combination"] = comb.save(args.out).as_posix()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
