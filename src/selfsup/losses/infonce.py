"""InfoNCE with a momentum encoder's keys: MoCo v1/v2 (queue negatives) and MoCo v3 (in-batch keys)."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather_with_grad, rank


class InfoNCELoss(nn.Module):
    """L_q = −log exp(q·k₊/τ) / Σ_k exp(q·k/τ), the mean over the B queries (MoCo eq. 1).

    Inputs: q (B, D) queries, k (B, D) their positive keys (row i of q and of k are two views of
    image i), optionally negatives (K, D). q and k are L2-normalised here. The keys are constants:
    they are detached, so gradient flows only through q (in MoCo they come from the EMA encoder).

    - With `negatives` (MoCo v1/v2, the queue): logits [q·k₊, q·negativesᵀ]/τ of shape (B, 1+K),
      the positive at index 0. Rows of `negatives` must already be unit vectors (the queue stores them so).
    - Without (MoCo v3): every key of the global batch is a candidate. Keys are gathered from all
      devices (W*B, D) — no gradient is needed, they are detached — and the positive of local
      query i is key rank·B + i: logits q·kᵀ/τ of shape (B, W*B).
    """

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        q = F.normalize(q, dim=1)  # (B, D)
        k = F.normalize(k.detach(), dim=1)  # (B, D), stop-gradient
        if negatives is not None:
            l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
            l_neg = q @ negatives.detach().T  # (B, K)
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature  # (B, 1+K)
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        else:
            keys = gather_with_grad(k)  # (WB, D): the keys of every device, in rank order
            logits = q @ keys.T / self.temperature  # (B, WB)
            labels = rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, labels)
