"""MoCo's dictionary: a first-in first-out queue of L2-normalised keys, kept in buffers so it checkpoints."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.nn.distributed import gather_with_grad


class KeyQueue(nn.Module):
    """`length` unit-norm keys of dimension `dim`: the negatives of MoCo v1/v2 (He et al. 2020, sec. 3.2).

    Buffers: `keys` (L, D), starting as random unit vectors as in the paper, and `ptr`, the slot
    of the oldest key, which the next enqueue overwrites first. `enqueue(keys (B, D))` gathers the
    keys of every device (rank order, so all devices hold the same queue), normalises them and
    writes them over the oldest entries, wrapping around at the end.
    """

    def __init__(self, length: int, dim: int):
        super().__init__()
        if length < 1:
            raise SelfsupError(f"a key queue needs at least one slot, got queue_size={length}")
        self.register_buffer("keys", F.normalize(torch.randn(length, dim), dim=1))  # (L, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """keys: (B, D) from this device; the queue receives all devices' (W*B, D) keys."""
        keys = F.normalize(gather_with_grad(keys.detach()), dim=1)  # (WB, D); no gradient is wanted here
        n = keys.shape[0]
        if n > len(self):
            raise SelfsupError(f"the key queue holds {len(self)} keys but one step brings {n} (the global batch); "
                               f"pass --set queue_size={n} or more, or a smaller --batch-size")
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % len(self)  # oldest first, wrapping
        self.keys[slots] = keys.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + n) % len(self))
