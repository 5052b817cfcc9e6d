"""The selfie scorer's face branch on SCUT-FBP5500: nested 4-fold CV of the blend, then the final fit.

1. Face chips of every image's prepared 224 px crop and of its mirror image
   (``FaceEmbedder.chips``, cached in ``$DOOHABLE_HOME/cache``), then their embeddings
   (``FaceEmbedder.describe``: dlib's network in ONNX Runtime; ~3 min in all on 2 cores).
2. The CNN's out-of-fold predictions come from ``bench_train_finetune.py`` (``cv_*.json``; several
   are averaged, as the bundled ensemble averages its members).
3. Nested CV on the data's 4 folds: for each test fold, the RBF width, the ridge penalty and the
   blend weight are chosen by an inner CV on the three other folds only (lowest RMSE); then the
   face regressor is fitted on those three folds and the blend is scored on the test fold.
4. The final face branch: the same choice made by CV over all 4 folds, fitted on all images,
   written to ``--out`` (e.g. ``src/doohable/model/bundled/selfie.face.npz``).

``--face-net`` adds dlib's face network fine-tuned for the blend (``face_train``): its
out-of-fold scores (one fine-tuning per test fold, cached), the nested CV of the stack of the
CNN, the regressor and the network (its coefficients fitted on the training folds'
out-of-fold scores), and, with ``--out``, a network fine-tuned on every face, stored in the
branch with the stack fitted on all out-of-fold scores (~35 min on 2 CPU cores with bf16).

Usage (the bundled branch):
    R=benchmarks/results/gpu-ensemble5
    python benchmarks/recipes/bench_face_branch.py --cv $R/cv_mobilenet_v2_m0.json \
        --cv $R/cv_mobilenet_v2_m1.json \
        --calibrate --face-net --out src/doohable/model/bundled/selfie.face.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from doohable.datasets import scut_fbp5500
from doohable.model.data import cache_key, load_images_cached, load_scut
from doohable.model.face.branch import FaceRegressor, blend_scores, stack_scores
from doohable.model.face.embed import DEFAULT_PADDINGS, FaceEmbedder
from doohable.model.face.fit import (
    blend_error_model,
    choose_face_branch,
    choose_pooled,
    face_rows,
    fit_calibration,
    fit_face_branch,
    fit_stack,
)
from doohable.model.face.fit import blend_oof as face_blend_oof
from doohable.model.face.fit import face_oof as face_oof_of
from doohable.model.face.train import add_face_net, chip_embeddings, chip_pairs, face_net_oof, net_target
from doohable.model.metrics import fold_metrics, mean_std_table, regression_metrics, top_fraction_roc
from doohable.model.runtime import center_crop, resize_side

SCUT = scut_fbp5500()


def face_chips(
    paths: list[str], size: int, cache: Path, paddings: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(chips, found): uint8 (N, 2, P, 150, 150, 3), the aligned chips of each image's prepared
    crop and of its mirror image at each padding (``FaceEmbedder.chips``), and bool (N, 2), where
    a face was found; cached (1.8 GB for SCUT's 4,400 images at three paddings)."""
    key = cache_key(paths, size) + "-p" + ",".join(map(str, paddings))
    files = cache / f"face-chips-{key}.npy", cache / f"face-chips-found-{key}.npy"
    if all(f.is_file() for f in files):
        return np.load(files[0], mmap_mode="r"), np.load(files[1])
    arr = load_images_cached(paths, resize_side(size), cache)
    assert len(arr.kept) == len(paths), arr.errors
    chunks = [
        np.stack([center_crop(arr.pixels[i], size) for i in range(a, min(a + 50, len(paths)))])
        for a in range(0, len(paths), 50)
    ]
    parts = []
    # dlib holds Python's lock while it detects: one process per core (~25 ms per crop)
    with Progress() as bar, ProcessPoolExecutor(os.cpu_count() or 1, initializer=_init_embedder,
                                                initargs=(paddings,)) as pool:
        task = bar.add_task("face chips", total=len(paths))
        for part in pool.map(_chip_chunk, chunks):
            parts.append(part)
            bar.advance(task, len(part[0]))
    chips = np.concatenate([p[0] for p in parts])
    found = np.concatenate([p[1] for p in parts])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(files[0], chips)
    np.save(files[1], found)
    return chips, found


def embeddings(
    chips: np.ndarray, found: np.ndarray, paddings: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``face_train.chip_embeddings`` with a progress bar."""
    with Progress() as bar:
        task = bar.add_task("face embeddings", total=len(chips))
        return chip_embeddings(chips, found, paddings, tick=lambda done, _: bar.update(task, completed=done))


_EMBEDDER: FaceEmbedder | None = None


def _init_embedder(paddings: tuple[float, ...]) -> None:
    global _EMBEDDER
    _EMBEDDER = FaceEmbedder(paddings)


def _chip_chunk(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    assert _EMBEDDER is not None
    return chip_pairs(_EMBEDDER, list(crops))


def cached_face_net_oof(
    chips: np.ndarray, found: np.ndarray, y: np.ndarray, cnn: np.ndarray, folds: np.ndarray,
    args: argparse.Namespace, cache: Path,
) -> np.ndarray:
    """``face_train.face_net_oof`` with the target ``(y - (1 - w) * cnn) / w``, cached (the CNN
    runs, the settings and the labels in the key), and each fold's blend at ``w`` printed."""
    w = args.net_target_weight
    key = hashlib.sha256(json.dumps(
        [sorted(Path(c).name for c in args.cv), args.net_epochs, w, y.tolist(), cnn.tolist(), folds.tolist()]
    ).encode()).hexdigest()[:16]
    f = cache / f"face-net-oof-{key}.npy"
    if f.is_file():
        return np.load(f)
    target = net_target(y, cnn, w)
    oof = face_net_oof(chips, found, target, folds, epochs=args.net_epochs, progress=_epoch_line)
    for k in sorted(set(folds.tolist())):
        m = (folds == k) & found[:, 0]
        blend = (1 - w) * cnn[m] + w * oof[m]
        print(f"fold {k}: face network blend at {w}: pearson {np.corrcoef(blend, y[m])[0, 1]:.4f} "
              f"rmse {np.sqrt(np.mean((blend - y[m]) ** 2)):.4f}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, oof)
    return oof


def _epoch_line(what: str, epoch: int, epochs: int, rmse: float) -> None:
    print(f"  face network {what}: epoch {epoch}/{epochs}, train rmse {rmse:.4f}", flush=True)


def fold_table(y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> dict[str, dict[str, Any]]:
    """Mean, sample std (as the CNN's CV tables) and per-fold values (for paired comparisons
    between runs) of each metric."""
    rows = fold_metrics(y, p, folds)
    return {m: v | {"per_fold": [float(r[m]) for r in rows]} for m, v in mean_std_table(rows).items()}


def per_subset(y: np.ndarray, p: np.ndarray, groups: list[str]) -> dict[str, dict[str, float]]:
    """Pearson / RMSE / MAE / mean error (bias) per subset (SCUT: AF, AM, CF, CM), pooled over folds."""
    g = np.asarray(groups)
    out = {}
    for name in sorted(set(groups)):
        m = g == name
        out[name] = {**regression_metrics(y[m], p[m]), "n": int(m.sum()), "bias": float(np.mean(p[m] - y[m]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SCUT))
    ap.add_argument("--cv", action="append", required=True, help="cv_*.json of the CNN (repeat to average)")
    ap.add_argument("--out", default=None, help="write the final face branch (.npz) here")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument(
        "--oof-json", default=None,
        help="write the nested CV's out-of-fold predictions of the most complete variant (the one "
        "--out ships) here, as a cv json without labels (benchmarks/measure/report_cv.py reads it)",
    )
    ap.add_argument(
        "--paddings",
        default=",".join(map(str, DEFAULT_PADDINGS)),
        help="chip paddings whose descriptors are concatenated (0.25: the first, one-descriptor branch)",
    )
    ap.add_argument(
        "--mirror", choices=("cv", "on", "off"), default="cv",
        help="the mirror pass: chosen by the CV, or forced (off: half the face branch's cost)",
    )
    ap.add_argument(
        "--cnn-rmse", type=float, action="append", default=[],
        help="also estimate the best weight for a CNN of this CV RMSE (error model; repeatable)",
    )
    ap.add_argument(
        "--weight-for-cnn-rmse", type=float, default=None,
        help="--out's blend weight: the grid weight the error model finds best for a CNN of this CV "
        "RMSE (the CNN the branch will be blended with, when its out-of-fold predictions are gone) "
        "instead of the weight the CV chose with --cv's CNN",
    )
    ap.add_argument(
        "--calibrate", action="store_true",
        help="--out's branch also gets the linear calibration of its blend (nested CV: blend_calibrated)",
    )
    ap.add_argument(
        "--face-net", action="store_true",
        help="also fine-tune dlib's face network (out-of-fold on the same folds, cached) and stack "
        "the CNN, the face regressor and the network (nested CV: stack); --out's branch carries it",
    )
    ap.add_argument("--net-epochs", type=int, default=10)
    ap.add_argument(
        "--pooled", action="store_true",
        help="with --face-net: add a regressor on the network's pooled features to the stack",
    )
    ap.add_argument(
        "--net-target-weight", type=float, default=0.5,
        help="the network learns (y - (1 - w) * cnn) / w: what a blend at weight w needs from it",
    )
    args = ap.parse_args()
    if args.pooled and not args.face_net:
        raise SystemExit("--pooled needs --face-net (it is a term of the stack)")
    if args.face_net and args.weight_for_cnn_rmse is not None:
        raise SystemExit("--face-net ships a stack, which has no blend weight to set (--weight-for-cnn-rmse)")
    if args.calibrate and args.weight_for_cnn_rmse is not None:
        raise SystemExit("--calibrate fits the calibration at the CV's weight, not --weight-for-cnn-rmse's")
    if args.weight_for_cnn_rmse is not None:
        args.cnn_rmse.append(args.weight_for_cnn_rmse)
    mirror = {"cv": None, "on": True, "off": False}[args.mirror]
    paddings = tuple(float(p) for p in args.paddings.split(","))
    t0 = time.time()
    data = load_scut(args.data)
    cvs = [json.loads(Path(p).read_text()) for p in args.cv]
    stems = [Path(p).stem for p in data.paths]
    for c in cvs:
        if c["images"] != stems:
            raise SystemExit("the cv json's images are not this data's images, in this order")
    y, folds = data.scores, data.folds
    cnn = np.mean([np.asarray(c["oof"]) for c in cvs], axis=0)
    cache = Path(os.environ.get("DOOHABLE_HOME", ".doohable")) / "cache"
    chips, chips_found = face_chips(list(data.paths), 224, cache, paddings)
    plain, flipped, pooled = embeddings(chips, chips_found, paddings)
    found, embs = face_rows(plain, flipped)  # rows without a face: CNN only
    if mirror is not None:
        embs = {mirror: embs[mirror]}
    print(f"faces found in {found.sum()} of {len(found)} crops ({time.time() - t0:.0f} s)", flush=True)
    net_oof = cached_face_net_oof(chips, chips_found, y, cnn, folds, args, cache) if args.face_net else None
    face_oof, blend_oof, chosen = np.zeros(len(y)), cnn.copy(), []
    calibrated, stacked, stacked_pooled = cnn.copy(), cnn.copy(), cnn.copy()
    for k in sorted(set(folds.tolist())):
        tr = (folds != k) & found
        m, g, a, w = choose_face_branch({b: e[tr] for b, e in embs.items()}, y[tr], cnn[tr], folds[tr])
        te = (folds == k) & found
        face_oof[te] = FaceRegressor.fit(embs[m][tr], y[tr], gamma=g, alpha=a).predict(embs[m][te])
        blend_oof[te] = blend_scores(cnn[te], face_oof[te], w)
        # the calibration: fitted on the inner CV's out-of-fold blend (training folds only)
        inner = folds != k
        inner_blend = face_blend_oof(
            plain[inner], flipped[inner], y[inner], cnn[inner], folds[inner],
            mirror=m, gamma=g, alpha=a, weight=w,
        )
        cal = fit_calibration(y[tr], inner_blend[found[inner]])
        calibrated[te] = blend_scores(cnn[te], face_oof[te], w, cal)
        chosen.append({"fold": k, "mirror": m, "gamma": g, "alpha": a, "weight": w, "calibration": cal})
        if net_oof is not None:  # the stack: fitted on the training folds' out-of-fold scores
            inner_face = face_oof_of(embs[m][tr], y[tr], folds[tr], gamma=g, alpha=a)
            st = fit_stack(y[tr], cnn[tr], inner_face, net_oof[tr])
            stacked[te] = stack_scores(st, cnn[te], face_oof[te], net_oof[te])
            chosen[-1]["stack"] = st
            print(f"fold {k}: stack {' '.join(f'{v:.3f}' for v in st)}", flush=True)
            if args.pooled:  # and the pooled-feature regressor, chosen by the inner CV of the stack
                others = [cnn[tr], inner_face, net_oof[tr]]
                pg, pa = choose_pooled(pooled[tr], y[tr], folds[tr], others)
                pooled_te = FaceRegressor.fit(pooled[tr], y[tr], gamma=pg, alpha=pa).predict(pooled[te])
                inner_pooled = face_oof_of(pooled[tr], y[tr], folds[tr], gamma=pg, alpha=pa)
                st = fit_stack(y[tr], *others, inner_pooled)
                stacked_pooled[te] = stack_scores(st, cnn[te], face_oof[te], net_oof[te], pooled_te)
                chosen[-1] |= {"pooled_gamma": pg, "pooled_alpha": pa, "stack_pooled": st}
                print(f"fold {k}: pooled gamma {pg} alpha {pa}; stack {' '.join(f'{v:.3f}' for v in st)}",
                      flush=True)
        print(f"fold {k}: chosen mirror {m} gamma {g} alpha {a} weight {w}; "
              f"calibration {cal[0]:.3f} + {cal[1]:.3f} * blend", flush=True)
    face_only = np.where(found, face_oof, cnn)
    res = {
        "n_images": len(y),
        "faces_found": int(found.sum()),
        "cnn_runs": args.cv,
        "paddings": paddings,
        "cnn": fold_table(y, cnn, folds),
        "face_only": fold_table(y, face_only, folds),
        "blend": fold_table(y, blend_oof, folds),
        "blend_calibrated": fold_table(y, calibrated, folds),
        "chosen_per_fold": chosen,
        "blend_per_subset": per_subset(y, blend_oof, data.groups),
        "blend_top_third": {
            k: v for k, v in top_fraction_roc(y, blend_oof).items() if k not in ("fpr", "tpr")
        },
        "blend_calibrated_per_subset": per_subset(y, calibrated, data.groups),
        "blend_calibrated_top_third": {
            k: v for k, v in top_fraction_roc(y, calibrated).items() if k not in ("fpr", "tpr")
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    if net_oof is not None:
        nw = args.net_target_weight
        net_blend = np.where(found, (1 - nw) * cnn + nw * net_oof, cnn)  # the blend it was trained for
        res |= {
            "face_net": {"epochs": args.net_epochs, "target_weight": nw},
            "net_blend_only": fold_table(y, net_blend, folds),
            "stack": fold_table(y, stacked, folds),
            **({"stack_pooled": fold_table(y, stacked_pooled, folds),
                "stack_pooled_per_subset": per_subset(y, stacked_pooled, data.groups),
                "stack_pooled_top_third": {
                    k: v for k, v in top_fraction_roc(y, stacked_pooled).items() if k not in ("fpr", "tpr")
                }} if args.pooled else {}),
            "stack_per_subset": per_subset(y, stacked, data.groups),
            "stack_top_third": {
                k: v for k, v in top_fraction_roc(y, stacked).items() if k not in ("fpr", "tpr")
            },
        }
    res["error_model"] = em = blend_error_model(y[found], cnn[found], face_oof[found], args.cnn_rmse)
    print(f"error model (face rows): rmse cnn {em['cnn_rmse']:.4f}, face {em['face_rmse']:.4f}, "
          f"correlation of their errors {em['rho']:.3f}")
    for c2, e in em["for_cnn_rmse"].items():
        print(f"  a CNN of rmse {c2}: best weight {e['best_weight']:.2f}, "
              f"rmse there {e['rmse_at_best']:.4f}; "
              "at " + ", ".join(f"{w} {r:.4f}" for w, r in e["rmse_at_weight"].items()))
    subsets = {g: f"{m['pearson']:.3f} / {m['rmse']:.3f}" for g, m in res["blend_per_subset"].items()}
    print("blend per subset (pearson / rmse):", subsets)
    t3 = res["blend_top_third"]
    print(f"blend top third: AUC {t3['auc']:.3f}, precision top / rest {t3['precision_positive']:.3f} / "
          f"{t3['precision_negative']:.3f}")
    for name in ("cnn", "face_only", "blend", "blend_calibrated", "net_blend_only", "stack", "stack_pooled"):
        if name not in res:
            continue
        s = res[name]
        print(f"{name:>16}: pearson {s['pearson']['mean']:.4f} ± {s['pearson']['std']:.4f}  rmse "
              f"{s['rmse']['mean']:.4f} ± {s['rmse']['std']:.4f}  mae {s['mae']['mean']:.4f}", flush=True)
    # the most complete variant measured: what --out ships and --oof-json writes
    shipped = ("stack_pooled" if args.pooled else "stack") if net_oof is not None else (
        "blend_calibrated" if args.calibrate else "blend")
    if args.out:
        branch = fit_face_branch(
            plain,
            flipped,
            y,
            cnn,
            folds,
            metadata={
                "training": f"SCUT-FBP5500 shared {int(found.sum())} images",
                "chosen_with_cnn": ", ".join(Path(c).name for c in args.cv),
                "cv_cnn_pearson": f"{res['cnn']['pearson']['mean']:.4f}",
                # the nested CV's figures of what is written: calibrated or not
                "cv_blend_pearson": f"{res[shipped]['pearson']['mean']:.4f}",
                "cv_blend_rmse": f"{res[shipped]['rmse']['mean']:.4f}",
                "licence": "research/demo use only (SCUT-FBP5500: non-commercial research licence)",
            },
            paddings=paddings,
            mirror=mirror,
            calibrate=args.calibrate,
        )
        if net_oof is not None:
            branch, _ = add_face_net(
                branch, plain, flipped, pooled if args.pooled else None, chips, chips_found, y, cnn, folds,
                net_oof, epochs=args.net_epochs, target_weight=args.net_target_weight, progress=_epoch_line,
            )
            print(f"final face network: ONNX vs torch, max |diff| {branch.metadata['net_onnx_vs_torch']} "
                  "over 64 images", flush=True)
        if args.weight_for_cnn_rmse is not None:
            r = args.weight_for_cnn_rmse
            branch.metadata["weight_chosen_by_cv"] = str(branch.weight)
            branch.weight = em["for_cnn_rmse"][f"{r:.4f}"]["best_grid_weight"]
            branch.metadata["weight_from"] = f"error model, for a CNN of CV RMSE {r}"
        branch.save(args.out)
        m, w = branch.mirror, branch.weight
        g, a = float(branch.metadata["gamma"]), float(branch.metadata["alpha"])
        res["final"] = {"mirror": m, "gamma": g, "alpha": a, "weight": w, "path": args.out}
        print(f"final: mirror {m} gamma {g} alpha {a} weight {w} -> {args.out}", flush=True)
    if args.oof_json:
        oof = {"stack_pooled": stacked_pooled, "stack": stacked, "blend_calibrated": calibrated,
               "blend": blend_oof}[shipped]
        Path(args.oof_json).write_text(json.dumps({
            "config": {"variant": shipped, "cnn_runs": [Path(c).name for c in args.cv], "paddings": paddings},
            "summary": res[shipped],
            "images": stems,
            "oof": [float(v) for v in oof],
            "note": "nested 4-fold CV out-of-fold predictions of the CNN + face branch "
            f"({shipped}; benchmarks/recipes/bench_face_branch.py); labels are not stored",
        }))
    res["seconds"] = time.time() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"{res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
