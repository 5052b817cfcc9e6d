"""Which face box the selfie's face branch aligns: its accuracy and its detection cost.

The face branch aligns the largest face of the crop and of its mirror image (dlib's 5-point
landmarks from a face box, then the chips). Candidates for the box, on SCUT-FBP5500 faces of
fold 1 (the bundled models were trained on every fold, so the Pearson values are optimistic
and only their differences count):

- ``detect``: dlib's HOG detector upsampled once, on the crop and on its mirror image (the
  ``selfie`` model scoring alone);
- ``detect + mirror``: that detector on the crop, its box mirrored for the mirror image;
- ``gate + mirror``: the default scorer's gate (HOG on the crop shrunk to 112 px, no
  upsampling) scaled to the crop, mirrored for the mirror image (the default scorer; where
  the gate stays shut, the detector upsampled once).

Reported: Pearson and RMSE with the labels, the change of each face's score against
``detect`` (RMS, max), and the CPU ms per face spent finding the boxes.

Run (from the repository root)::

    PYTHONPATH=src:benchmarks/measure .venv/bin/python benchmarks/measure/bench_face_alignment.py --faces 300
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from bench_default import SCUT, cpu_ms, scut_rows

from doohable.batch import prepare_bytes
from doohable.model.default import FaceGate
from doohable.model.face.embed import largest
from doohable.model.runtime import load_scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=300)
    args = ap.parse_args()
    rows = scut_rows(args.faces)
    y = np.array([float(r["score"]) for r in rows])
    selfie = load_scorer("selfie", threads=1)
    assert selfie.face is not None
    crops = np.stack([prepare_bytes((SCUT / "images" / r["image"]).read_bytes(), selfie) for r in rows])
    detector = selfie.face.embedder._models()[0]
    gate = FaceGate()
    gate(crops[:1])  # the detector is built on first use: not counted
    finders: dict[str, Callable[[], list[Any] | None]] = {
        "detect": lambda: None,
        "detect + mirror": lambda: [largest(detector(c, 1)) for c in crops],
        "gate + mirror": lambda: gate.boxes(crops),
    }
    out: dict[str, Any] = {"faces": len(rows)}
    ref = None
    for name, find in finders.items():
        ms, boxes = cpu_ms(find, len(rows))
        if name == "detect":
            ms = 0.0  # counted below, inside the branch
        pred = np.concatenate([
            selfie.score(crops[i : i + 8], None if boxes is None else boxes[i : i + 8])
            for i in range(0, len(rows), 8)
        ]).astype(np.float64)
        ref = pred if ref is None else ref
        d = pred - ref
        out[name] = {"pearson": float(np.corrcoef(pred, y)[0, 1]),
                     "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
                     "change_rms": float(np.sqrt(np.mean(d**2))), "change_max": float(np.abs(d).max()),
                     "box_cpu_ms_per_face": ms}
        print(name, out[name], flush=True)
    views = [np.ascontiguousarray(v) for c in crops for v in (c, c[:, ::-1])]
    out["detect"]["box_cpu_ms_per_face"], _ = cpu_ms(lambda: [detector(v, 1) for v in views], len(rows))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
