"""The face branch of the selfie scorer: a face-recognition embedding and a regressor on it.

A network trained to tell faces apart (dlib's ResNet face descriptor, 128-d, trained on ~3 M
faces) sees facial structure that an ImageNet backbone fine-tuned on 3,300 faces does not. A
kernel regressor on that embedding alone reaches Pearson ~0.84 on SCUT-FBP5500; blended with
the CNN it adds ~0.02 (docs/benchmarks.md, "Scorer quality").

It runs on exactly what the CNN sees: the prepared uint8 (S, S, 3) crop, so training, batch
scoring and the API cannot differ. Steps: dlib's HOG face detector (upsampled once); the
largest face; dlib's 5-point landmarks; the 128-d descriptor of the aligned 150 px chip.

The regressor is ridge regression on random Fourier features of an RBF kernel
(``sklearn.kernel_approximation.RBFSampler`` + ``Ridge`` when fitted): unlike kernel ridge it
stores no training embedding (those are biometric data of the dataset's people), only a random
projection and one weight per feature. Serving applies the fitted arrays with NumPy, so the
runtime needs neither scikit-learn nor torch. Images without a detected face get no face
score: the scorer then uses the CNN alone.

Models: ``dlib_face_recognition_resnet_model_v1`` and ``shape_predictor_5_face_landmarks``
(Davis King, public domain / CC0), from the ``face_recognition_models`` package; dlib from
``dlib-bin``.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_DIM = 128
FORMAT = "doohable-face-branch-1"


def _model_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ needs pkg_resources)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError("the face branch needs the face_recognition_models package (pip install -e .)")
    return Path(spec.origin).parent / "models"


class FaceEmbedder:
    """uint8 (S, S, 3) RGB crops -> 128-d face descriptors (NaN rows where no face is found).

    One set of dlib models (~30 MB) per embedder, loaded on first use, used under a lock: dlib
    holds Python's lock while it computes, so threads gain nothing from their own copies (a
    server's thread pool would otherwise load one per thread).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._m: tuple[Any, Any, Any] | None = None

    def _models(self) -> tuple[Any, Any, Any]:
        if self._m is None:
            import dlib

            d = _model_dir()
            self._m = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
                dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")),
            )
        return self._m

    def embed_one(self, crop: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 crop -> (128,) float32, or NaNs when no face is detected."""
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {crop.dtype} {crop.shape}")
        img = np.ascontiguousarray(crop)
        with self._lock:
            detector, landmarks, descriptor = self._models()
            faces = detector(img, 1)
            if not faces:
                return np.full(EMBEDDING_DIM, np.nan, np.float32)
            face = max(faces, key=lambda r: r.width() * r.height())
            shape = landmarks(img, face)
            return np.asarray(descriptor.compute_face_descriptor(img, shape, 0), dtype=np.float32)

    def embed_mirrored(self, crop: np.ndarray) -> np.ndarray:
        """Mean descriptor of the crop and its mirror image (the one found if only one is)."""
        both = np.stack([self.embed_one(crop), self.embed_one(np.ascontiguousarray(crop[:, ::-1]))])
        found = ~np.isnan(both).any(axis=1)
        if not found.any():
            return both[0]
        return both[found].mean(axis=0)

    def embed(self, batch: np.ndarray, *, mirror: bool = False) -> np.ndarray:
        """uint8 (N, S, S, 3) -> float32 (N, 128); rows of NaN where no face was found."""
        one = self.embed_mirrored if mirror else self.embed_one
        out = np.empty((len(batch), EMBEDDING_DIM), np.float32)
        for i, crop in enumerate(batch):
            out[i] = one(crop)
        return out


@dataclass
class FaceRegressor:
    """Ridge on random Fourier features: score = cos(E @ W + b) * sqrt(2/D) @ coef + intercept."""

    weights: np.ndarray  # (128, D) random projection (RBFSampler.random_weights_)
    offset: np.ndarray  # (D,) random phases (RBFSampler.random_offset_)
    coef: np.ndarray  # (D,)
    intercept: float

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """(N, 128) embeddings -> (N,) scores; NaN rows give NaN."""
        feats = np.cos(emb.astype(np.float64) @ self.weights + self.offset) * np.sqrt(2.0 / len(self.offset))
        return feats @ self.coef + self.intercept

    @classmethod
    def fit(cls, emb: np.ndarray, y: np.ndarray, *, gamma: float, alpha: float, n_components: int = 3000,
            seed: int = 0) -> FaceRegressor:
        """Fit with scikit-learn (``RBFSampler`` + ``Ridge``), keep only the arrays serving needs."""
        from sklearn.kernel_approximation import RBFSampler
        from sklearn.linear_model import Ridge

        rff = RBFSampler(gamma=gamma, n_components=n_components, random_state=seed).fit(emb)
        ridge = Ridge(alpha=alpha).fit(rff.transform(emb), y)
        return cls(rff.random_weights_, rff.random_offset_, ridge.coef_, float(ridge.intercept_))


@dataclass
class FaceBranch:
    """The regressor and its blend weight: final = (1 - w) * cnn + w * face, where a face is found.

    ``mirror``: the embedding is the mean of the crop's and its mirror image's (as the CNN
    averages both).
    """

    regressor: FaceRegressor
    weight: float
    metadata: dict[str, str]
    mirror: bool = False
    embedder: FaceEmbedder = field(default_factory=FaceEmbedder, repr=False)

    def blend(self, cnn: np.ndarray, batch: np.ndarray) -> np.ndarray:
        face = self.regressor.predict(self.embedder.embed(batch, mirror=self.mirror))
        found = ~np.isnan(face)
        out = cnn.astype(np.float32)  # a copy
        out[found] = (1.0 - self.weight) * cnn[found] + self.weight * face[found]
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        r = self.regressor
        np.savez_compressed(
            path,
            format=np.array(FORMAT),
            weights=r.weights.astype(np.float32),
            offset=r.offset.astype(np.float32),
            coef=r.coef.astype(np.float32),
            intercept=np.array(r.intercept),
            weight=np.array(self.weight),
            mirror=np.array(self.mirror),
            metadata=np.array(repr(self.metadata)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaceBranch:
        import ast

        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != FORMAT:
                raise ValueError(f"{path}: not a doohable face branch ({FORMAT})")
            reg = FaceRegressor(
                z["weights"].astype(np.float64),
                z["offset"].astype(np.float64),
                z["coef"].astype(np.float64),
                float(z["intercept"]),
            )
            meta = ast.literal_eval(str(z["metadata"]))
            mirror = bool(z["mirror"]) if "mirror" in z.files else False
            return cls(reg, float(z["weight"]), dict(meta), mirror)
