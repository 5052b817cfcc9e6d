"""Does the photo model gain from more views of each photo? Mirror averaging and a second scale.

On the live-challenge photos, the frozen EfficientNet-Lite0 multi-level features of the whole
500 px photo (``photo-hq``'s input) with the RBF kernel head, nested CV on the fixed 5 folds
(penalty and width chosen inside each training part), against the same with:

- ``flip-avg``: the features of the photo and of its mirror image averaged (test-time
  augmentation; twice the network cost);
- ``+squash224``: the features of the selfie models' 224 px squashed view concatenated;
- ``+mnv2@500``: MobileNetV2's features of the same 500 px photo concatenated (the best
  candidate of bench_photo.py, for reference).

Features are cached with bench_photo.py's (``.cache/photo-features``).

    PYTHONPATH=src:benchmarks/measure nice .venv/bin/python benchmarks/research/photo_views.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from photo_features import cached, crops, features

from doohable import datasets
from doohable.model import photo
from doohable.model import photo_train as pt


def mirrored(labels: photo.PhotoLabels, cache: Path) -> np.ndarray:
    """EfficientNet-Lite0 features of each whole photo's mirror image (cached)."""
    return cached(
        cache / f"feat-efficientnet_lite0-native-full500-mirror-{len(labels)}.npz",
        lambda: photo.extract(
            photo.multilevel("efficientnet_lite0"),
            np.ascontiguousarray(crops(labels, "native-full500")[:, :, ::-1]),
        ),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=datasets.live_challenge())
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    labels = photo.load_live(args.data)
    split = pt.fold_splits(labels.folds)
    x500 = features(labels, "efficientnet_lite0", "native-full500", args.cache)
    views = {
        "lite0@500": x500,
        "lite0@500 flip-avg": (x500 + mirrored(labels, args.cache)) / 2,
        "lite0@500 +squash224": np.concatenate(
            [x500, features(labels, "efficientnet_lite0", "squash-224", args.cache)], 1
        ),
        "lite0@500 +mnv2@500": np.concatenate(
            [x500, features(labels, "mobilenet_v2", "native-full500", args.cache)], 1
        ),
    }
    out = {}
    for name, x in views.items():
        r = pt.nested_cv(x, labels, pt.head_fitter("kernel"), pt.GRIDS["kernel"], split)
        out[name] = {k: r[k] for k in ("srcc", "plcc", "rmse")}
        print(name, {k: [round(v, 4) for v in r[k]] for k in ("srcc", "plcc", "rmse")}, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
