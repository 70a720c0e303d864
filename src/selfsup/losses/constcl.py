"""ConST-CL's losses (Yuan et al., CVPR 2022): the local region InfoNCE and the weighted sum with the global one."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather_with_grad, rank

from .ntxent import NTXentLoss


class RegionInfoNCELoss(nn.Module):
    """L_local = mean over the N predicted regions of −log exp(ẑ_n·h'_n/τ) / Σ_m exp(ẑ_n·h'_m/τ), the paper's local
    objective.

    Inputs: z (N, D) the instance reconstructor's predictions of view 2's region features, h (N, D) view 2's region
    features themselves (row n of each is region n: N = B clips x K boxes, flattened); both L2-normalised here
    (cosine similarity). The candidates m are every region of the global batch: the other regions of the same clip
    and those of the other clips are the negatives. Gradient flows into both z and h; on several devices h is
    gathered with gradient.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z, dim=1)  # (N, D)
        candidates = gather_with_grad(F.normalize(h, dim=1))  # (WN, D)
        logits = z @ candidates.T / self.temperature  # (N, WN)
        positives = rank() * z.shape[0] + torch.arange(z.shape[0], device=z.device)
        return F.cross_entropy(logits, positives)


class ConSTCLLoss(nn.Module):
    """L = w_global · L_global + w_local · L_local (the paper's total objective; the authors' weights 1 and 0.001).

    L_global: NT-Xent (SimCLR's InfoNCE with in-batch negatives) of the two clips' projections g1, g2 (B, D_g),
    τ_global 0.1. L_local: RegionInfoNCELoss (τ_local 0.2) in both directions, view 1 -> 2 and view 2 -> 1,
    averaged: z12 (N, D) predicts h2 (N, D), z21 predicts h1.
    Returns {"loss", "global", "local"}, scalars.
    """

    def __init__(self, global_temperature: float = 0.1, local_temperature: float = 0.2,
                 global_weight: float = 1.0, local_weight: float = 0.001):
        super().__init__()
        self.global_loss = NTXentLoss(global_temperature)
        self.local_loss = RegionInfoNCELoss(local_temperature)
        self.global_weight, self.local_weight = global_weight, local_weight

    def forward(self, g1: torch.Tensor, g2: torch.Tensor, z12: torch.Tensor, h2: torch.Tensor,
                z21: torch.Tensor, h1: torch.Tensor) -> dict[str, torch.Tensor]:
        l_global = self.global_loss(g1, g2)
        l_local = (self.local_loss(z12, h2) + self.local_loss(z21, h1)) / 2
        return {"loss": self.global_weight * l_global + self.local_weight * l_local,
                "global": l_global.detach(), "local": l_local.detach()}
