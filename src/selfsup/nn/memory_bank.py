"""A memory bank: one L2-normalised feature per training image, refreshed with a running average
(Wu et al. 2018, InstDisc, section 3.2)."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import world_size


def gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each of W devices -> (W*B, ...) in rank order, without gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class MemoryBank(nn.Module):
    """`bank`: (n, dim) unit rows, a buffer (checkpointed, not trained), started at random unit vectors.

    Row i holds image i's feature from the last time it was seen; `update` writes
    v_i ← normalize(m·v_i + (1 − m)·f_i) for a batch (m 0.5 in the paper), with the indices and
    features of every device, so all devices keep the same bank.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1))

    def __len__(self) -> int:
        return self.bank.shape[0]

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) indices -> (..., dim) their rows, a copy (later updates do not change it)."""
        return self.bank[indices]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor, momentum: float = 0.5) -> None:
        """indices (B,), features (B, dim) of this device's batch; every device must call it."""
        indices, features = gather(indices), gather(features.detach().to(self.bank.dtype))  # (WB,), (WB, dim)
        v = F.normalize(momentum * self.bank[indices] + (1 - momentum) * features, dim=1)
        self.bank.index_copy_(0, indices, v)
