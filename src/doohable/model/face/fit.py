"""Fitting the face branch (training only; scikit-learn): the mirror pass, the RBF width, the
ridge penalty and the blend weight are chosen together (:func:`choose_face_branch`) by the lowest
k-fold CV RMSE of the blend, given the CNN's out-of-fold predictions on the same folds; then the
regressor is fitted on every image with a face (:func:`fit_face_branch`).
``benchmarks/bench_face_branch.py`` (the bundled file, with nested CV around the choice) and
``doohable train --face-branch`` both use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from doohable.model.face.branch import N_FEATURES, FaceBranch, FaceRegressor, blend_scores, stack_scores
from doohable.model.face.embed import EMBEDDING_DIM, mirrored

# the grids the face branch is chosen from (lowest CV RMSE of the blend)
GAMMAS = (0.25, 0.5, 1.0, 1.5)  # RBF width, per descriptor: divided by the number of paddings
ALPHAS = (0.01, 0.03, 0.1, 0.3)  # ridge penalty
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # blend weight of the face score
MIN_FACES = 20  # fewer training images with a face: no face branch is fitted
POOLED_GAMMAS = (1.0, 2.0, 4.0)
POOLED_ALPHAS = (0.01, 0.03)
MIN_CALIBRATION = 100  # fewer: no calibration (two parameters fitted on noisy out-of-fold blends)

Choice = tuple[bool, float, float, float]  # mirror, gamma, alpha, weight


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


def fit_stack(y: np.ndarray, *scores: np.ndarray) -> tuple[float, ...]:
    """(s0, s1, ...) of least squares y ~ s0 + s1 * scores[0] + s2 * scores[1] + ..., from
    out-of-fold scores (as :func:`fit_calibration`, never in-sample ones)."""
    x = np.column_stack([np.ones(len(y)), *scores]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, np.asarray(y, np.float64), rcond=None)
    return tuple(float(v) for v in coef)


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
