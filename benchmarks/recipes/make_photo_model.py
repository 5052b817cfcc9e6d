"""Build the bundled ``photo`` quality model (src/doohable/model/bundled/photo.onnx), reproducibly.

Frozen ImageNet backbone, multi-level mean+std pooled features of the live-challenge photos
under the chosen input policy, a head whose penalty is chosen by CV on the fixed folds, fitted
on all 929 photos; the nested 5-fold CV figures (penalty chosen inside each training part) go
into the model's metadata. Deterministic: closed-form ridge or kernel ridge, or L-BFGS from zeros.

    PYTHONPATH=src nice .venv/bin/python benchmarks/recipes/make_photo_model.py \\
        --backbone mobilenet_v2 --policy native-crop224 --head nima
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from doohable import datasets
from doohable.model import photo
from doohable.model import photo_train as pt
from doohable.model.export import export_photo
from doohable.model.runtime import BUNDLED_DIR, load_scorer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "measure"))
from photo_features import POLICIES, crops, features  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=datasets.live_challenge())
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--policy", default="native-crop224", choices=sorted(POLICIES))
    ap.add_argument("--head", default="nima", choices=sorted(pt.GRIDS))
    ap.add_argument("--name", default="photo")
    ap.add_argument("--out", type=Path, default=None, help="default: the bundled folder, <name>.onnx")
    args = ap.parse_args()
    torch.set_num_threads(2)
    labels = photo.load_live(args.data)
    feats = features(labels, args.backbone, args.policy, args.cache)
    fit, grid = pt.head_fitter(args.head), pt.GRIDS[args.head]
    cv = pt.nested_cv(feats, labels, fit, grid, pt.fold_splits(labels.folds))
    inner = [(tr, te) for tr, te, _ in pt.fold_splits(labels.folds)]
    l2 = pt.choose(feats, labels, fit, grid, inner)
    head = photo.fit_head(feats, labels.mos, labels.std, args.head, l2)
    policy, size = POLICIES[args.policy]
    model = photo.PhotoScorer(photo.multilevel(args.backbone), head, size)
    figures = {k: [round(v, 4) for v in cv[k]] for k in ("srcc", "plcc", "rmse")}
    extra = {
        "l2": l2,
        "trained_on": f"live-challenge ({len(labels)} photos, LIVE In the Wild Image Quality Challenge)",
        "score": "1 + 4 * MOS / 100",
        "cv_fixed_folds": {**figures, "protocol": "nested 5-fold CV on the fixed folds, mean and std"},
        "licence": "trained on the LIVE In the Wild Image Quality Challenge Database, (c) 2015 The "
        "University of Texas at Austin; see MODEL_CARD.md",
    }
    out = args.out or BUNDLED_DIR / f"{args.name}.onnx"
    export_photo(model, out, name=args.name, policy=policy, extra=extra)
    check = crops(labels.subset(range(8)), args.policy)
    diff = float(np.max(np.abs(load_scorer(out, threads=2).score(check) - pt.torch_scores(model, check))))
    print(json.dumps({"model": str(out), "l2": l2, "cv": figures, "onnx_vs_torch_max_abs": diff}))


if __name__ == "__main__":
    main()
