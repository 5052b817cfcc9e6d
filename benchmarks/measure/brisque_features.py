"""BRISQUE's 36 natural-scene-statistics features (Mittal, Moorthy & Bovik, IEEE TIP 21(12), 2012).

Written from the paper, following the authors' reference code (brisque_feature.m): MSCN
coefficients with a 7x7 Gaussian window (sigma 7/6), a generalised Gaussian fit of the
coefficients (shape, variance) and an asymmetric generalised Gaussian fit of the products of
neighbours in 4 orientations (shape, mean, left and right variance), at the full and half
scale: 2 x (2 + 4 x 4) = 36 features. The regressor (an RBF SVR) is trained by the benchmark.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import gamma

_ALPHAS = np.arange(0.2, 10.0, 0.001)
_GGD_RATIO = gamma(1 / _ALPHAS) * gamma(3 / _ALPHAS) / gamma(2 / _ALPHAS) ** 2
_AGGD_RATIO = gamma(2 / _ALPHAS) ** 2 / (gamma(1 / _ALPHAS) * gamma(3 / _ALPHAS))


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float grey image (0..255)."""
    # the reference code's window: 7x7 Gaussian, sigma 7/6 (truncate so the kernel is 7 wide)
    mu = gaussian_filter(gray, 7 / 6, mode="nearest", truncate=3 / (7 / 6))
    var = gaussian_filter(gray * gray, 7 / 6, mode="nearest", truncate=3 / (7 / 6)) - mu * mu
    return (gray - mu) / (np.sqrt(np.abs(var)) + 1.0)


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Shape and variance of a zero-mean generalised Gaussian (moment matching)."""
    sigma_sq = float(np.mean(x * x))
    e = float(np.mean(np.abs(x)))
    rho = sigma_sq / (e * e + 1e-12)
    return float(_ALPHAS[np.argmin(np.abs(rho - _GGD_RATIO))]), sigma_sq


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Shape, mean, left and right variance of an asymmetric generalised Gaussian."""
    left, right = x[x < 0], x[x > 0]
    lstd = np.sqrt(np.mean(left * left)) if left.size else 1e-6
    rstd = np.sqrt(np.mean(right * right)) if right.size else 1e-6
    g = lstd / rstd
    r_hat = float(np.mean(np.abs(x)) ** 2 / np.mean(x * x))
    rhat_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(_ALPHAS[np.argmin((_AGGD_RATIO - rhat_norm) ** 2)])
    const = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    mean = (rstd - lstd) * (gamma(2 / alpha) / gamma(1 / alpha)) * const
    return alpha, float(mean), float(lstd**2), float(rstd**2)


def _scale_features(gray: np.ndarray) -> list[float]:
    m = mscn(gray)
    feats = list(ggd_fit(m.ravel()))
    for shifted in (
        m[:, 1:] * m[:, :-1],  # horizontal
        m[1:, :] * m[:-1, :],  # vertical
        m[1:, 1:] * m[:-1, :-1],  # main diagonal
        m[1:, :-1] * m[:-1, 1:],  # secondary diagonal
    ):
        feats += list(aggd_fit(shifted.ravel()))
    return feats


def brisque_features(path: str) -> np.ndarray:
    """The 36 BRISQUE features of an image file (luminance, full and half scale)."""
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"), dtype=np.float64)
    half = np.asarray(
        Image.fromarray(gray).resize((gray.shape[1] // 2, gray.shape[0] // 2), Image.Resampling.BICUBIC),
        dtype=np.float64,
    )
    return np.asarray(_scale_features(gray) + _scale_features(half))
