"""Full fine-tuning on SCUT-FBP5500: 4-fold CV per backbone, then the final model on all images.

Usage (GPU machine, see docs/model.md; CPU works too, slowly):
    PYTHONPATH=src:.gpu DOOHABLE_WEIGHTS_DIR=.gpu/weights python benchmarks/recipes/bench_train_finetune.py \
        --data .gpu/scut --backbones mobilenet_v2,efficientnet_lite0 --out $OUT --budget 480

Writes to --out: cv_<backbone>.json (per-fold metrics, mean +- std, out-of-fold predictions,
learning curves), <backbone>.onnx (final model, trained on every image for the median best
epoch count of the folds), summary.json. Prints the CV table with the published baselines
(ResNeXt-50: PC 0.8997 / RMSE 0.3017; the report: 0.90 / 0.30) beside it.
``--final-from CV_JSON``: no CV, only the final model of an earlier run (its settings, and the
median best epoch count of its folds), e.g. of ``benchmarks/results/gpu-ensemble5/*.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from doohable.model.data import load_images, load_scut
from doohable.model.export import export_onnx, max_abs_diff
from doohable.model.metrics import fold_metrics, regression_metrics
from doohable.model.preprocess import resize_side
from doohable.model.train import (
    FinetuneConfig,
    cross_validate,
    finetune,
    pick_device,
    predict,
    save_checkpoint,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def on_progress(stage: str, done: int, total: int, info: dict[str, float]) -> None:
    vals = " ".join(f"{k}={v:.4f}" for k, v in info.items() if k != "epoch")
    log(f"{stage} {done}/{total} {vals}")


def _cv_stage(args, cfg, bb, pixels, scores, folds, only, dev, data, out):  # type: ignore[no-untyped-def]
    """k-fold CV of one backbone: writes cv_<bb><tag>.json, logs the summary, returns the result."""
    log(f"== {bb}: cross-validation")
    cv = cross_validate(
        cfg, pixels, scores, folds, only_folds=only, device=dev, progress=on_progress,
        checkpoint_dir=Path(args.checkpoints) / f"{bb}{args.tag}" if args.checkpoints else None,
    )
    cvj = cv.to_json() | {
        "images": [Path(p).stem for p in data.paths],
        "scores": scores.tolist(),
        "groups": data.groups,
        "fold_of": folds.tolist(),
        "config": asdict(cfg),
    }
    (out / f"cv_{bb}{args.tag}.json").write_text(json.dumps(cvj))
    s = cv.summary
    log(
        f"{bb} CV: pearson {s['pearson']['mean']:.4f}±{s['pearson']['std']:.4f} rmse "
        f"{s['rmse']['mean']:.4f}±{s['rmse']['std']:.4f} mae {s['mae']['mean']:.4f} ({cv.seconds:.0f}s)"
    )
    return cv


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with labels.csv and images/")
    ap.add_argument("--backbones", default="mobilenet_v2,efficientnet_lite0")
    ap.add_argument("--folds", default="all", help="'all' or e.g. 1,2")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None, help="crop side (images squashed to 8/7 of it)")
    ap.add_argument("--freeze-groups", type=int, default=None, help="lowest backbone groups kept frozen")
    ap.add_argument("--tag", default="", help="suffix of the output files (several runs in one --out)")
    ap.add_argument("--limit", type=int, default=None, help="first N images per fold (smoke tests)")
    ap.add_argument("--no-final", action="store_true")
    ap.add_argument(
        "--checkpoints", default=None, help="folder of per-fold checkpoints (resumable; best weights kept)"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=1e9, help="seconds; later stages are skipped past it")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--final-from", default=None, metavar="CV_JSON",
        help="no CV: only the final model, with this earlier cv_*.json's settings and epochs",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        log(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    data = load_scut(args.data, limit=args.limit)
    base = FinetuneConfig()
    over = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("seed", args.seed),
            ("input_size", args.input_size),
            ("freeze_groups", args.freeze_groups),
        )
        if v is not None
    }
    base = replace(base, **over)
    prior = json.loads(Path(args.final_from).read_text()) if args.final_from else None
    if prior is not None:  # the earlier run's settings (its input size decides the decoding too)
        prior_cfg = prior["config"].items()
        base = FinetuneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in prior_cfg})
    t0 = time.perf_counter()
    arr = load_images(data.paths, resize_side(base.input_size), workers=16)
    log(f"decoded {len(arr.kept)} images in {time.perf_counter() - t0:.1f}s; skipped {arr.errors}")
    data = data.subset(arr.kept)
    pixels, scores, folds = arr.pixels, data.scores, data.folds
    only = None if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    summary: dict = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "n_images": len(scores),
        "config": asdict(base),
        "backbones": {},
    }
    oofs = {}
    for bb in args.backbones.split(","):
        cfg = replace(base, backbone=bb)
        if time.perf_counter() - t_start > args.budget:
            log(f"budget spent: skipping {bb}")
            break
        if prior is not None:
            if cfg.backbone != prior["config"]["backbone"]:
                raise SystemExit(f"{args.final_from} is a {prior['config']['backbone']} run, not {bb}")
            cv = SimpleNamespace(summary=prior["summary"], folds=prior["folds"], seconds=prior["seconds"])
        else:
            cv = _cv_stage(args, cfg, bb, pixels, scores, folds, only, dev, data, out)
            oofs[bb] = cv.oof
        s = cv.summary
        entry = {"cv": cv.summary, "folds": cv.folds, "cv_seconds": cv.seconds}
        summary["backbones"][bb] = entry
        (out / f"summary{args.tag}.json").write_text(json.dumps(summary))
        # the final model is the deliverable: it gets 30% more time than a new CV stage
        if args.no_final or time.perf_counter() - t_start > 1.3 * args.budget:
            continue
        epochs = int(np.median([r["best_epoch"] + 1 for r in cv.folds]))
        log(f"== {bb}: final model on all {len(scores)} images, {epochs} epochs")
        fit = finetune(replace(cfg, epochs=epochs), pixels, scores, device=dev, progress=on_progress)
        fit.model.to(dev)
        train_fit = regression_metrics(scores, predict(fit.model, torch.from_numpy(pixels)))
        entry |= {"final_epochs": epochs, "final_seconds": fit.seconds, "final_train_metrics": train_fit}
        (out / f"summary{args.tag}.json").write_text(json.dumps(summary))
        try:
            onnx_path = export_onnx(
                fit.model,
                out / f"{bb}{args.tag}.onnx",
                name="selfie",
                extra={
                    "backbone_weights": "ImageNet",
                    "training": f"SCUT-FBP5500 shared 4,400 images, full fine-tune, {epochs} epochs",
                    "cv_pearson": s["pearson"]["mean"],
                    "cv_rmse": s["rmse"]["mean"],
                    "licence": "research/demo use only (SCUT-FBP5500: non-commercial research licence)",
                },
            )
            s_in = fit.model.input_size
            o = (pixels.shape[1] - s_in) // 2
            probe = pixels[:8, o : o + s_in, o : o + s_in].copy()
            entry["onnx_max_abs_diff"] = max_abs_diff(fit.model, onnx_path, probe)
            log(f"exported {onnx_path} (onnx vs torch max diff {entry['onnx_max_abs_diff']:.2e})")
        except Exception as exc:  # keep the weights even if this torch cannot export
            log(f"export failed ({exc!r}); saving the state dict instead")
            save_checkpoint(fit.model, out / f"{bb}{args.tag}.pt")
        (out / f"summary{args.tag}.json").write_text(json.dumps(summary))
    if len(oofs) > 1:
        mean = np.mean(list(oofs.values()), axis=0)
        ok = ~np.isnan(mean)
        per_fold = fold_metrics(scores[ok], mean[ok], folds[ok])
        summary["ensemble_cv"] = {
            k: float(np.mean([r[k] for r in per_fold])) for k in ("pearson", "rmse", "mae")
        }
        log(f"ensemble of all backbones, CV mean: {summary['ensemble_cv']}")
    summary["seconds"] = time.perf_counter() - t_start
    (out / f"summary{args.tag}.json").write_text(json.dumps(summary))
    log("baselines (published): ResNeXt-50 PC 0.8997 RMSE 0.3017; report (DenseNet201) PC 0.90 RMSE 0.30")
    log(f"done in {summary['seconds']:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
