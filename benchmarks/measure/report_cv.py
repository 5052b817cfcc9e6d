"""Quality tables and the HTML report from k-fold runs (cv_*.json from bench_train_*.py, or
the CNN + face branch's from bench_face_branch.py --oof-json).

Usage:
    python benchmarks/measure/report_cv.py NAME=cv.json [NAME=cv.json ...] [--ensemble NAME+NAME ...] \
        [--html report.html] [--images ../shared/data/scut-fbp5500/images]

Prints, per run: the per-fold table and mean +- std (fold means, as the published k-fold
figures), pooled metrics, per-subset metrics, the top-third ROC at the Youden threshold, and
the error per score bin; ensembles average the runs' out-of-fold predictions. Published
baselines are printed beside them. Runs stored without labels (benchmarks/results/) take
them from ``--data``'s labels.csv. The bundled model's report (docs/scorer-report.html):

    R=benchmarks/results/gpu-ensemble5
    python benchmarks/measure/report_cv.py selfie=$R/oof_selfie_stack.json m0=$R/cv_mobilenet_v2_m0.json \
        m1=$R/cv_mobilenet_v2_m1.json m2=$R/cv_mobilenet_v2_m2.json m3=$R/cv_mobilenet_v2_m3.json \
        e0=$R/cv_efficientnet_lite0_e0.json --ensemble m0+m1+m2+m3+e0 --html docs/scorer-report.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from doohable.datasets import scut_fbp5500
from doohable.model.data import load_scut
from doohable.model.metrics import (
    error_per_bin,
    fold_metrics,
    mean_std_table,
    regression_metrics,
    top_fraction_roc,
)
from doohable.model.report import Run, build_report

SCUT = scut_fbp5500()
BASELINES = (
    "published (5-fold): ResNeXt-50 PC 0.8997 RMSE 0.3017 MAE 0.2291; report PC 0.90 RMSE 0.30 MAE 0.224"
)


def load(spec: str) -> tuple[str, dict]:
    name, path = spec.split("=", 1)
    return name, json.loads(Path(path).read_text())


def describe(name: str, y: np.ndarray, p: np.ndarray, folds: np.ndarray, groups: np.ndarray) -> dict:
    rows = fold_metrics(y, p, folds)
    tab = mean_std_table(rows)
    roc = top_fraction_roc(y, p)
    print(f"\n== {name}")
    for r in rows:
        print(f"  fold {r['fold']}: pearson {r['pearson']:.4f} rmse {r['rmse']:.4f} mae {r['mae']:.4f}")
    print("  mean±std: " + "  ".join(f"{k} {v['mean']:.4f}±{v['std']:.4f}" for k, v in tab.items()))
    for g in sorted(set(groups.tolist())):
        m = regression_metrics(y[groups == g], p[groups == g])
        print(f"  {g}: n {m['n']} pearson {m['pearson']:.4f} rmse {m['rmse']:.4f} mae {m['mae']:.4f}")
    print(
        f"  top third: AUC {roc['auc']:.4f} threshold {roc['threshold']:.3f} sensitivity "
        f"{roc['sensitivity']:.3f} specificity {roc['specificity']:.3f} precision top "
        f"{roc['precision_positive']:.3f} rest {roc['precision_negative']:.3f} (report: 0.89 / 0.95)"
    )
    bins = error_per_bin(y, p, bins=10, scale=(1.0, 5.0))
    print(
        "  MAE per bin: " + " ".join(f"{b['lo']:.1f}-{b['hi']:.1f}:{b['mae']:.2f}(n={b['n']})" for b in bins)
    )
    return {"folds": rows, "summary": tab, "roc": {k: v for k, v in roc.items() if k not in ("fpr", "tpr")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="NAME=path/to/cv.json")
    ap.add_argument(
        "--ensemble", action="append", default=[], help="NAME+NAME: mean of out-of-fold predictions"
    )
    ap.add_argument("--html", default=None)
    ap.add_argument("--images", default=None, help="image folder for best/worst grids (never committed)")
    ap.add_argument(
        "--data", default=str(SCUT),
        help="labels.csv's folder, for runs stored without labels (benchmarks/results/)",
    )
    args = ap.parse_args()
    runs = dict(load(s) for s in args.runs)
    first = next(iter(runs.values()))
    if "scores" in first:
        y, folds = np.asarray(first["scores"]), np.asarray(first["fold_of"])
        groups = np.asarray(first["groups"])
    else:  # predictions only: the labels come from the dataset, matched by image name
        data = load_scut(args.data)
        if [Path(p).stem for p in data.paths] != first["images"]:
            raise SystemExit(f"the runs' images are not {args.data}'s, in its order")
        y, folds, groups = data.scores, data.folds, np.asarray(data.groups)
    preds = {}
    for name, d in runs.items():
        if d["images"] != first["images"]:
            raise SystemExit(f"{name}: not the same images in the same order as the first run")
        preds[name] = np.asarray(d["oof"], float)
    for spec in args.ensemble:
        preds[spec] = np.mean([preds[n] for n in spec.split("+")], axis=0)
    print(BASELINES)
    out = {name: describe(name, y, p, folds, groups) for name, p in preds.items()}
    if args.html:
        paths = [str(Path(args.images) / f"{n}.jpg") for n in first["images"]] if args.images else []
        report_runs = [
            Run(name, y, p, paths, out[name]["folds"], runs.get(name, {}).get("histories", []))
            for name, p in sorted(preds.items(), key=lambda kv: -out[kv[0]]["summary"]["pearson"]["mean"])
        ]
        build_report(
            args.html,
            report_runs,
            title="doohable scorer: 4-fold cross-validation on SCUT-FBP5500",
            notes=BASELINES,
        )
        print(f"\nwrote {args.html}")


if __name__ == "__main__":
    main()
