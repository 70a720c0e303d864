"""Optimisers with the self-supervised conventions: no weight decay (nor LARS adaptation) on
biases and norm layers, learning rate scaled with the batch, linear warm-up then cosine decay."""

import math
from collections.abc import Callable

import torch
from timm.optim import Lars
from torch import nn

from selfsup.errors import SelfsupError


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of linear/conv layers decay; biases and norm parameters (ndim <= 1) do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                     momentum: float, fused: bool = False) -> torch.optim.Optimizer:
    """lr is the already batch-scaled learning rate. timm's LARS skips the trust-ratio
    adaptation for groups without weight decay, as SimCLR's LARS does. fused: SGD and AdamW update
    all parameters in one kernel (LARS has no fused form)."""
    groups = parameter_groups(model, weight_decay)
    if name == "lars":
        return Lars(groups, lr=lr, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), fused=fused or None)
    raise SelfsupError(f"unknown optimizer '{name}'; use lars, sgd or adamw")


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LambdaLR factor: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 at `total`.

    A plain function on purpose: LambdaLR leaves functions out of its state_dict, so a resumed
    run rebuilds the schedule for its own (possibly extended) total instead of the saved one.
    """
    total = max(total, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor
