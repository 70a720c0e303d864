"""Cross-device helpers that keep gradients (losses use them to see every device's samples)."""

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

# torch 2.14 marks the autograd all_gather and all_reduce deprecated in favour of a private module;
# they are still the public, documented way to communicate with gradient, and what torch 2.4-2.13 offer.
warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_(gather|reduce) is deprecated", FutureWarning)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each of W devices -> (W*B, ...) in rank order, on every device.

    Gradients flow back to the device that produced each slice (the autograd all_gather
    reduce-scatters them), unlike `torch.distributed.all_gather`, which cuts the graph.
    """
    if world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over all devices, on every device, with gradient.

    The backward pass sums the devices' gradients too. `torch.distributed.all_reduce` would cut
    the graph there: each device then back-propagates only its own term of the sum, so after
    DDP averages the devices' gradients they come out W times too small.
    """
    if world_size() == 1:
        return x
    return dist_fn.all_reduce(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each of W devices -> (W*B, ...) in rank order, without gradient (ids, labels)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
