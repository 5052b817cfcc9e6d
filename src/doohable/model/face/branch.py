"""The face branch of the selfie scorer (serving): a regressor on face-recognition embeddings,
blended or stacked with the CNN's score.

A network trained to tell faces apart (dlib's ResNet face descriptor, 128-d, trained on ~3 M
faces) sees facial structure that an ImageNet backbone fine-tuned on 3,300 faces does not. A
kernel regressor on that embedding alone reaches Pearson ~0.84 on SCUT-FBP5500; blended with
the CNN it adds ~0.02 (docs/benchmarks.md, "Scorer quality").

The regressor is ridge regression on random Fourier features of an RBF kernel
(``sklearn.kernel_approximation.RBFSampler`` + ``Ridge`` when fitted): unlike kernel ridge it
stores no training embedding (those are biometric data of the dataset's people), only a random
projection and one weight per feature. Serving applies the fitted arrays with NumPy, so the
runtime needs neither scikit-learn nor torch. Images without a detected face get no face
score: the scorer then uses the CNN alone. Fitting lives in ``doohable.model.face.fit``.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doohable.model.face.embed import FaceEmbedder, mirror_box

FORMAT = "doohable-face-branch-3"
# 1: one padding (0.25), before paddings were stored; 2: before the fine-tuned face network
FORMATS = ("doohable-face-branch-1", "doohable-face-branch-2", FORMAT)
N_FEATURES = 6000  # random Fourier features of the RBF kernel (3,000: -0.0009 Pearson in the blend)
# the second regressor of a stacked branch: on the network's 256-d pooled features (before its
# last projection) of each padding's chip, concatenated and divided by POOLED_SCALE (their norm
# per chip is ~19 on SCUT faces), RBF widths on the concatenation
POOLED_SCALE = 20.0
# face chips per run of a face network: a batch's chips together run ~10 % faster than one
# image's 6 at a time, and 48 chips hold ~35 MB of activations
CHIPS_PER_RUN = 48


@dataclass
class FaceRegressor:
    """Ridge on random Fourier features: score = cos(E @ W + b) * sqrt(2/D) @ coef + intercept.

    ``seed``/``gamma``: set when W and b are exactly NumPy's legacy ``RandomState(seed)`` draws
    that ``RBFSampler`` makes (``rff_projection``); the saved file then keeps only those two
    numbers and a checksum instead of W (dim x D floats), and loading draws W again.
    """

    weights: np.ndarray  # (dim, D) random projection (RBFSampler.random_weights_)
    offset: np.ndarray  # (D,) random phases (RBFSampler.random_offset_)
    coef: np.ndarray  # (D,)
    intercept: float
    seed: int | None = None
    gamma: float | None = None

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """(N, dim) embeddings -> (N,) scores; NaN rows give NaN."""
        feats = np.cos(emb.astype(np.float64) @ self.weights + self.offset) * np.sqrt(2.0 / len(self.offset))
        return feats @ self.coef + self.intercept

    @classmethod
    def fit(
        cls, emb: np.ndarray, y: np.ndarray, *, gamma: float, alpha: float, n_components: int | None = None,
        seed: int = 0,
    ) -> FaceRegressor:
        """Fit with scikit-learn (``RBFSampler`` + ``Ridge``), keep only the arrays serving needs."""
        from sklearn.kernel_approximation import RBFSampler
        from sklearn.linear_model import Ridge

        n_components = n_components or N_FEATURES
        emb = np.asarray(emb, np.float64)  # float32 input would make RBFSampler cast W to float32
        rff = RBFSampler(gamma=gamma, n_components=n_components, random_state=seed).fit(emb)
        ridge = Ridge(alpha=alpha).fit(rff.transform(emb), y)
        w, b = rff_projection(emb.shape[1], n_components, gamma, seed)
        same = np.array_equal(w, rff.random_weights_) and np.array_equal(b, rff.random_offset_)
        # a scikit-learn that draws otherwise: keep W and b themselves (saved in full)
        return cls(rff.random_weights_, rff.random_offset_, ridge.coef_, float(ridge.intercept_),
                   seed if same else None, gamma if same else None)


def rff_projection(
    n_features: int, n_components: int, gamma: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (W, b) that ``RBFSampler(gamma, n_components, random_state=seed)`` draws for float64 input
    (NumPy's legacy ``RandomState`` streams are frozen across versions)."""
    rs = np.random.RandomState(seed)
    w = (2.0 * gamma) ** 0.5 * rs.normal(size=(n_features, n_components))
    return w, rs.uniform(0, 2 * np.pi, size=n_components)


def _checksum(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float64).tobytes()).hexdigest()


@dataclass
class FaceBranch:
    """The regressor and its blend weight: final = a + b * ((1 - w) * cnn + w * face), where a
    face is found (the CNN's score elsewhere).

    ``mirror``: the embedding is the mean of the crop's and its mirror image's (as the CNN
    averages both). ``paddings``: the chip paddings whose descriptors the embedding concatenates.
    ``calibration``: (a, b), a linear map of the blend fitted on out-of-fold blends
    (:func:`fit_calibration`; averaging two predictors pulls scores towards the mean); (0, 1):
    none.

    ``net``: optionally, a fine-tuned face network (ONNX bytes: (M, 3, 150, 150) chips ->
    (M,) scores; ``doohable.model.dlibnet_torch.finetune_face_scorer``) whose score is the mean
    over the crop's and its mirror image's chips at every padding. With it the final score is
    the linear stack ``s0 + s1 * cnn + s2 * face + s3 * net`` (``stack``, :func:`fit_stack`)
    instead of the blend. ``pooled``: with a network, optionally a second regressor on the
    original network's 256-d pooled features of the same chips (``pooled_embedding``), a fifth
    term ``+ s4 * pooled``.
    """

    regressor: FaceRegressor
    weight: float
    metadata: dict[str, str]
    mirror: bool = False
    paddings: tuple[float, ...] = (0.25,)
    calibration: tuple[float, float] = (0.0, 1.0)
    net: bytes | None = field(default=None, repr=False)
    stack: tuple[float, ...] | None = None
    pooled: FaceRegressor | None = field(default=None, repr=False)
    threads: int = 0  # ONNX Runtime's intra-op threads for the face networks (0: its default)
    embedder: FaceEmbedder = field(init=False, repr=False)
    _session: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.paddings = tuple(float(p) for p in self.paddings)
        a, b = self.calibration
        self.calibration = (float(a), float(b))
        self.embedder = FaceEmbedder(self.paddings, threads=self.threads)
        if self.regressor.weights.shape[0] != self.embedder.dim:
            raise ValueError(
                f"the regressor takes {self.regressor.weights.shape[0]}-d embeddings, but "
                f"{len(self.paddings)} paddings give {self.embedder.dim}-d"
            )
        if (self.net is None) != (self.stack is None):
            raise ValueError("a fine-tuned face network comes with its stack coefficients, and only with it")
        if self.pooled is not None and self.net is None:
            raise ValueError("a pooled-feature regressor comes only with a fine-tuned face network")
        if self.stack is not None:
            n = 5 if self.pooled is not None else 4
            if len(self.stack) != n:
                raise ValueError(f"the stack has {n} coefficients (s0, cnn, face, net"
                                 f"{', pooled' if n == 5 else ''}), got {len(self.stack)}")
            self.stack = tuple(float(v) for v in self.stack)

    def scores(self, batch: np.ndarray, boxes: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
        """uint8 (N, S, S, 3) crops -> {"face", "net", "pooled"}: the regressor's, the fine-tuned
        network's and the pooled-feature regressor's scores (NaN where the crop has no face, and
        all NaN for a part the branch does not have). Each network runs once on the chips of
        every crop of the batch (at most ``CHIPS_PER_RUN`` at a time). ``boxes``: each crop's
        face (dlib rectangle) when a detector has found it already (:meth:`_views`)."""
        out = {k: np.full(len(batch), np.nan) for k in ("face", "net", "pooled")}
        given = list(boxes) if boxes is not None else [None] * len(batch)
        if len(given) != len(batch):
            raise ValueError(f"{len(given)} face boxes for {len(batch)} crops")
        views = (self._views(crop, box) for crop, box in zip(batch, given, strict=True))
        found = [(i, v) for i, v in enumerate(views) if v is not None]
        if not found:
            return out
        desc, pooled, net = self._describe(np.concatenate([v for _, v in found]))
        idx = np.array([i for i, _ in found])
        embs, pools, start, per_view = [], [], 0, len(self.paddings)
        for k, (_, v) in enumerate(found):
            n_views = len(v) // per_view
            rows = slice(start, start + n_views * per_view)
            d, p = desc[rows].reshape(n_views, -1), pooled[rows].reshape(n_views, -1)
            start = rows.stop
            # ``mirrored``: the mean of both views, the crop's alone where its mirror has no face
            embs.append(d.mean(axis=0) if self.mirror else d[0])
            pools.append(p.mean(axis=0) / POOLED_SCALE)
            if net is not None:
                out["net"][idx[k]] = float(np.mean(net[rows]))
        out["face"][idx] = self.regressor.predict(np.stack(embs))
        if self.pooled is not None:
            out["pooled"][idx] = self.pooled.predict(np.stack(pools))
        return out

    def _views(self, crop: np.ndarray, box: Any = None) -> np.ndarray | None:
        """The chips of the crop's largest face at every padding, then (with ``mirror`` or a
        network) those of its mirror image when a face is found there too; None: no face.
        With ``box`` (the face, found by another detector) neither view runs a detection: the
        mirror image's face is the box mirrored."""
        plain = self.embedder.chips(crop, box)
        if plain is None or not (self.mirror or self.net is not None):
            return plain
        flipped_box = mirror_box(box, crop.shape[1]) if box is not None else None
        flipped = self.embedder.chips(np.ascontiguousarray(crop[:, ::-1]), flipped_box)
        return plain if flipped is None else np.concatenate([plain, flipped])

    def _describe(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(M, 150, 150, 3) chips -> (descriptors, pooled features, the fine-tuned network's
        scores or None), ``CHIPS_PER_RUN`` chips per network run."""
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for a in range(0, len(chips), CHIPS_PER_RUN):
            part = chips[a : a + CHIPS_PER_RUN]
            desc, pooled = self.embedder.describe(part, pooled=True)
            net = None
            if self.net is not None:
                x = np.ascontiguousarray(part.transpose(0, 3, 1, 2), np.float32)
                net = np.asarray(self._net().run(None, {"chips": x})[0]).reshape(-1)
            parts.append((desc, pooled, net))
        nets = [p[2] for p in parts if p[2] is not None]
        net_all = np.concatenate(nets) if nets else None
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), net_all

    def _net(self) -> Any:
        if self._session is None:
            from doohable.model.session import onnx_session

            assert self.net is not None
            self._session = onnx_session(self.net, self.threads)
        return self._session

    def blend(self, cnn: np.ndarray, batch: np.ndarray, boxes: Sequence[Any] | None = None) -> np.ndarray:
        sc = self.scores(batch, boxes)
        found = ~np.isnan(sc["face"])
        out = cnn.astype(np.float32)  # a copy
        if self.stack is None:
            out[found] = blend_scores(cnn[found], sc["face"][found], self.weight, self.calibration)
        else:
            parts = [sc["face"][found], sc["net"][found]]
            if self.pooled is not None:
                parts.append(sc["pooled"][found])
            out[found] = stack_scores(self.stack, cnn[found], *parts)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays: dict[str, Any] = {"format": np.array(FORMAT)} | _regressor_arrays(self.regressor, "")
        arrays |= {
            "weight": np.array(self.weight),
            "mirror": np.array(self.mirror),
            "paddings": np.array(self.paddings, np.float64),
            "calibration": np.array(self.calibration, np.float64),
            "metadata": np.array(json.dumps(self.metadata)),
        }
        if self.net is not None and self.stack is not None:
            arrays |= {"net": np.frombuffer(self.net, np.uint8), "stack": np.array(self.stack, np.float64)}
        if self.pooled is not None:
            arrays |= _regressor_arrays(self.pooled, "pooled_")
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 0) -> FaceBranch:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) not in FORMATS:
                raise ValueError(f"{path}: not a doohable face branch ({' or '.join(FORMATS)})")
            reg = _regressor_from(z, "", path)
            meta = _parse_metadata(str(z["metadata"]))
            mirror = bool(z["mirror"]) if "mirror" in z.files else False
            paddings = tuple(float(p) for p in z["paddings"]) if "paddings" in z.files else (0.25,)
            cal = tuple(float(v) for v in z["calibration"]) if "calibration" in z.files else (0.0, 1.0)
            net = z["net"].tobytes() if "net" in z.files else None
            stack = tuple(float(v) for v in z["stack"]) if "stack" in z.files else None
            pooled = _regressor_from(z, "pooled_", path) if "pooled_coef" in z.files else None
            return cls(reg, float(z["weight"]), dict(meta), mirror, paddings, (cal[0], cal[1]), net,
                       stack, pooled, threads)


def _regressor_arrays(r: FaceRegressor, prefix: str) -> dict[str, Any]:
    if r.seed is not None and r.gamma is not None:  # W and b are drawn again from the seed on load
        arrays = {
            "rff_seed": np.array(r.seed),
            "rff_gamma": np.array(r.gamma),
            "rff_shape": np.array(r.weights.shape),
            "rff_sha256": np.array(_checksum(r.weights) + _checksum(r.offset)),
        }
    else:
        arrays = {"weights": r.weights.astype(np.float32), "offset": r.offset.astype(np.float32)}
    arrays |= {"coef": r.coef.astype(np.float32), "intercept": np.array(r.intercept)}
    return {prefix + k: v for k, v in arrays.items()}


def _regressor_from(z: Any, prefix: str, path: str | Path) -> FaceRegressor:
    coef, intercept = z[prefix + "coef"].astype(np.float64), float(z[prefix + "intercept"])
    if prefix + "rff_seed" in z.files:
        seed, gamma = int(z[prefix + "rff_seed"]), float(z[prefix + "rff_gamma"])
        shape = z[prefix + "rff_shape"]
        w, b = rff_projection(int(shape[0]), int(shape[1]), gamma, seed)
        if _checksum(w) + _checksum(b) != str(z[prefix + "rff_sha256"]):
            raise ValueError(f"{path}: the projection drawn from its seed is not the one fitted")
        return FaceRegressor(w, b, coef, intercept, seed, gamma)
    return FaceRegressor(z[prefix + "weights"].astype(np.float64), z[prefix + "offset"].astype(np.float64),
                         coef, intercept)


def _parse_metadata(text: str) -> dict[str, str]:
    """JSON; files written before JSON (the bundled ``selfie.face.npz``) hold a Python dict repr."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = ast.literal_eval(text)
    if not isinstance(meta, dict):
        raise ValueError(f"face branch metadata is not a mapping: {text[:80]!r}")
    return {str(k): str(v) for k, v in meta.items()}


def blend_scores(
    cnn: np.ndarray, face: np.ndarray, weight: float, calibration: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """The selfie score where a face is found: ``a + b * ((1 - w) * cnn + w * face)``."""
    a, b = calibration
    return a + b * ((1.0 - weight) * cnn + weight * face)


def stack_scores(stack: Sequence[float], *scores: np.ndarray) -> np.ndarray:
    """The selfie score where a face is found, with a fine-tuned face network:
    ``s0 + s1 * cnn + s2 * face + s3 * net [+ s4 * pooled]``."""
    if len(stack) != len(scores) + 1:
        raise ValueError(f"{len(stack)} coefficients for {len(scores)} scores")
    terms = [c * np.asarray(v, np.float64) for c, v in zip(stack[1:], scores, strict=True)]
    return np.asarray(stack[0] + np.sum(terms, axis=0), np.float64)
