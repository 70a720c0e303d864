"""BEiT's masked image modelling loss (Bao et al., ICLR 2022, eq. 1), as DiT uses it (Li et al., ACM MM 2022, sec. 3):
the cross-entropy of each masked patch's visual-token id, averaged over the masked patches of the batch."""

import torch
import torch.nn.functional as F
from torch import nn


def masked_token_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-(1/|M|) Σ_{i∈M} log p(z_i | x^M) (BEiT eq. 1, the mean over the masked patches M of the whole batch).

    logits: (B, N, K) scores over the K visual tokens of every patch, or (M, K) those of the masked patches only
    (already gathered in the order of `mask`'s True entries, row-major); codes: (B, N) int64 token ids z in [0, K);
    mask: (B, N) bool, True where hidden. Returns a scalar (0 with gradient when nothing is masked)."""
    targets = codes[mask]  # (M,) z_i of the masked patches
    if logits.dim() == 3:
        logits = logits[mask]  # (M, K)
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


class MaskedTokenLoss(nn.Module):
    """Module form of `masked_token_loss`: forward(logits (B, N, K) or (M, K), codes (B, N), mask (B, N) bool)."""

    def forward(self, logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_token_loss(logits, codes, mask)
