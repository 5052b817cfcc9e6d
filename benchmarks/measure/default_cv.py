"""The default scorer's quality by cross-validation, on both shared sets, as users get it.

The default (``doohable.model.default``) scores an image with the face part (the bundled
``selfie``) where its gate sees a portrait, and with the photo part (``photo``) elsewhere, then
applies the bundled combination. Neither model may be scored on images it was trained on, so:

- SCUT-FBP5500 (4,400 faces, 4 fixed folds): the gate runs on every face; a gated face gets
  ``selfie``'s nested-CV out-of-fold prediction (``benchmarks/results/gpu-ensemble5/
  oof_selfie_stack.json``, the shipped model's recipe), an ungated one the ``photo`` model
  (never trained on SCUT). Pearson, RMSE per fold, mean ± std.
- live-challenge (929 photos, 5 fixed folds): the gate runs on every photo; an ungated photo
  gets the photo part's nested-CV out-of-fold prediction (the shipped recipe: MobileNetV2
  multi-level features of the native 224 crop, ridge head, penalty chosen inside each training
  part), a gated one the ``selfie`` score (never trained on live-challenge). SRCC, PLCC per fold.

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
from photo_features import features
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from doohable import datasets
from doohable.model import photo
from doohable.model import photo_train as pt
from doohable.model.default import load_combined

OOF = Path(__file__).resolve().parents[1] / "results" / "gpu-ensemble5" / "oof_selfie_stack.json"


def gate_and(cs: Any, paths: list[Path], score: Any, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(gate open?, ``score(batch of photo inputs)``) for every image, in batches."""
    gates, scores = [], []
    for i in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[i : i + batch]]
        gates.append(np.array([cs.gate.box(im, cs.face_size) is not None for im in imgs], bool))
        scores.append(score(imgs))
    return np.concatenate(gates), np.concatenate(scores)


def per_fold(pred: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, list[float]]:
    """Pearson, SRCC, RMSE per fold -> {metric: [mean, std]} (sample std over folds)."""
    rows = []
    for f in np.unique(folds):
        m = folds == f
        rows.append({"pearson": pearsonr(pred[m], y[m])[0], "srcc": spearmanr(pred[m], y[m])[0],
                     "rmse": float(np.sqrt(np.mean((pred[m] - y[m]) ** 2)))})
    return {k: [float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows], ddof=1))]
            for k in rows[0]}


def scut(cs: Any) -> dict[str, Any]:
    root = datasets.scut_fbp5500()
    rows = list(csv.DictReader((root / "labels.csv").open()))
    oof = json.loads(OOF.read_text())
    face_oof = dict(zip(oof["images"], oof["oof"], strict=True))
    paths = [root / "images" / r["image"] for r in rows]
    gate, photo_part = gate_and(cs, paths, lambda ims: cs.photo.score_images(ims))
    stems = [Path(r["image"]).stem for r in rows]
    face = np.array([face_oof[s] if g else np.nan for s, g in zip(stems, gate, strict=True)])
    pred = cs.combination.combine(photo_part, face)
    y, folds = np.array([float(r["score"]) for r in rows]), np.array([int(r["fold"]) for r in rows])
    return {"images": len(rows), "gated": int(gate.sum()), "default": per_fold(pred, y, folds),
            "face_part_alone": per_fold(np.array([face_oof[s] for s in stems]), y, folds)}


def live(cs: Any, cache: Path) -> dict[str, Any]:
    labels = photo.load_live()
    x = features(labels, "mobilenet_v2", "native-crop224", cache)
    fit, grid = pt.head_fitter("regression"), pt.GRIDS["regression"]
    r = pt.nested_cv(x, labels, fit, grid, pt.fold_splits(labels.folds))
    photo_oof = np.asarray(photo.mos_to_score(r["oof_mos"]), np.float64)
    gate, _ = gate_and(cs, list(labels.paths), lambda ims: np.zeros(len(ims)))
    face = np.full(len(gate), np.nan)
    if gate.any():
        gated = [Image.open(p).convert("RGB") for p, g in zip(labels.paths, gate, strict=True) if g]
        face[gate] = cs.face.score_images(gated)
    pred = cs.combination.combine(photo_oof, face)
    mos = np.asarray(photo.score_to_mos(pred), np.float64)  # RMSE on the MOS scale (0-100)
    return {"images": len(labels), "gated": int(gate.sum()),
            "default": per_fold(mos, labels.mos, labels.folds),
            "photo_part_alone": per_fold(r["oof_mos"], labels.mos, labels.folds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    cs = load_combined(threads=2)
    out = {"scut": scut(cs), "live": live(cs, args.cache)}
    print(json.dumps(out, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
