"""Momentum ("EMA") encoders: a frozen copy of a network that trails it, as in MoCo, BYOL, SiT."""

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that receives no gradients (and so no optimiser updates)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """ξ ← m·ξ + (1 − m)·θ for every parameter; buffers (BN running statistics) are copied."""
    for xi, theta in zip(target.parameters(), online.parameters()):
        xi.lerp_(theta, 1.0 - m)
    for b_target, b_online in zip(target.buffers(), online.buffers()):
        b_target.copy_(b_online)


def cosine_momentum(base: float, step: int, max_steps: int) -> float:
    """BYOL's schedule: τ = 1 − (1 − τ_base)·(cos(π·k/K) + 1)/2, from `base` at step 0 to 1 at the end."""
    progress = min(step / max(max_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
