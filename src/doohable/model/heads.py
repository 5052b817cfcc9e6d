"""Heads on pooled backbone features, found by name.

Each head maps features (N, C) to its raw output, knows its loss, and turns its output
into a score on the model's scale ``(lo, hi)`` (1-5 for the selfie model):

- ``regression``: one value, trained with MSE on the normalised score ``(s - lo) / (hi - lo)``.
- ``nima``: a 10-bin softmax distribution over scores, EMD loss (r = 2); score = its mean.
- ``pairwise``: one utility, trained from vote pairs (Bradley-Terry); score = ``lo + (hi-lo) sigmoid(u)``.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from doohable.model import losses


class Head(nn.Module):
    """Base class of the heads."""

    kind: str = ""

    def __init__(self, in_features: int, scale: tuple[float, float], dropout: float = 0.2) -> None:
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))
        self.dropout = nn.Dropout(dropout)

    def to_score(self, out: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Raw head output -> score (N,) on ``scale``."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Loss of the raw output against a per-image target (see :meth:`target_from_score`)."""
        raise NotImplementedError

    def target_from_score(self, score: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Training target for images labelled with a mean score on ``scale``."""
        raise NotImplementedError

    def normalise(self, score: torch.Tensor) -> torch.Tensor:
        """Score on ``scale`` -> [0, 1]."""
        lo, hi = self.scale
        return (score - lo) / (hi - lo)


class _ScalarHead(Head):
    """One linear output per image (N,): shared by the regression and pairwise heads."""

    def __init__(self, in_features: int, scale: tuple[float, float], dropout: float = 0.2) -> None:
        super().__init__(in_features, scale, dropout)
        self.fc = nn.Linear(in_features, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feats)).squeeze(1)


class RegressionHead(_ScalarHead):
    """Linear regression of the normalised score (the report's head)."""

    kind = "regression"

    def to_score(self, out: torch.Tensor) -> torch.Tensor:
        # clamped: a score outside the scale is never closer to a true one
        lo, hi = self.scale
        return (lo + (hi - lo) * out).clamp(lo, hi)

    def target_from_score(self, score: torch.Tensor) -> torch.Tensor:
        return self.normalise(score)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return losses.mse_loss(out, target)


class NimaHead(Head):
    """NIMA: softmax over ``bins`` equally spaced score values on ``scale``; EMD loss."""

    kind = "nima"

    def __init__(
        self,
        in_features: int,
        scale: tuple[float, float],
        dropout: float = 0.2,
        bins: int = 10,
        label_std: float = 0.5,
    ) -> None:
        super().__init__(in_features, scale, dropout)
        self.fc = nn.Linear(in_features, bins)
        self.register_buffer("centres", torch.linspace(self.scale[0], self.scale[1], bins))
        self.label_std = label_std
        self.centres: torch.Tensor

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(self.dropout(feats)), dim=1)

    def to_score(self, out: torch.Tensor) -> torch.Tensor:
        return out @ self.centres

    def score_std(self, out: torch.Tensor) -> torch.Tensor:
        """Standard deviation of the predicted score distribution (N,)."""
        mean = self.to_score(out)
        return (out * (self.centres[None, :] - mean[:, None]) ** 2).sum(1).sqrt()

    def target_from_score(self, score: torch.Tensor) -> torch.Tensor:
        # only a mean is known: a discretised normal of std ``label_std`` around it
        logits = -0.5 * ((self.centres[None, :] - score[:, None]) / self.label_std) ** 2
        return torch.softmax(logits, dim=1)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return losses.emd_loss(out, target, r=2.0)


class PairwiseHead(_ScalarHead):
    """A utility per image, trained from (winner, loser) pairs with a Bradley-Terry loss."""

    kind = "pairwise"

    def to_score(self, out: torch.Tensor) -> torch.Tensor:
        lo, hi = self.scale
        return lo + (hi - lo) * torch.sigmoid(out)

    def target_from_score(self, score: torch.Tensor) -> torch.Tensor:
        return score

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # with per-image scores, every ordered pair in the batch is a vote
        diff = target[:, None] - target[None, :]
        w, lo_ = torch.nonzero(diff > 0, as_tuple=True)
        return losses.bradley_terry_loss(out[w], out[lo_])

    def pair_loss(self, out_winner: torch.Tensor, out_loser: torch.Tensor) -> torch.Tensor:
        """Loss on raw vote pairs."""
        return losses.bradley_terry_loss(out_winner, out_loser)


HEADS: dict[str, type[Head]] = {h.kind: h for h in (RegressionHead, NimaHead, PairwiseHead)}


def create_head(name: str, in_features: int, scale: tuple[float, float], **kw: float) -> Head:
    """Build head ``name`` (``regression``, ``nima``, ``pairwise``)."""
    if name not in HEADS:
        close = difflib.get_close_matches(name, HEADS, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown head {name!r}; known: {', '.join(sorted(HEADS))}.{hint}")
    return HEADS[name](in_features, scale, **kw)  # type: ignore[arg-type]
