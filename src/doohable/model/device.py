"""The training device: which one, seeding, the crops and flips done on it, bf16 autocast, and
batched prediction of uint8 images (shared by full fine-tuning, head training and the face code)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from doohable.model.scorer import ScoringModel


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)



# ---------------------------------------------------------------- crops (on the device)


def crop_batch(
    x: torch.Tensor, size: int, *, train: bool, gen: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (B, R, R, 3) -> float NCHW (B, 3, S, S) on 0..255.

    ``train``: a random S crop and a random horizontal flip per image; else the centre crop
    (the serving policy, ``runtime.prepare_image``).
    """
    b, r = x.shape[0], x.shape[1]
    if not train:
        o = (r - size) // 2
        return x[:, o : o + size, o : o + size].permute(0, 3, 1, 2).float()
    dev = x.device
    oy = torch.randint(0, r - size + 1, (b,), generator=gen, device="cpu").to(dev)
    ox = torch.randint(0, r - size + 1, (b,), generator=gen, device="cpu").to(dev)
    flip = (torch.rand(b, generator=gen, device="cpu") < 0.5).to(dev)
    base = torch.arange(size, device=dev)
    rows = oy[:, None] + base[None, :]
    cols = torch.where(flip[:, None], ox[:, None] + size - 1 - base[None, :], ox[:, None] + base[None, :])
    bi = torch.arange(b, device=dev)[:, None, None]
    return x[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).float()


@torch.no_grad()
def predict(model: ScoringModel, pixels: torch.Tensor, *, batch: int = 128) -> np.ndarray:
    """Scores (N,) of uint8 (N, R, R, 3) images (centre crop; flip-averaged if the model says so)."""
    model.eval()
    out = []
    dev = next(model.parameters()).device
    for i in range(0, len(pixels), batch):
        xb = crop_batch(pixels[i : i + batch].to(dev, non_blocking=True), model.input_size, train=False)
        with autocast(dev):
            out.append(model.score(xb).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(dev: torch.device, cpu_bf16: bool = False) -> Any:
    """bf16 autocast: always on CUDA; on CPU only with ``cpu_bf16`` and native bf16 kernels
    (elsewhere it is emulated and slower than fp32). bf16 keeps fp32 range: no loss scaling."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16 and cpu_bf16_supported())
