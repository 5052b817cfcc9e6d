"""Pack what a GPU machine needs to fine-tune on SCUT-FBP5500 into ``.gpu/`` (git-ignored).

- ``.gpu/weights/<file>.pth``: the backbones' ImageNet weights in float16, without the
  ImageNet classifier (fine-tuning does not use it; halves the transfer).
- ``.gpu/scut/images/*.webp`` + ``labels.csv``: the images squashed to ``--side`` (default: the
  resize policy's side, 256 px for 224 input; ``--side 350`` keeps SCUT's native size so one
  bundle serves every input size), WebP (quality 90: mean |error| ~1.3/255; 85 for 350 px
  keeps the bundle under the 64 MiB the device tool carries).
- ``.gpu/efficientnet_lite_pytorch/``: the model-code package (pure Python), absent there.

Usage: python benchmarks/recipes/prepare_gpu_bundle.py [--data ../shared/data/scut-fbp5500] [--out .gpu]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

import efficientnet_lite_pytorch
import torch
from PIL import Image

from doohable.datasets import scut_fbp5500
from doohable.model.backbones import REGISTRY, weights_path
from doohable.model.data import load_images_cached, load_scut
from doohable.model.preprocess import resize_side

SCUT = scut_fbp5500()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SCUT))
    ap.add_argument("--out", default=".gpu")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--side", type=int, default=None, help="pixels (default: resize side of --input-size)")
    ap.add_argument("--cache", default=os.path.join(os.environ.get("DOOHABLE_HOME", ".doohable"), "cache"))
    ap.add_argument("--limit", type=int, default=None, help="first N images of each fold only")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    for name, spec in REGISTRY.items():
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        slim = {
            k: v.half() if v.is_floating_point() else v
            for k, v in state.items()
            if not k.startswith(("classifier.", "_fc."))
        }
        torch.save(slim, out / "weights" / spec.weights_file)
    pkg = Path(efficientnet_lite_pytorch.__file__).parent
    shutil.copytree(
        pkg,
        out / "efficientnet_lite_pytorch",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    data = load_scut(args.data, limit=args.limit)
    arr = load_images_cached(data.paths, args.side or resize_side(args.input_size), args.cache)
    img_dir = out / "scut" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    with (out / "scut" / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "score", "subset", "fold"])
        for j, i in enumerate(arr.kept):
            name = Path(data.paths[i]).stem + ".webp"
            Image.fromarray(arr.pixels[j]).save(img_dir / name, "WEBP", quality=args.quality, method=4)
            w.writerow([name, f"{data.scores[i]:.6f}", data.groups[i], int(data.folds[i])])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(arr.kept)} images, {len(arr.errors)} skipped; {out} holds {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
