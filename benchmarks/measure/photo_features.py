"""Cached multi-level features of the live-challenge photos, per backbone and input policy.

Used by bench_photo.py and make_photo_model.py; features are kept as .npz in a cache folder
(outside the repository), keyed by backbone and policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from doohable.model import photo
from doohable.model.runtime import prepare_image

# name -> (resize policy recorded in the model, input size S)
POLICIES: dict[str, tuple[str, int]] = {
    "squash-224": ("squash-center-crop-0.875", 224),
    "short256-crop224": ("short-side-256-center-crop-224", 224),
    "native-crop224": ("short-side-500-center-crop-224", 224),
    "native-crop320": ("short-side-500-center-crop-320", 320),
    "native-full500": ("short-side-500-center-crop-500", 500),
}
BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


def crops(labels: photo.PhotoLabels, policy: str) -> np.ndarray:
    """uint8 (N, S, S, 3) inputs of every labelled photo under ``policy``."""
    name, size = POLICIES[policy]
    if name.startswith("short-side-"):
        r = int(name.split("-")[2])
        got = photo.load_crops(labels.paths, r, size)
        if got.errors:
            raise ValueError(f"unreadable photos: {got.errors[:3]}")
        return got.pixels
    out = []
    for p in labels.paths:
        with Image.open(p) as im:
            out.append(prepare_image(im, size))
    return np.stack(out)


def features(labels: photo.PhotoLabels, backbone: str, policy: str, cache: Path) -> np.ndarray:
    """Features (N, D) of the labelled photos, from ``cache`` or computed (and then cached);
    ``a+b`` concatenates the features of backbones ``a`` and ``b`` (each cached on its own)."""
    if "+" in backbone:
        return np.concatenate([features(labels, b, policy, cache) for b in backbone.split("+")], axis=1)
    return cached(
        cache / f"feat-{backbone}-{policy}-{len(labels)}.npz",
        lambda: photo.extract(photo.multilevel(backbone), crops(labels, policy)),
    )


def cached(f: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array kept in ``f``, or ``compute()``'s, kept there first (written whole, then renamed)."""
    if f.is_file():
        return np.load(f)["x"]
    x = compute()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, x=x)
    tmp.replace(f)
    return x


if __name__ == "__main__":  # precompute every cache entry
    import sys
    import time

    torch.set_num_threads(2)
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/photo-features")
    labels = photo.load_live()
    # the full 500 px policies (5x the cost) last
    order = sorted(((bb, p) for bb in BACKBONES for p in POLICIES), key=lambda t: POLICIES[t[1]][1] >= 500)
    for bb, pol in order:
        t = time.perf_counter()
        x = features(labels, bb, pol, cache)
        print(bb, pol, x.shape, f"{time.perf_counter() - t:.0f}s", flush=True)
