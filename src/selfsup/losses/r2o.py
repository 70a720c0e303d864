"""R2O's region-level BYOL loss (Gokul et al., "Refine and Represent: Region-to-Object Representation Learning",
2022): BYOL's normalised regression between the online prediction of a region in one view and the target projection
of the same region in the other, averaged over the regions present in both views."""

import torch
import torch.nn.functional as F
from torch import nn


class RegionBYOLLoss(nn.Module):
    """Σ_{n,k valid} (‖q̄1_nk − z̄2_nk‖² + ‖q̄2_nk − z̄1_nk‖²) / #valid, in [0, 8].

    q1, q2: (B, K, D) online predictions of the K regions in views 1 and 2; z1, z2: (B, K, D) target projections
    (no gradient); valid: (B, K) bool, regions present in both views. 0 when no region is valid.
    """

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        def regress(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # (B, K): ‖q̄ − z̄‖² = 2 − 2 cos(q, z)
            return (F.normalize(q, dim=-1) - F.normalize(z, dim=-1)).pow(2).sum(-1)

        per_region = (regress(q1, z2) + regress(q2, z1)) * valid  # (B, K)
        return per_region.sum() / valid.sum().clamp_min(1)
