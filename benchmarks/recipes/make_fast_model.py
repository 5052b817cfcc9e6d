"""Build the bundled ``selfie-fast`` scorer: one ensemble member, mirror pass removed, int8.

Steps (reproducible; the inputs are the git-ignored member and the shared SCUT-FBP5500 faces):

1. ``drop_flip_tta``: the member computes ``0.5 * (s(x) + s(flip x))``; keep ``s(x)`` only
   (checked here: ``(fast(x) + fast(flip x)) / 2`` equals the member's score exactly, in fp32);
2. ``quantize_int8``: static QDQ int8 (normalisation + first conv kept fp32), calibrated on
   ``--calib`` faces of folds 2–4;
3. check on fold 1: Pearson/RMSE vs the fp32 member's predictions and vs the labels. The member
   was trained on all 4,400 images, fold 1 included: the vs-labels figures are optimistic; the
   fast-vs-fp32 drift is not.

Run: ``.venv/bin/python benchmarks/recipes/make_fast_model.py`` (``--help``); it writes
``src/doohable/model/bundled/selfie-fast.onnx`` and prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from doohable.batch import prepare_bytes
from doohable.datasets import scut_fbp5500
from doohable.model.export import drop_flip_tta, quantize_int8
from doohable.model.runtime import BUNDLED_DIR, Scorer, load_scorer

ROOT = Path(__file__).resolve().parents[2]
SCUT = scut_fbp5500()


def read_fold(root: Path, folds: set[str], limit: int) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels of the given folds, evenly spaced, at most ``limit``."""
    rows = [r for r in csv.DictReader((root / "labels.csv").open()) if r["fold"] in folds]
    rows = rows[:: max(1, len(rows) // limit)][:limit]
    return [root / "images" / r["image"] for r in rows], np.array([float(r["score"]) for r in rows])


def prepared(paths: list[Path], scorer: Scorer) -> np.ndarray:
    """uint8 (n, S, S, 3) through the serving decode + resize policy."""
    return np.stack([prepare_bytes(p.read_bytes(), scorer) for p in paths])


def predict(scorer: Scorer, arrays: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([scorer.score(arrays[i : i + batch]) for i in range(0, len(arrays), batch)])


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Pearson r and RMSE of ``pred`` against ``ref``."""
    return {
        "pearson": float(np.corrcoef(pred, ref)[0, 1]),
        "rmse": float(np.sqrt(np.mean((pred - ref) ** 2))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--member", type=Path, default=ROOT / "artifacts" / "mnv2-seed0-17ep.onnx")
    ap.add_argument("--scut", type=Path, default=SCUT)
    ap.add_argument("--out", type=Path, default=BUNDLED_DIR / "selfie-fast.onnx")
    ap.add_argument("--calib", type=int, default=300, help="calibration faces from folds 2–4")
    ap.add_argument("--check", type=int, default=1100, help="fold-1 faces for the check")
    args = ap.parse_args()

    member = load_scorer(args.member, threads=1)
    with tempfile.TemporaryDirectory(prefix="selfie-fast-") as tmp:
        noflip = load_scorer(drop_flip_tta(args.member, Path(tmp) / "noflip.onnx"), threads=1)
        probe = prepared(read_fold(args.scut, {"1"}, 16)[0], member)
        mirrored = (noflip.score(probe) + noflip.score(np.ascontiguousarray(probe[:, :, ::-1]))) / 2
        surgery_err = float(np.max(np.abs(mirrored - member.score(probe))))
        if surgery_err > 1e-4:
            raise SystemExit(f"flip removal changed the model: max |diff| {surgery_err}")
        calib = prepared(read_fold(args.scut, {"2", "3", "4"}, args.calib)[0], member)
        batches = [calib[i : i + 16] for i in range(0, len(calib), 16)]
        quantize_int8(noflip.path, batches, args.out, name="selfie-fast", fp32_stem=True)
        fast = load_scorer(args.out, threads=1)
        paths, labels = read_fold(args.scut, {"1"}, args.check)
        x = prepared(paths, member)
        p_member, p_noflip, p_fast = predict(member, x), predict(noflip, x), predict(fast, x)
    vs_labels = {
        "member_fp32_tta": agreement(p_member, labels),
        "member_fp32_no_flip": agreement(p_noflip, labels),
        "selfie_fast": agreement(p_fast, labels),
    }
    report = {
        "member": str(args.member),
        "out": str(args.out),
        "size_bytes": args.out.stat().st_size,
        "version": fast.version,
        "calibration_images": len(calib),
        "check_images": len(labels),
        "flip_removal_max_abs_err": surgery_err,
        "fast_vs_member_fp32": agreement(p_fast, p_member),
        "fast_vs_no_flip_fp32": agreement(p_fast, p_noflip),
        "vs_labels_fold1_optimistic": vs_labels,
        "pearson_loss_vs_member": vs_labels["member_fp32_tta"]["pearson"]
        - vs_labels["selfie_fast"]["pearson"],
        "pearson_loss_int8_only": vs_labels["member_fp32_no_flip"]["pearson"]
        - vs_labels["selfie_fast"]["pearson"],
        "score_range": [float(p_fast.min()), float(p_fast.max())],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
