"""Head on cached frozen features: 4-fold CV on SCUT-FBP5500 and its CPU time.

Usage: python benchmarks/measure/bench_train_head.py [--backbone mobilenet_v2] [--export PATH] [--json OUT]

Prints the per-fold table, mean +- std, the feature-extraction and head-training times, and
the published baselines (ResNeXt-50 5-fold: PC 0.8997 / RMSE 0.3017; the report: 0.90 / 0.30).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from doohable.datasets import scut_fbp5500
from doohable.model.data import load_images_cached, load_scut
from doohable.model.export import export_onnx
from doohable.model.metrics import regression_metrics
from doohable.model.preprocess import resize_side
from doohable.model.scorer import build_model
from doohable.model.train import cross_validate_head, extract_features, fit_head, head_scores

SCUT = scut_fbp5500()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--head", default="regression")
    ap.add_argument("--data", default=str(SCUT))
    ap.add_argument("--cache", default=os.path.join(os.environ.get("DOOHABLE_HOME", ".doohable"), "cache"))
    ap.add_argument("--export", default=None, help="train on all images and export ONNX here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cv-json", default=None, help="write out-of-fold predictions (report_cv.py input)")
    args = ap.parse_args()
    data = load_scut(args.data)
    model = build_model(args.backbone, args.head)
    t0 = time.perf_counter()
    pix = load_images_cached(data.paths, resize_side(model.input_size), args.cache)
    t_decode = time.perf_counter() - t0
    fcache = Path(args.cache) / f"features-{args.backbone}-{len(data)}.npy"
    t0 = time.perf_counter()
    if fcache.is_file():
        feats = np.load(fcache)
    else:
        feats = extract_features(model, pix.pixels)
        np.save(fcache, feats)
    t_feat = time.perf_counter() - t0
    scores, folds = data.scores[pix.kept], data.folds[pix.kept]
    cv = cross_validate_head(model, feats, scores, folds)
    print(f"{'fold':>4} {'pearson':>8} {'rmse':>7} {'mae':>7}")
    for r in cv.folds:
        print(f"{r['fold']:>4} {r['pearson']:8.4f} {r['rmse']:7.4f} {r['mae']:7.4f}")
    s = cv.summary
    print(
        f"mean {s['pearson']['mean']:.4f}±{s['pearson']['std']:.4f}  rmse {s['rmse']['mean']:.4f}"
        f"±{s['rmse']['std']:.4f}  mae {s['mae']['mean']:.4f}±{s['mae']['std']:.4f}"
    )
    print(
        f"decode {t_decode:.1f}s, features {t_feat:.1f}s (cached: {fcache}), "
        f"head CV (4 fits) {cv.seconds:.1f}s"
    )
    print("baselines (5-fold, published): ResNeXt-50 PC 0.8997 RMSE 0.3017; report PC 0.90 RMSE 0.30")
    if args.cv_json:
        cvj = cv.to_json() | {
            "images": [Path(data.paths[i]).stem for i in pix.kept],
            "scores": scores.tolist(),
            "groups": [data.groups[i] for i in pix.kept],
            "fold_of": folds.tolist(),
        }
        Path(args.cv_json).write_text(json.dumps(cvj))
    out = {
        "backbone": args.backbone,
        "head": args.head,
        "cv": cv.to_json(),
        "decode_s": t_decode,
        "features_s": t_feat,
        "head_cv_s": cv.seconds,
        "overall": regression_metrics(scores, cv.oof),
    }
    if args.export:
        t0 = time.perf_counter()
        fit_head(model, feats, scores)
        out["head_fit_all_s"] = time.perf_counter() - t0
        out["train_metrics"] = regression_metrics(scores, head_scores(model, feats))
        export_onnx(
            model,
            args.export,
            name=f"selfie-{args.backbone}-head",
            extra={
                "training": "SCUT-FBP5500 4,400 shared images, frozen ImageNet features + regression head",
                "cv_pearson": s["pearson"]["mean"],
                "cv_rmse": s["rmse"]["mean"],
                "licence": "research/demo use only (SCUT-FBP5500 non-commercial licence)",
            },
        )
        print(f"exported {args.export} (head fit on all images {out['head_fit_all_s']:.1f}s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
