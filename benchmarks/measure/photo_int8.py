"""Is an int8 ``photo`` part good enough? Speed and live-challenge SRCC against the fp32 model.

The bundled ``photo.onnx`` is quantised statically by ONNX Runtime (``quant_pre_process`` then
``quantize_static``, QOperator format, per-channel int8 weights, uint8 activations calibrated
on ``--calib`` photos of the lowest fold). Both models score every live-challenge photo (its
native 224 crop, as served); printed: CPU ms per photo (one thread, batches of 16) and SRCC
with the MOS per fold. The shipped model was trained on every fold, so its SRCC is optimistic:
only the difference between the two counts (the criterion: a drop under 0.005).

Run (from the repository root)::

    PYTHONPATH=src .venv/bin/python benchmarks/measure/photo_int8.py --out /tmp/photo-int8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from doohable.model import photo
from doohable.model.runtime import BUNDLED_DIR
from doohable.model.session import onnx_session


def quantise(src: Path, out: Path, calib: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": calib[i : i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre = out / "photo_pre.onnx"
    quant_pre_process(str(src), str(pre))
    dst = out / "photo_int8.onnx"
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def run(model: Path, x: np.ndarray) -> tuple[float, np.ndarray]:
    """(CPU ms per photo, scores) of ``model`` on ``x``, one thread."""
    session = onnx_session(model.read_bytes(), 1)
    t = time.thread_time()
    out = [np.asarray(session.run(None, {"image": x[i : i + 16]})[0]).reshape(-1)
           for i in range(0, len(x), 16)]
    return 1000 * (time.thread_time() - t) / len(x), np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the quantised model")
    ap.add_argument("--calib", type=int, default=96)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labels = photo.load_live()
    x = photo.load_crops(labels.paths, 500, 224).pixels
    first = np.where(labels.folds == labels.folds.min())[0][: args.calib]
    fp32 = BUNDLED_DIR / "photo.onnx"
    int8 = quantise(fp32, args.out, x[first])
    results = {name: run(m, x) for name, m in (("fp32", fp32), ("int8", int8))}
    for name, (ms, pred) in results.items():
        per_fold = [spearmanr(pred[labels.folds == f], labels.mos[labels.folds == f])[0]
                    for f in np.unique(labels.folds)]
        print(f"{name}: {ms:.2f} CPU ms/photo, SRCC per fold {np.round(per_fold, 4).tolist()}, "
              f"all {spearmanr(pred, labels.mos)[0]:.4f}")
    a, b = results["fp32"][1], results["int8"][1]
    print(f"correlation of the two models' scores: {np.corrcoef(a, b)[0, 1]:.4f}")


if __name__ == "__main__":
    main()
