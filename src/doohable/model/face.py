"""The face branch of the selfie scorer: a face-recognition embedding and a regressor on it.

A network trained to tell faces apart (dlib's ResNet face descriptor, 128-d, trained on ~3 M
faces) sees facial structure that an ImageNet backbone fine-tuned on 3,300 faces does not. A
kernel regressor on that embedding alone reaches Pearson ~0.84 on SCUT-FBP5500; blended with
the CNN it adds ~0.02 (docs/benchmarks.md, "Scorer quality").

It runs on exactly what the CNN sees: the prepared uint8 (S, S, 3) crop, so training, batch
scoring and the API cannot differ. Steps: dlib's HOG face detector (upsampled once); the
largest face; dlib's 5-point landmarks; the 128-d descriptor of the aligned 150 px chip, by
dlib's network read from its own weight file and run by ONNX Runtime (``doohable.model.dlibnet``).

The regressor is ridge regression on random Fourier features of an RBF kernel
(``sklearn.kernel_approximation.RBFSampler`` + ``Ridge`` when fitted): unlike kernel ridge it
stores no training embedding (those are biometric data of the dataset's people), only a random
projection and one weight per feature. Serving applies the fitted arrays with NumPy, so the
runtime needs neither scikit-learn nor torch. Images without a detected face get no face
score: the scorer then uses the CNN alone.

Fitting (``fit_face_branch``): the mirror pass, the RBF width, the ridge penalty and the blend
weight are chosen together (``choose_face_branch``) by the lowest k-fold CV RMSE of the blend,
given the CNN's out-of-fold predictions on the same folds; then the regressor is fitted on every
image with a face. ``benchmarks/bench_face_branch.py`` (the bundled file, with nested CV around
the choice) and ``doohable train --face-branch`` both use it.

Models: ``dlib_face_recognition_resnet_model_v1`` and ``shape_predictor_5_face_landmarks``
(Davis King, public domain / CC0), from the ``face_recognition_models`` package; dlib from
``dlib-bin``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

EMBEDDING_DIM = 128  # one descriptor; an embedding concatenates one per padding
FORMAT = "doohable-face-branch-3"
# 1: one padding (0.25), before paddings were stored; 2: before the fine-tuned face network
FORMATS = ("doohable-face-branch-1", "doohable-face-branch-2", FORMAT)
# chip paddings (dlib's default is 0.25): each gives a descriptor of the same aligned face with
# more or less context around it (forehead, hair, jaw); together they carry more than any one
DEFAULT_PADDINGS = (0.25, 0.5, 0.8)
# the grids the face branch is chosen from (lowest CV RMSE of the blend)
GAMMAS = (0.25, 0.5, 1.0, 1.5)  # RBF width, per descriptor: divided by the number of paddings
ALPHAS = (0.01, 0.03, 0.1, 0.3)  # ridge penalty
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # blend weight of the face score
N_FEATURES = 6000  # random Fourier features of the RBF kernel (3,000: -0.0009 Pearson in the blend)
MIN_FACES = 20  # fewer training images with a face: no face branch is fitted
# the second regressor of a stacked branch: on the network's 256-d pooled features (before its
# last projection) of each padding's chip, concatenated and divided by POOLED_SCALE (their norm
# per chip is ~19 on SCUT faces), RBF widths on the concatenation
POOLED_SCALE = 20.0
POOLED_GAMMAS = (1.0, 2.0, 4.0)
POOLED_ALPHAS = (0.01, 0.03)
MIN_CALIBRATION = 100  # fewer: no calibration (two parameters fitted on noisy out-of-fold blends)

Choice = tuple[bool, float, float, float]  # mirror, gamma, alpha, weight


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

                from doohable.model.dlibnet import dlib_face_onnx
                from doohable.model.runtime import onnx_session

                d = _model_dir()
                net = dlib_face_onnx(d / "dlib_face_recognition_resnet_model_v1.dat").SerializeToString()
                self._m = (
                    dlib.get_frontal_face_detector(),
                    dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
                    onnx_session(net, self.threads),
                )
            return self._m

    def chips(self, crop: np.ndarray) -> np.ndarray | None:
        """One (S, S, 3) uint8 crop -> (len(paddings), 150, 150, 3) uint8: the largest face's
        aligned chip at each padding, or None when no face is detected."""
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {crop.dtype} {crop.shape}")
        img = np.ascontiguousarray(crop)
        detector, landmarks, _ = self._models()
        with self._lock:
            faces = detector(img, 1)
            if not faces:
                return None
            face = max(faces, key=lambda r: r.width() * r.height())
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

    def scores(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, S, S, 3) crops -> {"face", "net", "pooled"}: the regressor's, the fine-tuned
        network's and the pooled-feature regressor's scores (NaN where the crop has no face, and
        all NaN for a part the branch does not have)."""
        out = {k: np.full(len(batch), np.nan) for k in ("face", "net", "pooled")}
        for i, crop in enumerate(batch):
            plain = self.embedder.chips(crop)
            if plain is None:
                continue
            views = [plain]
            if self.mirror or self.net is not None:
                flipped = self.embedder.chips(np.ascontiguousarray(crop[:, ::-1]))
                if flipped is not None:
                    views.append(flipped)
            chips = np.concatenate(views)
            desc, pooled = self.embedder.describe(chips, pooled=True)
            desc, pooled = desc.reshape(len(views), -1), pooled.reshape(len(views), -1)
            # ``mirrored``: the mean of both views, the crop's alone where its mirror has no face
            out["face"][i] = self.regressor.predict((desc.mean(axis=0) if self.mirror else desc[0])[None])[0]
            if self.pooled is not None:
                out["pooled"][i] = self.pooled.predict(pooled.mean(axis=0)[None] / POOLED_SCALE)[0]
            if self.net is not None:
                x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32)
                out["net"][i] = float(np.mean(self._net().run(None, {"chips": x})[0]))
        return out

    def _net(self) -> Any:
        if self._session is None:
            from doohable.model.runtime import onnx_session

            assert self.net is not None
            self._session = onnx_session(self.net, self.threads)
        return self._session

    def blend(self, cnn: np.ndarray, batch: np.ndarray) -> np.ndarray:
        sc = self.scores(batch)
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


def mirrored(plain: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """The mirror-pass embedding: mean of plain and flipped where the flip found a face, else plain."""
    return np.where(np.isnan(flipped), plain, (plain + flipped) / 2)


def face_oof(emb: np.ndarray, y: np.ndarray, folds: np.ndarray, *, gamma: float, alpha: float) -> np.ndarray:
    """Out-of-fold face scores: for each fold, the regressor fitted on the other folds."""
    return face_oof_alphas(emb, y, folds, gamma=gamma, alphas=(alpha,))[0]


def face_oof_alphas(
    emb: np.ndarray, y: np.ndarray, folds: np.ndarray, *, gamma: float, alphas: Sequence[float]
) -> np.ndarray:
    """(len(alphas), N) out-of-fold face scores, one row per ridge penalty: the features and
    their Gram matrix are computed once per fold (scikit-learn's ``Ridge`` with one penalty per
    target, the target repeated), the same as ``FaceRegressor.fit`` for each penalty."""
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import Ridge

    emb = np.asarray(emb, np.float64)
    face = np.zeros((len(alphas), len(y)))
    for k in set(folds.tolist()):
        tr, te = folds != k, folds == k
        rff = RBFSampler(gamma=gamma, n_components=N_FEATURES, random_state=0).fit(emb[tr])
        targets = np.repeat(np.asarray(y, np.float64)[tr, None], len(alphas), axis=1)
        ridge = Ridge(alpha=np.asarray(alphas, np.float64)).fit(rff.transform(emb[tr]), targets)
        face[:, te] = ridge.predict(rff.transform(emb[te])).T
    return face


def choose_face_branch(
    embs: dict[bool, np.ndarray], y: np.ndarray, cnn_oof: np.ndarray, folds: np.ndarray
) -> Choice:
    """(mirror, gamma, alpha, weight) of lowest CV RMSE of the blend over ``folds``.

    ``embs``: {mirror: (N, dim) embeddings} (one or both), rows with a face only; ``cnn_oof``:
    the CNN's out-of-fold predictions on the same ``folds``. Ties keep the first in grid order.
    The returned gamma is the one used: ``GAMMAS`` divided by the number of concatenated
    descriptors (so the kernel's width per descriptor stays the same).
    """
    best: tuple[float, Choice] | None = None
    per = next(iter(embs.values())).shape[1] // EMBEDDING_DIM
    for m, g in itertools.product(sorted(embs), [g / per for g in GAMMAS]):
        faces = face_oof_alphas(embs[m], y, folds, gamma=g, alphas=ALPHAS)
        for (a, face), w in itertools.product(zip(ALPHAS, faces, strict=True), WEIGHTS):
            r = float(np.sqrt(np.mean((y - ((1 - w) * cnn_oof + w * face)) ** 2)))
            if best is None or r < best[0]:
                best = (r, (m, g, a, w))
    assert best is not None
    return best[1]


def face_rows(plain: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, dict[bool, np.ndarray]]:
    """(found, {False: plain, True: mirrored}): the face must be found in the crop itself;
    rows without one are zeros (they are excluded from fitting; the scorer gives them the CNN)."""
    found = ~np.isnan(plain).any(axis=1)
    return found, {False: np.nan_to_num(plain), True: np.nan_to_num(mirrored(plain, flipped))}


def require_faces(use: np.ndarray, folds: np.ndarray) -> None:
    """ValueError unless ``use`` (images with a face) has ``MIN_FACES`` images in >= 2 folds."""
    if use.sum() < MIN_FACES:
        raise ValueError(
            f"a face branch needs at least {MIN_FACES} training images with a face found; "
            f"dlib found one in {int(use.sum())} of {len(use)}"
        )
    if len(set(folds[use].tolist())) < 2:
        raise ValueError("a face branch needs training images with a face in at least 2 folds")


def fit_face_branch(
    plain: np.ndarray,
    flipped: np.ndarray,
    y: np.ndarray,
    cnn_oof: np.ndarray,
    folds: np.ndarray,
    *,
    metadata: dict[str, str],
    paddings: Sequence[float],
    mirror: bool | None = None,
    calibrate: bool = False,
) -> FaceBranch:
    """Choose (``choose_face_branch``, k-fold CV on ``folds``) and fit the face branch on every
    image with a face (and a finite ``cnn_oof``).

    ``plain``/``flipped``: ``FaceEmbedder(paddings).embed_pairs`` of the training images'
    prepared crops. ``mirror``: None lets the CV choose the mirror pass; True/False forces it
    (without it the branch costs half as much at scoring time). ``calibrate``: also fit the
    blend's linear calibration (:func:`fit_calibration`) on its out-of-fold blend over ``folds``,
    given ``MIN_CALIBRATION`` images with a face (else none: (0, 1)).
    The branch's metadata: ``mirror``, ``gamma``, ``alpha`` (the choice), ``features``, then
    ``metadata``. Raises ``ValueError`` with fewer than ``MIN_FACES`` usable images or fewer
    than 2 folds among them.
    """
    found, embs = face_rows(plain, flipped)
    use = found & np.isfinite(cnn_oof)
    require_faces(use, folds)
    options = [False, True] if mirror is None else [mirror]  # None: the CV chooses
    m, g, a, w = choose_face_branch({b: embs[b][use] for b in options}, y[use], cnn_oof[use], folds[use])
    choice = {"mirror": str(m), "gamma": str(g), "alpha": str(a), "paddings": ",".join(map(str, paddings))}
    reg = FaceRegressor.fit(embs[m][use], y[use], gamma=g, alpha=a)
    meta = {**choice, "features": f"{len(reg.coef)} random Fourier features"}
    meta.update(metadata)
    meta.update(choice)  # the choice's keys keep their place but are never overridden
    cal = (0.0, 1.0)
    if calibrate and use.sum() < MIN_CALIBRATION:
        meta["calibration"] = f"none (fewer than {MIN_CALIBRATION} images with a face)"
    elif calibrate:
        blend = blend_oof(plain, flipped, y, cnn_oof, folds, mirror=m, gamma=g, alpha=a, weight=w)
        cal = fit_calibration(y[use], blend[use])
        meta["calibration"] = f"{cal[0]:.4f} + {cal[1]:.4f} * blend"
    return FaceBranch(reg, w, meta, mirror=m, paddings=tuple(paddings), calibration=cal)


def fit_calibration(y: np.ndarray, blend: np.ndarray) -> tuple[float, float]:
    """(a, b) of least squares y ~ a + b * blend, from out-of-fold blends (never in-sample ones:
    those are already fitted to y and would give b ~ 1)."""
    a, b = fit_stack(y, blend)
    return a, b


def blend_oof(
    plain: np.ndarray,
    flipped: np.ndarray,
    y: np.ndarray,
    cnn_oof: np.ndarray,
    folds: np.ndarray,
    *,
    mirror: bool,
    gamma: float,
    alpha: float,
    weight: float,
    calibration: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Out-of-fold blend with fixed values (:func:`blend_scores`) where a face is found (the face
    regressor refitted per fold on the other folds' face images), the CNN elsewhere.

    With values chosen on these same folds the figures are optimistic (no nested CV)."""
    found, embs = face_rows(plain, flipped)
    use = found & np.isfinite(cnn_oof)
    out = np.asarray(cnn_oof, np.float64).copy()
    face = face_oof(embs[mirror][use], y[use], folds[use], gamma=gamma, alpha=alpha)
    out[use] = blend_scores(cnn_oof[use], face, weight, calibration)
    return out


def blend_scores(
    cnn: np.ndarray, face: np.ndarray, weight: float, calibration: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """The selfie score where a face is found: ``a + b * ((1 - w) * cnn + w * face)``."""
    a, b = calibration
    return a + b * ((1.0 - weight) * cnn + weight * face)


def fit_stack(y: np.ndarray, *scores: np.ndarray) -> tuple[float, ...]:
    """(s0, s1, ...) of least squares y ~ s0 + s1 * scores[0] + s2 * scores[1] + ..., from
    out-of-fold scores (as :func:`fit_calibration`, never in-sample ones)."""
    x = np.column_stack([np.ones(len(y)), *scores]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, np.asarray(y, np.float64), rcond=None)
    return tuple(float(v) for v in coef)


def stack_scores(stack: Sequence[float], *scores: np.ndarray) -> np.ndarray:
    """The selfie score where a face is found, with a fine-tuned face network:
    ``s0 + s1 * cnn + s2 * face + s3 * net [+ s4 * pooled]``."""
    if len(stack) != len(scores) + 1:
        raise ValueError(f"{len(stack)} coefficients for {len(scores)} scores")
    terms = [c * np.asarray(v, np.float64) for c, v in zip(stack[1:], scores, strict=True)]
    return np.asarray(stack[0] + np.sum(terms, axis=0), np.float64)


def choose_pooled(
    emb: np.ndarray, y: np.ndarray, folds: np.ndarray, others: Sequence[np.ndarray]
) -> tuple[float, float]:
    """(gamma, alpha) of the pooled-feature regressor (grids ``POOLED_GAMMAS``/``POOLED_ALPHAS``)
    of lowest CV RMSE of the stack over ``folds``: its out-of-fold scores stacked with
    ``others`` (out-of-fold scores on the same rows: CNN, regressor, network), the stack's
    coefficients refitted on the other folds for each fold."""
    best: tuple[float, float, float] | None = None
    for g in POOLED_GAMMAS:
        for a, pooled in zip(POOLED_ALPHAS, face_oof_alphas(emb, y, folds, gamma=g, alphas=POOLED_ALPHAS),
                             strict=True):
            pred = np.zeros(len(y))
            for k in set(folds.tolist()):
                tr, te = folds != k, folds == k
                st = fit_stack(y[tr], *(o[tr] for o in others), pooled[tr])
                pred[te] = stack_scores(st, *(o[te] for o in others), pooled[te])
            r = float(np.sqrt(np.mean((y - pred) ** 2)))
            if best is None or r < best[0]:
                best = (r, g, a)
    assert best is not None
    return best[1], best[2]


def blend_error_model(
    y: np.ndarray, cnn: np.ndarray, face: np.ndarray, cnn_rmses: Sequence[float] = ()
) -> dict[str, Any]:
    """The blend's error as the mix of two correlated errors, on the images with a face:
    MSE(w) = (1-w)^2 c^2 + w^2 f^2 + 2 w (1-w) rho c f, with c, f the root mean square errors of
    the CNN and of the face branch (out of fold) and rho the correlation of their errors (raw
    second moments, so biases count). For another CNN of RMSE c' (e.g. one whose out-of-fold
    predictions are gone) and the same rho and f: the weight w* that minimises it and the RMSE
    expected there. An estimate, not a measurement: it assumes rho and f do not change with the CNN
    (checked once: with the one-descriptor branch and a CPU-trained CNN it predicted 0.2801 for
    the bundled GPU pair at weight 0.3, measured 0.2807; docs/benchmarks.md).

    Returns {"cnn_rmse", "face_rmse", "rho", "for_cnn_rmse": {"c'": {"best_weight",
    "rmse_at_best", "rmse_at_weight": {w: rmse for w in WEIGHTS}, "best_grid_weight"}}},
    the CNN's own c first."""
    ec, ef = cnn - y, face - y
    c, f = float(np.sqrt(np.mean(ec**2))), float(np.sqrt(np.mean(ef**2)))
    rho = float(np.mean(ec * ef) / (c * f))

    def rmse(c2: float, w: float) -> float:
        return float(np.sqrt((1 - w) ** 2 * c2**2 + w**2 * f**2 + 2 * w * (1 - w) * rho * c2 * f))

    out: dict[str, Any] = {"cnn_rmse": c, "face_rmse": f, "rho": rho, "for_cnn_rmse": {}}
    for c2 in [c, *cnn_rmses]:
        w = min(1.0, max(0.0, (c2**2 - rho * c2 * f) / (c2**2 + f**2 - 2 * rho * c2 * f)))
        out["for_cnn_rmse"][f"{c2:.4f}"] = {
            "best_weight": w,
            "rmse_at_best": rmse(c2, w),
            "rmse_at_weight": {f"{v:.1f}": rmse(c2, v) for v in WEIGHTS},
            "best_grid_weight": min(WEIGHTS, key=lambda v: rmse(c2, v)),
        }
    return out
