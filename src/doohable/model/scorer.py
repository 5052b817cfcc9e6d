"""The whole scorer as one torch module: uint8 pixels in, score out, preprocessing inside."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from doohable.model.backbones import Backbone, create_backbone
from doohable.model.heads import Head, create_head


class ScoringModel(nn.Module):
    """Backbone + head. ``forward`` takes float NCHW pixels on 0..255 and returns the raw head
    output; :meth:`score` returns scores on ``scale``; :meth:`forward_uint8_nhwc` is the exported
    graph (uint8 NHWC in, float32 scores out), with an optional horizontal-flip average."""

    def __init__(self, backbone: Backbone, head: Head, *, tta_flip: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta_flip = tta_flip

    @property
    def input_size(self) -> int:
        return self.backbone.preprocess.input_size

    @property
    def scale(self) -> tuple[float, float]:
        return self.head.scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW 0..255 -> pooled features."""
        return self.backbone.forward_features(self.backbone.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW 0..255 -> scores (N,) on ``scale`` (flip-averaged when ``tta_flip``)."""
        s = self.head.to_score(self(x))
        if self.tta_flip:
            s = 0.5 * (s + self.head.to_score(self(torch.flip(x, dims=[3]))))
        return s

    def forward_uint8_nhwc(self, image: torch.Tensor) -> torch.Tensor:
        """The exported graph: uint8 (N, S, S, 3) RGB -> float32 scores (N,)."""
        x = image.permute(0, 3, 1, 2).float()
        return self.score(x).float()

    def config(self) -> dict[str, Any]:
        """What is needed to rebuild the module (saved with checkpoints)."""
        extra = {"label_std": self.head.label_std} if hasattr(self.head, "label_std") else {}
        return {
            "backbone": self.backbone.name,
            "head": self.head.kind,
            "input_size": self.input_size,
            "scale": list(self.scale),
            "tta_flip": self.tta_flip,
            **extra,
        }


def build_model(
    backbone: str,
    head: str = "regression",
    *,
    scale: tuple[float, float] = (1.0, 5.0),
    input_size: int = 224,
    pretrained: bool = True,
    dropout: float = 0.2,
    tta_flip: bool = False,
    **head_kw: float,
) -> ScoringModel:
    """Backbone by name + head by name -> :class:`ScoringModel`."""
    bb = create_backbone(backbone, pretrained=pretrained, input_size=input_size)
    hd = create_head(head, bb.num_features, scale, dropout=dropout, **head_kw)
    return ScoringModel(bb, hd, tta_flip=tta_flip)


def model_from_checkpoint(ckpt: dict[str, Any]) -> ScoringModel:
    """Rebuild a :class:`ScoringModel` from ``{"config": ..., "state_dict": ...}``."""
    cfg = dict(ckpt["config"])
    extra = {"label_std": cfg.pop("label_std")} if "label_std" in cfg else {}
    model = build_model(
        cfg["backbone"],
        cfg["head"],
        scale=tuple(cfg["scale"]),
        input_size=cfg["input_size"],
        pretrained=False,
        tta_flip=cfg.get("tta_flip", False),
        **extra,
    )
    model.load_state_dict(ckpt["state_dict"])
    return model
