"""Training losses as pure functions on tensors (no state)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; the report's regression loss on normalised scores ``(s - 1) / 4``."""
    return F.mse_loss(pred.float(), target.float())


def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth mover's distance between discrete distributions (NIMA, Talebi & Milanfar 2018).

    Parameters
    ----------
    pred, target : (N, K) tensors of probabilities over K ordered bins (rows sum to 1).
    r : norm of the CDF difference; NIMA uses r = 2.

    Returns
    -------
    Scalar: mean over the batch of ``(mean_k |CDF_p - CDF_q|^r)^(1/r)``.
    """
    cdf_diff = torch.cumsum(pred.float(), dim=1) - torch.cumsum(target.float(), dim=1)
    return cdf_diff.abs().pow(r).mean(dim=1).pow(1.0 / r).mean()


def bradley_terry_loss(u_winner: torch.Tensor, u_loser: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the votes under Bradley-Terry: ``-log sigmoid(u_w - u_l)``."""
    return F.softplus(-(u_winner.float() - u_loser.float())).mean()


def margin_ranking_loss(u_winner: torch.Tensor, u_loser: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Hinge loss ``max(0, margin - (u_w - u_l))``: the winner must beat the loser by ``margin``."""
    return F.relu(margin - (u_winner.float() - u_loser.float())).mean()
