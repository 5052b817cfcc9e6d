"""dlib's face-recognition ResNet as a torch module (fine-tuning); see doohable.model.dlibnet."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from doohable.model.dlibnet import MEAN_RGB, STAGES, _check, read_dat_params


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
