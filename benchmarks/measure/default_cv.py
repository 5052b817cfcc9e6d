"""The default scorer's quality by cross-validation, on both shared sets, as users get it.

The default (``doohable.model.default``) scores an image with the face part (the bundled
``selfie``) where its gate sees a portrait, and with the photo part (``photo``) elsewhere, then
applies the bundled combination. Neither model may be scored on images it was trained on, so:

The gate's threshold is chosen inside each training part too (``choose_gate_threshold`` on
the other folds' faces and photos; live-challenge's folds paired with SCUT's as ``fold % 4``),
and the shipped threshold is the one chosen on everything (``--save PATH`` writes it into a
copy of the bundled combination).

- SCUT-FBP5500 (4,400 faces, 4 fixed folds): the gate runs on every face; a gated face gets
  ``selfie``'s nested-CV out-of-fold prediction (``benchmarks/results/gpu-ensemble5/
  oof_selfie_stack.json``, the shipped model's recipe), an ungated one the ``photo`` model
  (never trained on SCUT). Pearson, RMSE per fold, mean ± std.
- live-challenge (929 photos, 5 fixed folds): the gate runs on every photo; an ungated photo
  gets the photo part's nested-CV out-of-fold prediction (the shipped recipe: the ``photo``
  model's backbone and input policy, multi-level features, ridge head, penalty chosen inside
  each training part), a gated one the ``selfie`` score (never trained on live-challenge).
  SRCC, PLCC per fold.

Run (features cached in ``--cache``)::

    PYTHONPATH=src:benchmarks/measure .venv/bin/python benchmarks/measure/default_cv.py --json-out cv.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from photo_features import POLICIES, features
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from doohable import datasets
from doohable.model import photo
from doohable.model import photo_train as pt
from doohable.model.default import GATE_GRID, Combination, choose_gate_threshold, load_combined

OOF = Path(__file__).resolve().parents[1] / "results" / "gpu-ensemble5" / "oof_selfie_stack.json"


def gate_and(cs: Any, paths: list[Path], score: Any, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(the gate's best detector score, ``score(batch of images)``) for every image, in batches."""
    best, scores = [], []
    for i in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[i : i + batch]]
        best.append(np.array([cs.gate.best_score(im, cs.face_size) for im in imgs]))
        scores.append(score(imgs))
    return np.concatenate(best), np.concatenate(scores)


def nested_gate(own: np.ndarray, own_folds: np.ndarray, other: np.ndarray, other_folds: np.ndarray,
                own_are_faces: bool, second: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Each image of ``own`` gated with the threshold chosen without its fold (the other set's
    folds paired as ``fold % 4``), or opened by the Haar cascade's second opinion (``second``):
    (gate open?, the threshold of each fold)."""
    gate, chosen = np.zeros(len(own), bool), []
    for k in np.unique(own_folds):
        a, b = own[own_folds != k], other[other_folds % 4 != k % 4]
        t = choose_gate_threshold(a, b) if own_are_faces else choose_gate_threshold(b, a)
        m = own_folds == k
        gate[m] = (own[m] >= t) | second[m]
        chosen.append(t)
    return gate, chosen


def per_fold(pred: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, list[float]]:
    """Pearson, SRCC, RMSE per fold -> {metric: [mean, std]} (sample std over folds)."""
    rows = []
    for f in np.unique(folds):
        m = folds == f
        rows.append({"pearson": pearsonr(pred[m], y[m])[0], "srcc": spearmanr(pred[m], y[m])[0],
                     "rmse": float(np.sqrt(np.mean((pred[m] - y[m]) ** 2)))})
    return {k: [float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows], ddof=1))]
            for k in rows[0]}


def scut(cs: Any, photo_part: np.ndarray, gate: np.ndarray) -> dict[str, Any]:
    rows = list(csv.DictReader((datasets.scut_fbp5500() / "labels.csv").open()))
    oof = json.loads(OOF.read_text())
    face_oof = dict(zip(oof["images"], oof["oof"], strict=True))
    stems = [Path(r["image"]).stem for r in rows]
    face = np.array([face_oof[s] if g else np.nan for s, g in zip(stems, gate, strict=True)])
    pred = cs.combination.combine(photo_part, face)
    y, folds = np.array([float(r["score"]) for r in rows]), np.array([int(r["fold"]) for r in rows])
    return {"images": len(rows), "gated": int(gate.sum()), "default": per_fold(pred, y, folds),
            "face_part_alone": per_fold(np.array([face_oof[s] for s in stems]), y, folds)}


def live(cs: Any, cache: Path, gate: np.ndarray) -> dict[str, Any]:
    labels = photo.load_live()
    meta = cs.photo.metadata
    policy = next(k for k, (name, _) in POLICIES.items() if name == cs.photo.resize_policy)
    x = features(labels, meta["backbone"], policy, cache)
    fit, grid = pt.head_fitter("regression"), pt.GRIDS["regression"]
    r = pt.nested_cv(x, labels, fit, grid, pt.fold_splits(labels.folds))
    photo_oof = np.asarray(photo.mos_to_score(r["oof_mos"]), np.float64)
    face = np.full(len(gate), np.nan)
    if gate.any():
        gated = [Image.open(p).convert("RGB") for p, g in zip(labels.paths, gate, strict=True) if g]
        face[gate] = cs.face.score_images(gated)
    pred = cs.combination.combine(photo_oof, face)
    mos = np.asarray(photo.score_to_mos(pred), np.float64)  # RMSE on the MOS scale (0-100)
    return {"images": len(labels), "gated": int(gate.sum()), "photo_part": f"{meta['backbone']} {policy}",
            "default": per_fold(mos, labels.mos, labels.folds),
            "photo_part_alone": per_fold(r["oof_mos"], labels.mos, labels.folds)}


def gate_scores(cs: Any) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each set's best gate scores, folds, the Haar cascade's second opinion (True: it would
    open the gate) on the images whose best score is from ``gate_second_opinion`` up to the
    grid's top (any fold's threshold), and the photo part's scores, in one pass."""
    out = {}
    floor = cs.combination.gate_second_opinion
    for name, root in (("scut", datasets.scut_fbp5500()), ("live", datasets.live_challenge())):
        rows = list(csv.DictReader((root / "labels.csv").open()))
        paths = [root / "images" / r["image"] for r in rows]
        best, photo_part = gate_and(cs, paths, cs.photo.score_images)
        second = np.zeros(len(rows), bool)
        for i in np.flatnonzero((best >= floor) & (best < max(GATE_GRID))) if floor is not None else []:
            small = cs.gate.region(Image.open(paths[i]).convert("RGB"), cs.face_size)
            second[i] = bool(cs.gate.haar_faces(small))
        out[name] = (best, np.array([int(r["fold"]) for r in rows]), second, photo_part)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--save", type=Path, help="write the combination with the gate threshold chosen on all")
    args = ap.parse_args()
    cs = load_combined(threads=2)
    (sb, sf, s2, scut_photo), (lb, lf, l2, _) = gate_scores(cs).values()
    scut_gate, scut_t = nested_gate(sb, sf, lb, lf, own_are_faces=True, second=s2)
    live_gate, live_t = nested_gate(lb, lf, sb, sf, own_are_faces=False, second=l2)
    everything = choose_gate_threshold(sb, lb)
    out = {"gate_threshold": {"shipped": cs.combination.gate_threshold, "chosen_on_everything": everything,
                              "scut_folds": scut_t, "live_folds": live_t,
                              "opens_at_0": {"scut": int((sb >= 0).sum()), "live": int((lb >= 0).sum())},
                              "second_opinion_from": cs.combination.gate_second_opinion,
                              "second_opinion_opens": {"scut": int(s2.sum()), "live": int(l2.sum())}},
           "scut": scut(cs, scut_photo, scut_gate), "live": live(cs, args.cache, live_gate)}
    if args.save:
        doc = cs.combination.to_json()
        doc["gate_threshold"] = everything
        doc["fitted"] = {**doc["fitted"], "gate_threshold": (
            f"the best balanced accuracy on {len(sb)} SCUT-FBP5500 faces and {len(lb)} live-challenge photos "
            "(benchmarks/measure/default_cv.py --save)")}
        args.save.write_text(json.dumps(doc, indent=2) + "\n")
        Combination.load(args.save)  # still a readable combination
    print(json.dumps(out, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
