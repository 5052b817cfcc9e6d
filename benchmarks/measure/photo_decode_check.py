"""Two checks of the photo part as the default scorer runs it.

1. ``decode``: what the JPEG decode size does to the photo part. 200 live-challenge photos
   (seeded) enlarged ``--factor`` times (Lanczos, JPEG q92), each decoded in draft mode for the
   face part's size (256 px, what the default did until 723c76d) and for the photo part's
   (500 px, ``CombinedScorer.decode_side``), then scored by ``photo``: SRCC with the MOS and the
   mean score, next to the original 500 px photos. The model was trained on these photos, so
   only the differences count.
2. ``batch``: ONNX Runtime CPU-ms per 224 crop, one thread, at batch 1, 2, 4 and 8, for
   ``photo`` and for ``--baseline`` (another .onnx, e.g. 685c861's MobileNetV2 ``photo``).

    PYTHONPATH=src:benchmarks/measure .venv/bin/python benchmarks/measure/photo_decode_check.py \\
        --baseline /tmp/base-head/src/doohable/model/bundled/photo.onnx
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from doohable.images import decode
from doohable.model import photo
from doohable.model.runtime import load_scorer


def decode_check(factor: float, n: int) -> dict[str, dict[str, float]]:
    scorer = load_scorer("photo", threads=2)
    labels = photo.load_live()
    pick = np.random.default_rng(0).choice(len(labels), n, replace=False)
    names = ("original 500 px", "decoded for 256 px", "decoded for 500 px")
    inputs: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for i in pick:
        with Image.open(labels.paths[i]) as im:
            rgb = im.convert("RGB")
        big = rgb.resize((round(rgb.width * factor), round(rgb.height * factor)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        inputs["original 500 px"].append(scorer.prepare(rgb))
        for side in (256, 500):
            drafted = decode(buf.getvalue(), draft=(side, side)).image
            inputs[f"decoded for {side} px"].append(scorer.prepare(drafted))
    out = {}
    for name, crops in inputs.items():
        s = scorer.score(np.stack(crops))
        out[name] = {"srcc": float(spearmanr(s, labels.mos[pick])[0]), "mean_score": float(s.mean())}
    return out


def batch_check(models: list[str]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for model in models:
        scorer = load_scorer(model, threads=1)
        out[model] = {}
        for b in (1, 2, 4, 8):
            x = np.random.default_rng(0).integers(0, 256, (b, 224, 224, 3), dtype=np.uint8)
            scorer.score(x)
            t, runs = time.process_time(), 0
            while time.process_time() - t < 2.0:
                scorer.score(x)
                runs += 1
            out[model][b] = (time.process_time() - t) / runs / b * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", type=float, default=2.2, help="enlargement (2.2: 500 px become 1100)")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--baseline", default=None, help="another photo .onnx for the batch check")
    args = ap.parse_args()
    models = ["photo"] + ([args.baseline] if args.baseline else [])
    print(json.dumps({"decode": decode_check(args.factor, args.photos), "batch_cpu_ms": batch_check(models)},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
