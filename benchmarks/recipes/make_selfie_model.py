r"""Build the bundled ``selfie`` CNN from the final models of a GPU sweep: one graph averaging them.

Each member is the final model of one CV run (``gpu_finetune_sweep.sh``; ``finals`` for runs
whose CV was made earlier). Its ``cv_*.json`` gives the CV figures written into the metadata: the
folds' mean of the members' averaged out-of-fold predictions, the same figure as
``bench_face_branch.py`` prints for the CNN. Weights are stored as float16 (``--half``, default:
half the file; scores move by ~1e-3). Then fit the face branch on the same cv jsons:

    R=benchmarks/results/gpu-ensemble5
    python benchmarks/recipes/make_selfie_model.py --member OUT/m0.onnx --cv $R/cv_mobilenet_v2_m0.json \
        --member OUT/m1.onnx --cv $R/cv_mobilenet_v2_m1.json ...
    python benchmarks/recipes/bench_face_branch.py --cv <the same cv jsons> --calibrate \
        --out src/doohable/model/bundled/selfie.face.npz

Members and cv jsons pair up in order; the members' ``cv_pearson``/``cv_rmse`` metadata must be
their cv json's (a member from another run is refused).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from doohable.datasets import scut_fbp5500
from doohable.model.data import load_scut
from doohable.model.export import ensemble_onnx
from doohable.model.metrics import fold_metrics, mean_std_table
from doohable.model.runtime import BUNDLED_DIR, read_metadata

SCUT = scut_fbp5500()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--member", action="append", required=True, help="final model .onnx (repeat)")
    ap.add_argument("--cv", action="append", required=True, help="its cv_*.json (repeat, same order)")
    ap.add_argument("--data", default=str(SCUT))
    ap.add_argument("--out", default=str(BUNDLED_DIR / "selfie.onnx"))
    ap.add_argument("--fp32", action="store_true", help="keep float32 weights (twice the file)")
    args = ap.parse_args()
    if len(args.member) != len(args.cv):
        raise SystemExit(f"{len(args.member)} members but {len(args.cv)} cv jsons: they pair up in order")
    cvs = [json.loads(Path(p).read_text()) for p in args.cv]
    for member, cv, path in zip(args.member, cvs, args.cv, strict=True):
        meta = read_metadata(member)
        if abs(float(meta.get("cv_rmse", "nan")) - cv["summary"]["rmse"]["mean"]) > 1e-9:
            raise SystemExit(f"{member} is not the final model of {path} (its cv_rmse differs)")
    data = load_scut(args.data)
    stems = [Path(p).stem for p in data.paths]
    if any(cv["images"] != stems for cv in cvs):
        raise SystemExit("a cv json's images are not this data's images, in this order")
    oof = np.mean([np.asarray(cv["oof"]) for cv in cvs], axis=0)
    table = mean_std_table(fold_metrics(data.scores, oof, data.folds))
    names = [f"{cv['config']['backbone']}-seed{cv['config']['seed']}" for cv in cvs]
    out = ensemble_onnx(
        args.member,
        args.out,
        name="selfie",
        half=not args.fp32,
        extra={
            "training": "SCUT-FBP5500, the 4,400 shared images; "
            f"{len(cvs)} ImageNet CNNs fully fine-tuned ({', '.join(names)}), regression head",
            "cv_pearson": f"{table['pearson']['mean']:.4f}",
            "cv_rmse": f"{table['rmse']['mean']:.4f}",
            "cv_note": "4-fold CV on the shared folds, out-of-fold mean of the members",
            "licence": "research/demo use only (SCUT-FBP5500: non-commercial research licence); "
            "see MODEL_CARD.md",
        },
    )
    print(json.dumps({"out": str(out), "mb": round(out.stat().st_size / 1e6, 1), "cv": table}, indent=1))


if __name__ == "__main__":
    main()
