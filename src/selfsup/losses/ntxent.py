"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1)."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather_with_grad, rank


class NTXentLoss(nn.Module):
    """Mean over all 2B anchors of -log softmax of the positive among the other 2B-1 views.

    Inputs z1, z2: (B, D) projections of two views of the same B images (row i of z1 and
    row i of z2 are a positive pair). On several devices the candidates are gathered from
    all of them, with gradient, so the negatives are the 2BW-2 other views of the global batch.
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        B = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D) anchors on this device
        candidates = gather_with_grad(z)  # (2BW, D): [z1_0, z2_0, z1_1, z2_1, ...]
        logits = z @ candidates.T / self.temperature  # (2B, 2BW) cosine similarity / tau
        offset = rank() * 2 * B  # where this device's anchors sit among the candidates
        anchors = torch.arange(2 * B, device=z.device)
        logits[anchors, offset + anchors] = float("-inf")  # sim(i, i) is excluded (1[k != i])
        positives = offset + (anchors + B) % (2 * B)  # view 1 row i <-> view 2 row i
        return F.cross_entropy(logits, positives)
