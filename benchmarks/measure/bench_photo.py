"""The ``photo`` quality model on live-challenge: candidates, heads, BRISQUE, cost, one run.

For every backbone x input policy x head: nested cross-validation (the penalty is chosen inside
the training part only, by an inner 4-fold CV on it), on

- the fixed 5 folds of labels.csv (fold mean +- std of SRCC, PLCC, RMSE on the MOS scale), and
- the published protocol: 10 random 80/20 splits (seeded).

BRISQUE (36 features written from the paper, brisque_features.py, RBF SVR tuned the same way)
runs on the same splits. The cost column is ONNX Runtime inference (2 threads, batch 16) of the
whole exported graph at the policy's input size, ms per image, median of 5 timed runs.

    PYTHONPATH=src:benchmarks/measure nice .venv/bin/python benchmarks/measure/bench_photo.py \\
        --json-out benchmarks/results/photo.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from photo_features import BACKBONES, POLICIES, cached, features

from doohable import datasets
from doohable.model import photo
from doohable.model import photo_train as pt


def svr_fitter(x: np.ndarray, mos: np.ndarray, std: np.ndarray, grid: list[float]) -> list[pt.Predictor]:
    """BRISQUE's regressor: features scaled to [-1, 1], RBF SVR of the MOS, one per C in ``grid``."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import SVR

    models = [
        make_pipeline(MinMaxScaler((-1, 1)), SVR(C=c, gamma="scale", epsilon=1.0)).fit(x, mos) for c in grid
    ]
    return [m.predict for m in models]


def random_splits(n: int, repeats: int) -> list[pt.Split]:
    """The published protocol: ``repeats`` random 80/20 splits (seeded), each with 4 inner folds."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(repeats):
        perm = rng.permutation(n)
        tr, te = np.sort(perm[: int(0.8 * n)]), np.sort(perm[int(0.8 * n) :])
        parts = np.array_split(rng.permutation(tr), 4)
        out.append((tr, te, [(np.setdiff1d(tr, q), np.sort(q)) for q in parts]))
    return out


def evaluate(
    x: np.ndarray, labels: photo.PhotoLabels, fit: pt.Fitter, grid: list[float], split: list
) -> dict:
    """Nested CV summary without the out-of-split predictions."""
    r = pt.nested_cv(x, labels, fit, grid, split)
    return {k: v for k, v in r.items() if k != "oof_mos"}


def inference_ms(backbone: str, size: int, *, batch: int = 16, runs: int = 5) -> float:
    """ONNX Runtime (2 threads) CPU ms per image (both threads' CPU time, so it does not depend on
    how busy a shared machine is) of the whole photo graph at input size ``size``, median of runs."""
    from doohable.model.export import export_photo
    from doohable.model.runtime import load_scorer

    net = photo.multilevel(backbone, pretrained=False)
    dim = photo.extract(net, np.zeros((1, 64, 64, 3), np.uint8)).shape[1]
    model = photo.PhotoScorer(net, photo.PhotoHead(dim, "nima"), size)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_photo(
            model, Path(tmp) / "m.onnx", name="bench", policy=f"short-side-{size}-center-crop-{size}"
        )
        scorer = load_scorer(path, threads=2)
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        scorer.score(x)
        times = []
        for _ in range(runs):
            t = time.process_time()
            scorer.score(x)
            times.append((time.process_time() - t) / batch * 1000)
    return float(np.median(times))


def brisque_matrix(labels: photo.PhotoLabels, cache: Path) -> np.ndarray:
    from brisque_features import brisque_features

    return cached(
        cache / f"brisque-{len(labels)}.npz", lambda: np.stack([brisque_features(p) for p in labels.paths])
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=datasets.live_challenge())
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    ap.add_argument("--repeats", type=int, default=10, help="random 80/20 splits")
    ap.add_argument("--backbones", nargs="*", default=list(BACKBONES))
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    ap.add_argument("--heads", nargs="*", default=["regression", "nima"])
    ap.add_argument("--protocols", nargs="*", default=["folds", "random80"])
    ap.add_argument("--speed-only", action="store_true", help="only the cost column")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    labels = photo.load_live(args.data)
    protocols = {"folds": pt.fold_splits(labels.folds), "random80": random_splits(len(labels), args.repeats)}
    protocols = {k: v for k, v in protocols.items() if k in args.protocols}
    results: dict[str, Any] = {"n": len(labels), "candidates": [], "speed_ms": {}}
    xb = brisque_matrix(labels, args.cache)
    for proto, split in protocols.items() if not args.speed_only else ():
        r = evaluate(xb, labels, svr_fitter, [1.0, 10.0, 100.0, 1000.0], split)
        results["candidates"].append({"model": "BRISQUE (36 features) + RBF SVR", "protocol": proto, **r})
        print("brisque", proto, {k: r[k] for k in ("srcc", "plcc", "rmse")}, flush=True)
    for bb in args.backbones:
        for pol in args.policies:
            size = POLICIES[pol][1]
            key = f"{bb}@{size}"
            if key not in results["speed_ms"]:
                results["speed_ms"][key] = inference_ms(bb, size)
                print(key, f"{results['speed_ms'][key]:.1f} CPU-ms/image", flush=True)
            if args.speed_only:
                continue
            x = features(labels, bb, pol, args.cache)
            for head in args.heads:
                for proto, split in protocols.items():
                    r = evaluate(x, labels, pt.head_fitter(head), pt.GRIDS[head], split)
                    row = {
                        "backbone": bb,
                        "policy": pol,
                        "head": head,
                        "protocol": proto,
                        "ms": results["speed_ms"][key],
                    }
                    results["candidates"].append({**row, **r})
                    print(
                        bb,
                        pol,
                        head,
                        proto,
                        {k: r[k] for k in ("srcc", "plcc", "rmse")},
                        f"{row['ms']:.1f} ms",
                        flush=True,
                    )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
