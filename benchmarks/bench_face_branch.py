"""The selfie scorer's face branch on SCUT-FBP5500: nested 4-fold CV of the blend, then the final fit.

1. Face embeddings (``doohable.model.face.FaceEmbedder``) of every image's prepared 224 px crop
   (cached in ``$DOOHABLE_HOME/cache``).
2. The CNN's out-of-fold predictions come from ``bench_train_finetune.py`` (``cv_*.json``; several
   are averaged, as the bundled ensemble averages its members).
3. Nested CV on the data's 4 folds: for each test fold, the RBF width, the ridge penalty and the
   blend weight are chosen by an inner CV on the three other folds only (lowest RMSE); then the
   face regressor is fitted on those three folds and the blend is scored on the test fold.
4. The final face branch: the same choice made by CV over all 4 folds, fitted on all images,
   written to ``--out`` (e.g. ``src/doohable/model/bundled/selfie.face.npz``).

Usage:
    python benchmarks/bench_face_branch.py --cv artifacts/gpu2/cv_mobilenet_v2_s0e20.json \
        --cv artifacts/gpu2/cv_mobilenet_v2_s1e30.json --out src/doohable/model/bundled/selfie.face.npz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from doohable.model.data import cache_key, load_images_cached, load_scut
from doohable.model.face import (
    DEFAULT_PADDINGS,
    FaceEmbedder,
    FaceRegressor,
    blend_error_model,
    blend_scores,
    choose_face_branch,
    face_rows,
    fit_calibration,
    fit_face_branch,
)
from doohable.model.face import blend_oof as face_blend_oof
from doohable.model.metrics import fold_metrics, mean_std_table, regression_metrics, top_fraction_roc
from doohable.model.runtime import center_crop, resize_side

SCUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scut-fbp5500"


def embeddings(
    paths: list[str], size: int, cache: Path, paddings: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flipped) embeddings of each image's prepared crop and of its mirror image, cached
    (``FaceEmbedder(paddings).embed_pairs``)."""
    key = cache_key(paths, size) + ("" if paddings == (0.25,) else "-p" + ",".join(map(str, paddings)))
    files = cache / f"face-emb-{key}.npy", cache / f"face-emb-flip-{key}.npy"
    if all(f.is_file() for f in files):
        return np.load(files[0]), np.load(files[1])
    arr = load_images_cached(paths, resize_side(size), cache)
    assert len(arr.kept) == len(paths), arr.errors
    chunks = [
        np.stack([center_crop(arr.pixels[i], size) for i in range(a, min(a + 50, len(paths)))])
        for a in range(0, len(paths), 50)
    ]
    parts = []
    # dlib holds Python's lock while it computes: one process per core (~0.5 s of a core per image)
    with Progress() as bar, ProcessPoolExecutor(os.cpu_count() or 1, initializer=_init_embedder,
                                                initargs=(paddings,)) as pool:
        task = bar.add_task("face embeddings", total=len(paths))
        for part in pool.map(_embed_chunk, chunks):
            parts.append(part)
            bar.advance(task, len(part[0]))
    plain = np.concatenate([p[0] for p in parts])
    flipped = np.concatenate([p[1] for p in parts])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(files[0], plain)
    np.save(files[1], flipped)
    return plain, flipped


_EMBEDDER: FaceEmbedder | None = None


def _init_embedder(paddings: tuple[float, ...]) -> None:
    global _EMBEDDER
    _EMBEDDER = FaceEmbedder(paddings)


def _embed_chunk(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    assert _EMBEDDER is not None
    return _EMBEDDER.embed_pairs(list(crops))


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
    args = ap.parse_args()
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
    plain, flipped = embeddings(list(data.paths), 224, cache, paddings)
    found, embs = face_rows(plain, flipped)  # rows without a face: CNN only
    if mirror is not None:
        embs = {mirror: embs[mirror]}
    print(f"faces found in {found.sum()} of {len(found)} crops ({time.time() - t0:.0f} s)", flush=True)
    face_oof, blend_oof, chosen = np.zeros(len(y)), cnn.copy(), []
    calibrated = cnn.copy()
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
    for name in ("cnn", "face_only", "blend", "blend_calibrated"):
        s = res[name]
        print(f"{name:>16}: pearson {s['pearson']['mean']:.4f} ± {s['pearson']['std']:.4f}  rmse "
              f"{s['rmse']['mean']:.4f} ± {s['rmse']['std']:.4f}  mae {s['mae']['mean']:.4f}", flush=True)
    if args.out:
        shipped = "blend_calibrated" if args.calibrate else "blend"
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
    res["seconds"] = time.time() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"{res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
