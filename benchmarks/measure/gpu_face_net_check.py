"""The face network's fine-tuning on a GPU: does the CUDA path give what the CPU path gives, and
how long does an epoch of SCUT's size take there?

Run on a machine with CUDA (the device tool's: torch, no dlib, no venv), with the face chips
and dlib's weight file carried in a git-ignored folder made here by ``--prepare``:

    .venv/bin/python benchmarks/measure/gpu_face_net_check.py --prepare .gpu-face      # here: 32 SCUT faces
    PYTHONPATH=src python benchmarks/measure/gpu_face_net_check.py --data .gpu-face    # there

Checks (each prints its figure; a failed one exits non-zero):
1. Before any step (``epochs=0``: the head fitted by ridge on the frozen network's features),
   the model trained on CUDA scores as the one trained on the CPU (same data, fp32 features).
2. Three epochs on CUDA (bf16 autocast) lower the training RMSE, and the model comes back on
   the CPU with finite scores.
3. Speed: one epoch over 3,300 faces (the 32 faces' chips repeated), on CUDA.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def prepare(out: Path, n: int = 32) -> None:
    from PIL import Image

    from doohable.datasets import scut_fbp5500
    from doohable.model.face.embed import DEFAULT_PADDINGS, FaceEmbedder
    from doohable.model.face.train import chip_pairs, dlib_net_path
    from doohable.model.runtime import prepare_image

    scut = scut_fbp5500()
    rows = list(csv.DictReader((scut / "labels.csv").open()))[:: 4400 // n][:n]
    crops = [prepare_image(Image.open(scut / "images" / r["image"]), 224) for r in rows]
    chips, found = chip_pairs(FaceEmbedder(DEFAULT_PADDINGS), crops)
    out.mkdir(parents=True, exist_ok=True)
    y = np.array([float(r["score"]) for r in rows], np.float32)
    np.savez_compressed(out / "faces.npz", chips=chips, found=found, y=y)
    shutil.copy(dlib_net_path(), out / "dlib.dat")
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"{n} faces ({int(found[:, 0].sum())} found) -> {out} ({size:.1f} MiB)")


def check(data: Path) -> int:
    import torch

    from doohable.model.face.dlibnet_torch import face_scores, finetune_face_scorer

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    z = np.load(data / "faces.npz")
    chips, found, y = z["chips"], z["found"], z["y"]
    train = np.flatnonzero(found[:, 0])
    dat = data / "dlib.dat"
    failed = 0
    # 1. the starting point: CUDA and CPU agree
    cpu = finetune_face_scorer(dat, chips, found, y, train, epochs=0, device="cpu", bf16=False)
    gpu = finetune_face_scorer(dat, chips, found, y, train, epochs=0, device="cuda", bf16=False)
    a, b = face_scores(cpu, chips, found), face_scores(gpu, chips, found)
    diff = float(np.nanmax(np.abs(a - b)))
    print(f"1. ridge start, CPU vs CUDA: max |diff| {diff:.2e} over {len(train)} faces")
    failed += diff > 1e-2
    # 2. three epochs on CUDA with bf16
    rmses: list[float] = []
    model = finetune_face_scorer(dat, chips, found, y, train, epochs=3, batch=8, device="auto",
                                 progress=lambda e, n, r: rmses.append(r))
    p = face_scores(model, chips, found)
    on_cpu = next(model.parameters()).device.type == "cpu"
    print(f"2. CUDA bf16, 3 epochs: train rmse {', '.join(f'{r:.3f}' for r in rmses)}; "
          f"model on the CPU after: {on_cpu}; scores finite: {bool(np.isfinite(p[train]).all())}")
    failed += not (on_cpu and np.isfinite(p[train]).all() and len(rmses) == 3)
    # 3. an epoch of SCUT's size (3,300 faces: one fold's training set)
    reps = -(-3300 // len(train))
    big = np.concatenate([chips[train]] * reps)[:3300]
    big_found = np.ones((len(big), 2), bool) & np.concatenate([found[train]] * reps)[:3300]
    big_y = np.concatenate([y[train]] * reps)[:3300]
    torch.cuda.synchronize()
    t0 = time.time()
    ticks: list[float] = []
    finetune_face_scorer(dat, big, big_found, big_y, np.arange(len(big)), epochs=2, device="auto",
                         progress=lambda e, n, r: ticks.append(time.time()))
    print(f"3. 3,300 faces: ridge start + 2 epochs {time.time() - t0:.1f} s "
          f"(second epoch alone {ticks[1] - ticks[0]:.1f} s)")
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", type=Path, help="make the data folder here (this machine)")
    ap.add_argument("--data", type=Path, help="run the checks on this data folder (a CUDA machine)")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare)
    elif args.data:
        sys.exit(check(args.data))
    else:
        ap.error("--prepare DIR or --data DIR")


if __name__ == "__main__":
    main()
