"""The ``photo`` quality model: multi-level pooled features of a frozen backbone + a small head.

Technical quality (blur, noise, exposure, compression) is judged on pixels near the photo's
own scale, so the input is a crop at (near) native resolution (``short-side-R-center-crop-S``,
see :func:`doohable.model.runtime.prepare_short_side`), never a squash to 224 px. The backbone
stays frozen; the mean and standard deviation of several intermediate blocks' activations
(MLSP, Hosu et al. 2019) are standardised and fed to a head:

- ``regression``: linear, MSE on the normalised score, closed-form ridge;
- ``nima``: linear + softmax over 10 bins, EMD loss against each photo's opinion distribution
  (a normal with the photo's MOS and rater standard deviation, discretised).
- ``kernel``: RBF kernel ridge regression of the normalised score on the training photos'
  standardised features, closed form (:class:`KernelHead`).

Scores are on 1..5: ``1 + 4 * MOS / 100``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from doohable import datasets
from doohable.model.backbones import Backbone, EfficientNetLite0, MobileNetV2, create_backbone
from doohable.model.data import LabelError, label_rows
from doohable.model.runtime import prepare_short_side

SCALE = (1.0, 5.0)
BINS = 10
# backbone blocks whose outputs are pooled (the end of every stage, and the last conv)
TAPS: dict[str, tuple[int, ...]] = {
    "mobilenet_v2": (3, 6, 10, 13, 16, 17, 18),  # indices into MobileNetV2.features
    "efficientnet_lite0": (2, 4, 7, 10, 14, 15, -1),  # block indices; -1: the head conv
}


def mos_to_score(mos: np.ndarray | float) -> np.ndarray:
    """MOS on 0..100 -> score on 1..5."""
    return 1.0 + 4.0 * np.asarray(mos, dtype=np.float64) / 100.0


def score_to_mos(score: np.ndarray | float) -> np.ndarray:
    """Score on 1..5 -> MOS on 0..100."""
    return (np.asarray(score, dtype=np.float64) - 1.0) * 25.0


# ---------------------------------------------------------------- labels and images


@dataclass(frozen=True)
class PhotoLabels:
    """LIVE-Challenge-style labels: ``image,mos,std,fold`` (MOS 0..100)."""

    paths: list[str]
    mos: np.ndarray
    std: np.ndarray
    folds: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Sequence[int] | np.ndarray) -> PhotoLabels:
        """The photos at positions ``idx``."""
        ix = np.asarray(idx, dtype=int)
        return PhotoLabels([self.paths[i] for i in ix], self.mos[ix], self.std[ix], self.folds[ix])


def is_photo_labels(root: str | Path) -> bool:
    """Whether ``root/labels.csv`` has the ``mos`` column of a quality dataset."""
    path = Path(root) / "labels.csv"
    if not path.is_file():
        return False
    with path.open(newline="") as fh:
        return "mos" in next(csv.reader(fh), [])


def load_live(root: str | Path | None = None) -> PhotoLabels:
    """Read ``labels.csv`` (``image,mos,std,fold``) under ``root``; a bad line raises
    :class:`LabelError` naming the file and the line. Default: the shared live-challenge set."""
    root = Path(root) if root is not None else datasets.live_challenge()
    path = root / "labels.csv"
    paths, mos, std, folds = [], [], [], []
    for lineno, row in label_rows(path, {"image", "mos", "std", "fold"}):
        try:
            m, s, f = float(row["mos"]), float(row["std"]), int(row["fold"])
        except (TypeError, ValueError) as exc:
            raise LabelError(f"{path}:{lineno}: bad mos, std or fold in {row!r} ({exc})") from exc
        if not (0.0 <= m <= 100.0 and s >= 0.0) or not row["image"]:
            raise LabelError(f"{path}:{lineno}: mos {m} outside 0..100, std {s} < 0 or empty image name")
        paths.append(str(root / "images" / row["image"]))
        mos.append(m)
        std.append(s)
        folds.append(f)
    return PhotoLabels(paths, np.asarray(mos), np.asarray(std), np.asarray(folds, int))


@dataclass
class PhotoPixels:
    """Prepared crops uint8 (N, S, S, 3), the positions kept, and the files that failed."""

    pixels: np.ndarray
    kept: np.ndarray
    errors: list[dict[str, str]] = field(default_factory=list)


def load_crops(
    paths: Sequence[str], short_side: int, size: int, *, on_progress: Callable[[int], None] | None = None
) -> PhotoPixels:
    """Decode every file and apply the short-side policy; corrupt or non-image files are listed
    in ``errors`` and skipped, never fatal."""
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    errors: list[dict[str, str]] = []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = prepare_short_side(im, short_side, size)
            ok[i] = True
        except Exception as exc:  # PIL raises many types for a bad file; report, never stop
            errors.append({"source": str(p), "error": f"{type(exc).__name__}: {exc}"})
        if on_progress:
            on_progress(1)
    kept = np.flatnonzero(ok)
    return PhotoPixels(out[kept], kept, errors)


# ---------------------------------------------------------------- network


def _mean_std(x: torch.Tensor) -> list[torch.Tensor]:
    mean = x.mean(dim=(2, 3))
    var = (x * x).mean(dim=(2, 3)) - mean * mean
    return [mean, (var.clamp_min(0.0) + 1e-6).sqrt()]


class MultiLevel(nn.Module):
    """Frozen backbone -> concatenated mean and std pooling of the :data:`TAPS` blocks."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = TAPS[backbone.name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW on 0..255 -> features (N, D)."""
        x = self.backbone.normalize(x)
        pooled: list[torch.Tensor] = []
        if isinstance(self.backbone, MobileNetV2):
            for i, layer in enumerate(self.backbone.features):
                x = layer(x)
                if i in self.taps:
                    pooled += _mean_std(x)
        elif isinstance(self.backbone, EfficientNetLite0):
            net = self.backbone.net
            x = net._swish(net._bn0(net._conv_stem(x)))
            for i, block in enumerate(net._blocks):
                x = block(x, drop_connect_rate=None)
                if i in self.taps:
                    pooled += _mean_std(x)
            pooled += _mean_std(net._swish(net._bn1(net._conv_head(x))))
        else:  # pragma: no cover - TAPS names only these two
            raise ValueError(f"no multi-level taps for {self.backbone.name}")
        return torch.cat(pooled, dim=1)


    @property
    def name(self) -> str:
        """The backbone's name (the exported model's ``backbone`` metadata)."""
        return self.backbone.name

    def describe(self) -> str:
        """The pooled blocks, for the exported model's ``features`` metadata."""
        return "multi-level mean+std pooling, blocks " + json.dumps(list(self.taps))


class Stacked(nn.Module):
    """Several frozen multi-level extractors on the same input, their features concatenated
    (in the order given): the backbones see the same crop and complement each other."""

    def __init__(self, parts: Sequence[MultiLevel]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.extractors: list[MultiLevel] = list(parts)  # the same modules, typed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW on 0..255 -> features (N, sum of the parts' D)."""
        return torch.cat([part(x) for part in self.extractors], dim=1)

    @property
    def name(self) -> str:
        return "+".join(part.name for part in self.extractors)

    def describe(self) -> str:
        return "; ".join(f"{part.name}: {part.describe()}" for part in self.extractors)


Features = MultiLevel | Stacked


def multilevel(backbone: str, *, pretrained: bool = True) -> Features:
    """The frozen multi-level feature extractor of ``backbone`` in eval mode; ``a+b`` stacks the
    extractors of backbones ``a`` and ``b`` (features concatenated)."""
    names = backbone.split("+")
    parts = [MultiLevel(create_backbone(n, pretrained=pretrained)).eval() for n in names]
    return parts[0] if len(parts) == 1 else Stacked(parts).eval()


class _Uint8(nn.Module):
    """uint8 NHWC -> the wrapped module on float NCHW (0..255): the exported graphs' input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image.permute(0, 3, 1, 2).float())


def _onnx_runner(net: Features, size: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The feature extractor as an ONNX Runtime session (about 3x less CPU than eager torch)."""
    import tempfile

    from doohable.model.runtime import onnx_session

    with tempfile.TemporaryDirectory(prefix="doohable-photo-") as tmp, torch.no_grad():
        path = Path(tmp) / "features.onnx"
        torch.onnx.export(
            _Uint8(net.cpu().eval()), (torch.zeros(1, size, size, 3, dtype=torch.uint8),), str(path),
            dynamo=False, opset_version=17, input_names=["image"], output_names=["features"],
            dynamic_axes={"image": {0: "N"}, "features": {0: "N"}},
        )  # fmt: skip
        session = onnx_session(path.read_bytes(), threads)
    return lambda x: session.run(["features"], {"image": np.ascontiguousarray(x)})[0]


def extract(
    net: Features,
    pixels: np.ndarray,
    *,
    batch: int = 16,
    device: torch.device | None = None,
    threads: int = 2,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of uint8 (N, S, S, 3) crops: through ONNX Runtime (``threads``) on
    the CPU, through torch on another ``device`` (a GPU)."""
    dev = device or torch.device("cpu")
    if dev.type == "cpu":
        run = _onnx_runner(net, pixels.shape[1], threads)
    else:
        gpu = _Uint8(net.to(dev).eval())

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return gpu(torch.from_numpy(x).to(dev)).cpu().numpy()

    feats = []
    for i in range(0, len(pixels), batch):
        feats.append(run(pixels[i : i + batch]))
        if on_batch:
            on_batch(len(pixels[i : i + batch]))
    return np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32)


class PhotoScorer(nn.Module):
    """The exported graph: uint8 (N, S, S, 3) -> multi-level features -> standardise -> head ->
    score (N,) on 1..5."""

    def __init__(self, features: Features, head: Head, input_size: int) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.input_size = input_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3) RGB -> scores (N,) on 1..5."""
        return self.head.score(self.features(image.permute(0, 3, 1, 2).float()))


# ---------------------------------------------------------------- heads


def opinion_distribution(mos: np.ndarray, std: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each photo's opinion distribution over ``bins`` equal bins of 1..5: a normal with the
    photo's mean and rater std (on the 1..5 scale), integrated over each bin (tails in the end bins)."""
    from scipy.stats import norm

    mean = mos_to_score(mos)[:, None]
    sd = np.maximum(4.0 * np.asarray(std, np.float64) / 100.0, 1e-3)[:, None]
    edges = np.linspace(SCALE[0], SCALE[1], bins + 1)[1:-1]
    cdf = norm.cdf((edges[None, :] - mean) / sd)
    cdf = np.concatenate([np.zeros((len(mean), 1)), cdf, np.ones((len(mean), 1))], axis=1)
    return np.diff(cdf, axis=1)


class PhotoHead(nn.Module):
    """Standardisation (training features' mean/std) + a linear layer; ``kind`` is ``regression``
    (one value, the normalised score) or ``nima`` (softmax over :data:`BINS`, score = its mean)."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        if kind not in ("regression", "nima"):
            raise ValueError(f"unknown photo head {kind!r}; known: nima, regression")
        self.kind = kind
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.register_buffer("centres", torch.linspace(SCALE[0], SCALE[1], BINS))
        self.fc = nn.Linear(dim, 1 if kind == "regression" else BINS)
        self.mu: torch.Tensor
        self.sd: torch.Tensor
        self.centres: torch.Tensor

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.fc((feats - self.mu) / self.sd)
        return out.squeeze(1) if self.kind == "regression" else torch.softmax(out, dim=1)

    def score(self, feats: torch.Tensor) -> torch.Tensor:
        out = self(feats)
        if self.kind == "regression":
            return (SCALE[0] + (SCALE[1] - SCALE[0]) * out).clamp(*SCALE)
        return out @ self.centres


class KernelHead(nn.Module):
    """Standardisation + RBF kernel ridge regression on the training photos (the anchors):
    normalised score = b + sum_i c_i exp(-g |z - z_i|^2 / D), D the feature count."""

    kind = "kernel"

    def __init__(self, mu: np.ndarray, sd: np.ndarray, anchors: np.ndarray, coef: np.ndarray, bias: float,
                 gamma: float) -> None:  # fmt: skip
        super().__init__()
        z = torch.from_numpy(np.asarray(anchors, np.float32))
        for name, value in (("mu", mu), ("sd", sd), ("coef", coef)):
            self.register_buffer(name, torch.from_numpy(np.asarray(value, np.float32)))
        self.register_buffer("anchors", z)
        self.register_buffer("sq", (z * z).sum(1))
        self.bias, self.gamma = float(bias), float(gamma) / z.shape[1]
        self.mu: torch.Tensor
        self.sd: torch.Tensor
        self.coef: torch.Tensor
        self.anchors: torch.Tensor
        self.sq: torch.Tensor

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = (feats - self.mu) / self.sd
        d2 = ((z * z).sum(1, keepdim=True) + self.sq[None, :] - 2.0 * z @ self.anchors.T).clamp_min(0.0)
        return torch.exp(-self.gamma * d2) @ self.coef + self.bias

    def score(self, feats: torch.Tensor) -> torch.Tensor:
        return (SCALE[0] + (SCALE[1] - SCALE[0]) * self(feats)).clamp(*SCALE)


def fit_kernel_heads(
    feats: np.ndarray, mos: np.ndarray, params: Sequence[Sequence[float]]
) -> list[KernelHead]:
    """One :class:`KernelHead` per ``(g, alpha)`` in ``params`` (kernel width, ridge penalty on the
    kernel matrix), closed form through one eigendecomposition of the kernel matrix per width."""
    x = np.asarray(feats, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0) / z.shape[1]
    y = (mos_to_score(mos) - SCALE[0]) / (SCALE[1] - SCALE[0])
    eig: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    heads = []
    for g, alpha in params:
        if g not in eig:
            eig[g] = np.linalg.eigh(np.exp(-g * d2))
        lam, u = eig[g]
        coef = u @ ((u.T @ (y - y.mean())) / (lam + alpha))
        heads.append(KernelHead(mu, sd, z, coef, float(y.mean()), g))
    return heads


Head = PhotoHead | KernelHead


def fit_heads(
    feats: np.ndarray, mos: np.ndarray, std: np.ndarray, kind: str, l2s: Sequence[Any], *, steps: int = 100
) -> list[Head]:
    """One head per penalty in ``l2s``, fitted on training features (``kernel``: one per
    ``(g, alpha)``, see :func:`fit_kernel_heads`).

    ``regression``: ridge, ``l2`` on the sum of squares, closed form. ``nima``: EMD + ``l2 * |W|^2``,
    L-BFGS on the whole batch. Both are solved in the span of the training photos (one
    eigendecomposition of their Gram matrix for every penalty): exact for an L2-penalised linear
    model, and cheap while photos are fewer than features.
    """
    if kind == "kernel":
        return list(fit_kernel_heads(feats, mos, l2s))
    x = np.asarray(feats, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = ((x - mu) / sd).astype(np.float32)
    lam, u = np.linalg.eigh((z @ z.T).astype(np.float64))  # the Gram matrix: photos x photos
    keep = lam > lam.max() * 1e-10
    lam, u = lam[keep], u[:, keep]
    heads: list[Head] = []
    for l2 in l2s:
        head = PhotoHead(x.shape[1], kind)
        head.mu.copy_(torch.from_numpy(mu).float())
        head.sd.copy_(torch.from_numpy(sd).float())
        if kind == "regression":  # w = Z^T (Z Z^T + l2 I)^-1 (y - mean y)
            y = (mos_to_score(mos) - SCALE[0]) / (SCALE[1] - SCALE[0])
            coef, bias = (u @ ((u.T @ (y - y.mean())) / (lam + l2)))[None, :], np.array([y.mean()])
        else:  # in the photos' span Z = U S V^T: W = W_red V^T = (W_red S^-1 U^T) Z
            w_red, bias = _fit_emd(u * np.sqrt(lam), opinion_distribution(mos, std), l2, steps)
            coef = (w_red / np.sqrt(lam)) @ u.T
        with torch.no_grad():
            head.fc.weight.copy_(torch.from_numpy(coef.astype(np.float32) @ z))
            head.fc.bias.copy_(torch.from_numpy(bias).float())
        heads.append(head)
    return heads


def _fit_emd(z: np.ndarray, target: np.ndarray, l2: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear softmax layer on ``z`` minimising EMD (r = 2) + ``l2 * |W|^2``: (weight, bias)."""
    zt, tt = torch.from_numpy(z).float(), torch.from_numpy(target).float()
    fc = nn.Linear(z.shape[1], target.shape[1])
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)
    opt = torch.optim.LBFGS(fc.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        cdf = torch.cumsum(torch.softmax(fc(zt), dim=1), 1) - torch.cumsum(tt, 1)
        loss = (cdf.pow(2).mean(1) + 1e-12).sqrt().mean() + l2 * fc.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()


def fit_head(
    feats: np.ndarray, mos: np.ndarray, std: np.ndarray, kind: str, l2: Any, *, steps: int = 100
) -> Head:
    """:func:`fit_heads` for one penalty."""
    return fit_heads(feats, mos, std, kind, [l2], steps=steps)[0]


def predict_head(head: Head, feats: np.ndarray) -> np.ndarray:
    """Scores (N,) on 1..5 of features (N, D)."""
    with torch.no_grad():
        return head.score(torch.from_numpy(np.asarray(feats, np.float32))).numpy().astype(np.float64)
