"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, eq. 1-2)."""

import torch
from torch import nn

from selfsup.nn.distributed import all_reduce_with_grad, world_size


def batch_normalize(z: torch.Tensor, n: int, eps: float = 1e-5) -> torch.Tensor:
    """(B, D) -> (B, D): every dimension standardised with the mean and (biased) variance of the
    global batch of n rows, as BatchNorm1d(affine=False) in training mode on one device."""
    mean = all_reduce_with_grad(z.sum(dim=0)) / n  # (D,)
    var = all_reduce_with_grad(((z - mean) ** 2).sum(dim=0)) / n  # (D,)
    return (z - mean) / torch.sqrt(var + eps)


class BarlowTwinsLoss(nn.Module):
    """L = Σ_i (1 − c_ii)² + λ Σ_i Σ_{j≠i} c_ij², with c = BN(z1)ᵀ BN(z2) / N the (D, D)
    cross-correlation of the two views' embeddings over the global batch of N = B·W rows.

    Inputs z1, z2: (B, D) projections of two views of the same B images on this device. Every
    device gets the same loss (the global one); computed in float32. λ 0.0051 is the paper's.
    """

    def __init__(self, lambd: float = 0.0051, eps: float = 1e-5):
        super().__init__()
        self.lambd, self.eps = lambd, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        n = z1.shape[0] * world_size()
        dtype = torch.promote_types(z1.dtype, torch.float32)  # at least float32: D² sums of squares
        with torch.autocast(z1.device.type, enabled=False):  # also under bf16/fp16 autocast
            z1 = batch_normalize(z1.to(dtype), n, self.eps)  # (B, D)
            z2 = batch_normalize(z2.to(dtype), n, self.eps)
            c = all_reduce_with_grad(z1.T @ z2) / n  # (D, D) summed over devices
        on_diag = (1 - c.diagonal()).pow(2).sum()
        off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
        return on_diag + self.lambd * off_diag
