"""Noise-contrastive estimation of the non-parametric softmax (Wu et al. 2018, InstDisc, eq. 2-6)."""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import world_size


def nce_logit(similarity: torch.Tensor, temperature: float, Z: torch.Tensor | float, n: int, K: int) -> torch.Tensor:
    """log P(i|v) − log(K·P_n) with P(i|v) = exp(s/τ)/Z and P_n = 1/n, so that
    h(i, v) = P(i|v) / (P(i|v) + K·P_n) = sigmoid(this)."""
    return similarity / temperature - torch.log(torch.as_tensor(Z, dtype=similarity.dtype)) - math.log(K / n)


@torch.no_grad()
def estimate_Z(negatives: torch.Tensor, temperature: float, n: int) -> torch.Tensor:
    """Monte Carlo estimate of the partition Z = Σ_j exp(v_jᵀf/τ) ≈ n · mean exp(s/τ) over uniformly
    drawn bank rows; negatives: (B, K) similarities. Averaged over devices so all agree."""
    Z = negatives.div(temperature).exp().mean() * n
    if world_size() > 1:
        dist.all_reduce(Z)
        Z /= world_size()
    return Z


class NCELoss(nn.Module):
    """Mean over the batch of −log h(i, v_i) − Σ_k log(1 − h(j_k, v_i)), h as in `nce_logit`.

    Inputs: positive (B,) similarities vᵀf of each feature with its own bank row; negatives (B, K)
    with K rows drawn uniformly from the n-row bank; Z the (fixed) partition estimate; n the bank
    size. Nothing crosses devices: each device's loss is the mean over its own images.
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, positive: torch.Tensor, negatives: torch.Tensor, Z: torch.Tensor | float, n: int) -> torch.Tensor:
        K = negatives.shape[1]
        s_pos = nce_logit(positive, self.temperature, Z, n, K)  # (B,)
        s_neg = nce_logit(negatives, self.temperature, Z, n, K)  # (B, K)
        # log h = log sigmoid(s), log(1 − h) = log sigmoid(−s): stable for P(i|v) far from K·P_n
        return -(F.logsigmoid(s_pos) + F.logsigmoid(-s_neg).sum(dim=1)).mean()
