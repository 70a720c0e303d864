"""Regression of one view's prediction onto the other view's stop-gradient target, by cosine:
BYOL's 2 − 2cos (Grill et al. 2020, eq. 2) and SimSiam's negative cosine (Chen & He 2021, eq. 1-2).

Both are per-sample means, so under DDP nothing needs gathering: the ranks' average is the
global batch's loss. The target arguments are detached inside; pass them as they are.
"""

import torch
import torch.nn.functional as F
from torch import nn


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = −cos(p, sg(z)), averaged over the batch. p, z: (B, D)."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def normalized_mse(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖q̄ − sg(z̄)‖² with x̄ = x / ‖x‖, which equals 2 − 2cos(q, z); averaged over the batch. q, z: (B, D)."""
    return (2 - 2 * F.cosine_similarity(q, z.detach(), dim=1)).mean()


class SimSiamLoss(nn.Module):
    """L = ½ D(p1, z2) + ½ D(p2, z1): each view's predictor output p (B, D) regresses the other
    view's projection z (B, D) under stop-gradient. Lies in [−1, 1]; −1 when aligned."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


class BYOLLoss(nn.Module):
    """L + L̃ = ‖q̄1 − z̄'2‖² + ‖q̄2 − z̄'1‖²: the online predictions q (B, D) of each view regress the
    target projections z' (B, D) of the other view, under stop-gradient; the paper sums the two
    symmetrised terms. Lies in [0, 8]."""

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return normalized_mse(q1, z2) + normalized_mse(q2, z1)
