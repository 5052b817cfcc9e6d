"""dlib's face-recognition ResNet as a torch module (fine-tuning); see doohable.model.dlibnet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from doohable.model.face.dlibnet import MEAN_RGB, STAGES, _check, read_dat_params


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        # dlib's default padding: none for strided convolutions, k // 2 otherwise
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if stride > 1 else 1)
        self.scale1 = nn.Parameter(torch.ones(cout))
        self.shift1 = nn.Parameter(torch.zeros(cout))
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.scale2 = nn.Parameter(torch.ones(cout))
        self.shift2 = nn.Parameter(torch.zeros(cout))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x) * self.scale1[:, None, None] + self.shift1[:, None, None])
        y = self.conv2(y) * self.scale2[:, None, None] + self.shift2[:, None, None]
        short = F.avg_pool2d(x, 2, 2) if self.stride > 1 else x
        return F.relu(_add_over(y, short))


def _add_over(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger size of each axis, missing elements taken as 0."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2], 0, c - a.shape[1]))
    return a + F.pad(b, (0, w - b.shape[3], 0, h - b.shape[2], 0, c - b.shape[1]))


class DlibFaceNet(nn.Module):
    """150 x 150 uint8-range RGB chips (N, 3, 150, 150) float -> ``features`` (N, 256) or the
    128-d descriptor (``forward``), the numbers dlib's ``compute_face_descriptor`` gives."""

    mean: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.scale = nn.Parameter(torch.ones(32))
        self.shift = nn.Parameter(torch.zeros(32))
        blocks = []
        cin = 32
        for s, (c, n) in enumerate(STAGES):
            for b in range(n):
                blocks.append(_Block(cin, c, 2 if s > 0 and b == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def features(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean) / 256.0
        x = F.relu(self.conv(x) * self.scale[:, None, None] + self.shift[:, None, None])
        x = F.max_pool2d(x, 3, 2)
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(chips))

    @classmethod
    def from_dat(cls, path: str | Path) -> DlibFaceNet:
        """The network with the weights of a dlib ``.dat`` file (``read_dat_params``)."""
        params = read_dat_params(path)
        net = cls()
        groups: list[list[torch.Tensor]] = [[net.conv.weight, _bias(net.conv)], [net.scale, net.shift]]
        for blk in net.blocks:
            assert isinstance(blk, _Block)
            groups += [
                [blk.conv1.weight, _bias(blk.conv1)],
                [blk.scale1, blk.shift1],
                [blk.conv2.weight, _bias(blk.conv2)],
                [blk.scale2, blk.shift2],
            ]
        groups.append([net.fc.weight])
        if len(params) != len(groups):
            raise ValueError(f"{path}: {len(params)} parameter tensors, the architecture has {len(groups)}")
        with torch.no_grad():
            for flat, group in zip(params, groups, strict=True):
                _check(path, flat, sum(t.numel() for t in group))
                at = 0
                for t in group:
                    part = torch.from_numpy(flat[at : at + t.numel()])
                    # dlib's fully connected layer stores (inputs, outputs): x @ W
                    t.copy_(part.view(t.shape[1], t.shape[0]).T if t is net.fc.weight else part.view_as(t))
                    at += t.numel()
        return net


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None
    return conv.bias


class FaceScorer(nn.Module):
    """The face network with a linear head on its pooled features: (M, 3, 150, 150) chips in
    0-255 -> (M,) scores. The head's output is ``0.6 * h + 3`` so it starts near the scale's
    middle with unit-sized weights. ``bf16``: the network (not the head) under bfloat16
    autocast, for training on CPUs with AMX or on GPUs."""

    def __init__(self, net: DlibFaceNet, *, bf16: bool = False) -> None:
        super().__init__()
        self.net = net
        self.head = nn.Linear(256, 1)
        self.bf16 = bf16

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        with torch.autocast(chips.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            f = self.net.features(chips)
        return self.head(f.float()).squeeze(1) * 0.6 + 3.0


def finetune_face_scorer(
    dat: str | Path,
    chips: np.ndarray,
    found: np.ndarray,
    target: np.ndarray,
    train: np.ndarray,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    head_lr: float = 1e-4,
    batch: int = 32,
    seed: int = 0,
    bf16: bool | None = None,
    device: str = "auto",
    progress: Callable[[int, int, float], None] | None = None,
) -> FaceScorer:
    """Fine-tune dlib's face network and a linear head to predict ``target`` from face chips.

    ``chips``: uint8 (N, 2, P, 150, 150, 3), each image's chips at P paddings, of the crop and of
    its mirror image; ``found``: bool (N, 2), where each has a face; ``train``: the indices to
    train on (their crop must have a face). Each step draws one chip per image: a random
    padding, the mirror image half of the time (where it has a face) and a shift of up to 6 px.

    The head starts as ridge regression on the frozen network's pooled features. dlib folds its
    batch norms into per-channel scales (~10) over tiny convolution weights (~1e-3), so one
    learning rate for all would wreck the small tensors (Adam moves every weight by about the
    rate): each tensor's rate is ``lr`` times its root mean square, i.e. ~0.1% of its size per
    step. One-cycle schedule, MSE loss, float32 head. ``device``: ``auto`` is CUDA when there is
    one; ``bf16`` (None: on CUDA, or on a CPU with native bfloat16) runs the network under
    bfloat16 autocast. ``progress(epoch, epochs, train_rmse)`` after each epoch. Returns the
    model on the CPU, in eval mode.
    """
    from doohable.model.train import cpu_bf16_supported, pick_device

    dev = pick_device(device)
    if bf16 is None:
        bf16 = dev.type == "cuda" or cpu_bf16_supported()

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    train = np.asarray(train)
    batch = max(1, min(batch, len(train)))  # a small training set still takes steps
    if not found[train, 0].all():
        raise ValueError("every training image's crop must have a face")
    model = FaceScorer(DlibFaceNet.from_dat(dat), bf16=bf16).to(dev)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    t = torch.as_tensor(np.asarray(target, np.float32), device=dev)
    _start_head(model, chips, found, train, t, dev)
    opt, sched = _optimizer(model, lr, head_lr, steps=epochs * (len(train) // batch))
    for epoch in range(epochs):
        rmse = _train_epoch(model, opt, sched, chips, found, train, t, batch, rng, dev)
        if progress:
            progress(epoch + 1, epochs, rmse)
    return model.cpu().eval()


def _start_head(
    model: FaceScorer,
    chips: np.ndarray,
    found: np.ndarray,
    train: np.ndarray,
    t: torch.Tensor,
    dev: torch.device,
) -> None:
    """The head's start: ridge on the frozen network's features of every training chip."""
    from sklearn.linear_model import Ridge

    model.eval()
    with torch.no_grad():
        feats = np.concatenate([
            model.net.features(_to_tensor(chips[train[a:a + 64]].reshape(-1, 150, 150, 3), dev)).cpu().numpy()
            for a in range(0, len(train), 64)
        ])
    views = chips.shape[1] * chips.shape[2]
    ok = np.repeat(found[train], chips.shape[2], axis=1).reshape(-1)
    ridge = Ridge(alpha=1.0).fit(feats[ok], np.repeat(t.cpu().numpy()[train], views)[ok])
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(ridge.coef_ / 0.6).float()[None])
        model.head.bias.fill_((float(ridge.intercept_) - 3.0) / 0.6)


def _optimizer(
    model: FaceScorer, lr: float, head_lr: float, *, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW with each network tensor's rate ``lr`` times its root mean square, the head's
    ``head_lr``, under a one-cycle schedule of ``steps`` steps."""
    rates = [lr * float(p.detach().pow(2).mean().sqrt()) for p in model.net.parameters()]
    params = list(model.net.parameters())
    groups: list[dict[str, Any]] = [{"params": [p], "lr": r} for p, r in zip(params, rates, strict=True)]
    groups.append({"params": list(model.head.parameters()), "lr": head_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[*rates, head_lr], total_steps=max(1, steps), pct_start=0.15
    )
    return opt, sched


def _train_epoch(
    model: FaceScorer,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.OneCycleLR,
    chips: np.ndarray,
    found: np.ndarray,
    train: np.ndarray,
    t: torch.Tensor,
    batch: int,
    rng: np.random.Generator,
    dev: torch.device,
) -> float:
    """One pass over ``train`` in shuffled batches (a last partial batch is left out); the
    training RMSE."""
    model.train()
    order = rng.permutation(train)
    total = 0.0
    for a in range(0, len(order) - batch + 1, batch):
        idx = np.sort(order[a:a + batch])
        views = _to_tensor(_draw_views(chips, found, idx, rng), dev)
        loss = F.mse_loss(model(views), t[torch.from_numpy(idx).to(dev)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return float((total / max(1, len(order) // batch * batch)) ** 0.5)


def _draw_views(
    chips: np.ndarray, found: np.ndarray, idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One chip per image: a random padding, the mirror image half of the time (where it has a
    face), shifted by up to 6 px."""
    views = []
    for i in idx:
        m = int(rng.integers(2)) if found[i, 1] else 0
        c = chips[i, m, int(rng.integers(chips.shape[2]))]
        views.append(np.roll(c, tuple(rng.integers(-6, 7, 2)), (0, 1)))
    return np.stack(views)


def face_scores(model: FaceScorer, chips: np.ndarray, found: np.ndarray, *, batch: int = 50) -> np.ndarray:
    """(N,) mean score over each image's chips (every padding, the mirror image's where it has a
    face); NaN where the crop has none. As the runtime scores (``doohable.model.face``)."""
    out = np.full(len(chips), np.nan)
    idx = np.flatnonzero(found[:, 0])
    with torch.no_grad():
        for a in range(0, len(idx), batch):
            ii = idx[a:a + batch]
            p = model(_to_tensor(chips[ii].reshape(-1, 150, 150, 3))).numpy().reshape(len(ii), 2, -1)
            w = np.broadcast_to(found[ii][:, :, None], p.shape).astype(np.float64)
            out[ii] = (p * w).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
    return out


def _to_tensor(chips: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(chips)).to(device).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last)


def face_scorer_onnx(model: FaceScorer, *, half: bool = True) -> bytes:
    """The scorer as ONNX bytes (opset 17): input ``chips`` float (M, 3, 150, 150) in 0-255,
    output ``score`` (M,). ``half``: weights stored as float16 (``export.fp16_weights``: 11 MB
    instead of 22; the graph still computes in float32)."""
    import io

    import onnx

    from doohable.model.export import OPSET, fp16_weights

    bf16, model.bf16 = model.bf16, False
    buf = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(
                model.cpu().eval(),
                (torch.zeros(1, 3, 150, 150),),
                buf,  # type: ignore[arg-type]
                dynamo=False,
                opset_version=OPSET,
                input_names=["chips"],
                output_names=["score"],
                dynamic_axes={"chips": {0: "M"}, "score": {0: "M"}},
            )
    finally:
        model.bf16 = bf16
    proto = onnx.load_from_string(buf.getvalue())
    return (fp16_weights(proto) if half else proto).SerializeToString()
