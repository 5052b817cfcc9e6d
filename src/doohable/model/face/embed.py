"""Face embeddings: dlib's detector, landmarks and aligned chips, and dlib's face-recognition
network's descriptors of them (run by ONNX Runtime, ``doohable.model.face.dlibnet``).

It runs on exactly what the CNN sees: the prepared uint8 (S, S, 3) crop, so training, batch
scoring and the API cannot differ. Steps: dlib's HOG face detector (upsampled once); the
largest face; dlib's 5-point landmarks; the 128-d descriptor of the aligned 150 px chip at each
padding.

Models: ``dlib_face_recognition_resnet_model_v1`` and ``shape_predictor_5_face_landmarks``
(Davis King, public domain / CC0), from the ``face_recognition_models`` package; dlib from
``dlib-bin``.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

EMBEDDING_DIM = 128  # one descriptor; an embedding concatenates one per padding
# chip paddings (dlib's default is 0.25): each gives a descriptor of the same aligned face with
# more or less context around it (forehead, hair, jaw); together they carry more than any one
DEFAULT_PADDINGS = (0.25, 0.5, 0.8)


# dlib's frontal face detector (5 HOG filters; dlib, Boost Software License) saved by
# ``dlib.get_frontal_face_detector().save(path)``: loading the file takes ~3 ms of CPU, building
# the detector from dlib's embedded text ~0.8 s (a one-image ``doohable score`` pays it)
DETECTOR_PATH = Path(__file__).resolve().parents[1] / "bundled" / "frontal_face_detector.svm"


def frontal_face_detector() -> Any:
    """dlib's frontal face detector, from ``DETECTOR_PATH`` (built by dlib when it is missing)."""
    import dlib

    if DETECTOR_PATH.is_file():
        return dlib.fhog_object_detector(str(DETECTOR_PATH))
    return dlib.get_frontal_face_detector()


def _model_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ needs pkg_resources)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError("the face branch needs the face_recognition_models package (pip install -e .)")
    return Path(spec.origin).parent / "models"


class FaceEmbedder:
    """uint8 (S, S, 3) RGB crops -> face embeddings (NaN rows where no face is found): the
    128-d descriptors of the largest face's aligned chip at each of ``paddings``, concatenated.

    Detection, landmarks and chips come from dlib; the descriptor from dlib's own network and
    weights run by ONNX Runtime (``doohable.model.dlibnet``: the same numbers to ~1e-6, ~9x
    faster than dlib's CPU code). The models (~30 MB) are loaded on first use, one set per
    embedder; dlib's part runs under a lock (it holds Python's lock while it computes, so
    threads gain nothing from their own copies), the network outside it.
    """

    def __init__(self, paddings: Sequence[float] = (0.25,), *, threads: int = 0) -> None:
        if not paddings or any(not 0.0 <= p <= 2.0 for p in paddings):
            raise ValueError(f"paddings must be 1+ values in [0, 2], got {tuple(paddings)}")
        self.paddings = tuple(float(p) for p in paddings)
        self.dim = EMBEDDING_DIM * len(self.paddings)
        self.threads = threads  # ONNX Runtime's intra-op threads (0: its default)
        self._lock = threading.Lock()
        self._m: tuple[Any, Any, Any] | None = None

    def _models(self) -> tuple[Any, Any, Any]:
        if self._m is not None:  # loaded: no lock, so describing never waits for a detection
            return self._m
        with self._lock:
            if self._m is None:
                import dlib

                from doohable.model.face.dlibnet import dlib_face_onnx
                from doohable.model.session import onnx_session

                d = _model_dir()
                net = dlib_face_onnx(d / "dlib_face_recognition_resnet_model_v1.dat").SerializeToString()
                self._m = (
                    frontal_face_detector(),
                    dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
                    onnx_session(net, self.threads),
                )
            return self._m

    def chips(self, crop: np.ndarray, box: Any = None) -> np.ndarray | None:
        """One (S, S, 3) uint8 crop -> (len(paddings), 150, 150, 3) uint8: the largest face's
        aligned chip at each padding, or None when no face is detected. ``box``: the face's
        dlib rectangle when a detector has already found it (then no detection runs here)."""
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {crop.dtype} {crop.shape}")
        img = np.ascontiguousarray(crop)
        detector, landmarks, _ = self._models()
        with self._lock:
            face = box if box is not None else largest(detector(img, 1))
            if face is None:
                return None
            shape = landmarks(img, face)
            import dlib

            return np.stack([dlib.get_face_chip(img, shape, 150, p) for p in self.paddings])

    @overload
    def describe(self, chips: np.ndarray) -> np.ndarray: ...

    @overload
    def describe(self, chips: np.ndarray, *, pooled: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self, chips: np.ndarray, *, pooled: bool = False) -> Any:
        """(M, 150, 150, 3) uint8 chips -> (M, 128) float32 descriptors (dlib's numbers); with
        ``pooled``, (descriptors, (M, 256) pooled features before the last projection)."""
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32)
        desc, feats = self._models()[2].run(["descriptor", "features"], {"chips": x})
        return (desc, feats) if pooled else desc

    def embed_one(self, crop: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 crop -> (dim,) float32, or NaNs when no face is detected."""
        chips = self.chips(crop)
        if chips is None:
            return np.full(self.dim, np.nan, np.float32)
        return self.describe(chips).reshape(-1)

    def embed_pairs(
        self, crops: Sequence[np.ndarray], *, tick: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crops -> (plain, flipped): float32 (N, dim) embeddings of each crop and of its mirror
        image (NaN rows where no face is found). ``tick(done, total)`` after each crop.

        ``crops`` may be a list of views (e.g. ``runtime.center_crop`` of decoded images), so a
        large set needs no stacked copy.
        """
        n = len(crops)
        plain = np.empty((n, self.dim), np.float32)
        flipped = np.empty((n, self.dim), np.float32)
        for i, crop in enumerate(crops):
            plain[i] = self.embed_one(crop)
            flipped[i] = self.embed_one(np.ascontiguousarray(crop[:, ::-1]))
            if tick:
                tick(i + 1, n)
        return plain, flipped

    def embed(self, batch: np.ndarray, *, mirror: bool = False) -> np.ndarray:
        """uint8 (N, S, S, 3) -> float32 (N, dim); rows of NaN where no face was found. ``mirror``:
        ``mirrored`` of the crop's and its mirror image's embeddings, as the branch is fitted."""
        if mirror:
            return mirrored(*self.embed_pairs(list(batch)))
        out = np.empty((len(batch), self.dim), np.float32)
        for i, crop in enumerate(batch):
            out[i] = self.embed_one(crop)
        return out


def largest(faces: Any) -> Any:
    """The largest of dlib's detections, or None when there is none."""
    return max(faces, key=lambda r: r.width() * r.height()) if faces else None


def mirror_box(box: Any, width: int) -> Any:
    """A dlib rectangle in an image ``width`` px wide -> the same face's in its mirror image."""
    import dlib

    return dlib.rectangle(width - 1 - box.right(), box.top(), width - 1 - box.left(), box.bottom())


def scale_box(box: Any, k: float) -> Any:
    """A dlib rectangle found on an image shrunk by ``1 / k`` -> the same region at full size."""
    import dlib

    return dlib.rectangle(round(box.left() * k), round(box.top() * k),
                          round((box.right() + 1) * k) - 1, round((box.bottom() + 1) * k) - 1)


def mirrored(plain: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """The mirror-pass embedding: mean of plain and flipped where the flip found a face, else plain."""
    return np.where(np.isnan(flipped), plain, (plain + flipped) / 2)
