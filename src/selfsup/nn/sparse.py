"""SparK's sparse convolution, emulated on an unchanged convnet (Tian et al., "Designing BERT for Convolutional
Networks: Sparse and Hierarchical Masked Modeling", ICLR 2023, sec. 3.1-3.2).

A mask of visible cells lives on the network's final grid. Inside `sparse_forward(net, masks)` every convolution,
pooling and norm layer's output is multiplied by that mask brought to the layer's resolution, so masked cells stay
empty at every scale, and every BatchNorm2d is swapped for a wrapper whose training statistics are those of the
visible positions only. On leaving, the network is exactly as it was (its modules, hooks and state dict).

Resolutions: the grid at stride 2^n is brought to a finer map of side m by repeating each cell 2^k times, the
smallest power of two that covers m, and cutting the overhang (a 4 x 4 grid -> 7 x 7 repeats by 2 and keeps 7 of 8).
This is how stride-2 convolutions with 'same' padding nest (side m -> ceil(m / 2)).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from timm.layers import LayerNorm2d
from torch import nn

# Layers whose output is (B, C, H, W) and must be re-masked; nn.LayerNorm / nn.Linear on a 4-D (B, H, W, C) tensor
# (ConvNeXt's channels-last blocks) are re-masked too, with the mask laid out channels-last.
CHANNELS_FIRST = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, LayerNorm2d)
CHANNELS_LAST = (nn.LayerNorm, nn.Linear)
# Norm layers whose statistics would mix masked and visible positions, which this emulation cannot make sparse.
UNSUPPORTED_NORMS = (nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def mask_at(visible: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """visible (B, 1, h, w) on the final grid -> (B, 1, H, W) at a finer side: each cell repeated by the smallest
    power of two that covers (H, W), the overhang cut."""
    for dim, side in ((2, size[0]), (3, size[1])):
        factor = 1
        while visible.shape[dim] * factor < side:
            factor *= 2
        visible = visible.repeat_interleave(factor, dim=dim).narrow(dim, 0, side)
    return visible


class SparseMask:
    """The visible cells (B, 1, h, w), 1 = visible, and their copies at each resolution asked for (cached)."""

    def __init__(self, visible: torch.Tensor):
        self.visible, self._at = visible, {}

    def at(self, size: tuple[int, int]) -> torch.Tensor:
        size = tuple(size)
        if size not in self._at:
            self._at[size] = mask_at(self.visible, size)
        return self._at[size]


def masked_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """SparK's sparse BN: x (B, C, H, W), zero at masked positions (every layer's output is, inside
    `sparse_forward`), visible (B, 1, H, W) -> (B, C, H, W), zero at masked positions.

    In training the mean and the (biased) variance are those of the visible positions only, and the running
    statistics move towards them (unbiased variance, bn.momentum, as nn.BatchNorm2d); in eval mode the running
    statistics normalise, as in the plain layer. bn's own parameters and buffers are used, never copied."""
    shape = (1, -1, 1, 1)
    if not bn.training and bn.track_running_stats:
        y = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return y * visible
    dtype, x = x.dtype, x.to(torch.promote_types(x.dtype, torch.float32))  # float32 statistics under autocast
    n = visible.sum()  # visible positions over (B, H, W)
    mean = x.sum((0, 2, 3)) / n  # (C,): the masked positions add 0
    var = ((x * x).sum((0, 2, 3)) / n - mean * mean).clamp(min=0)  # (C,), biased, as BN normalises
    if bn.track_running_stats:
        _update_running_stats(bn, mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
    scale = torch.rsqrt(var + bn.eps)  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale if bn.bias is None else bn.bias - mean * scale  # (C,)
    y = torch.addcmul(shift.view(shape), x, scale.view(shape)) * visible  # one pass, then the shift cut where masked
    return y.to(dtype)


@torch.no_grad()
def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, unbiased_var: torch.Tensor):
    bn.num_batches_tracked.add_(1)
    rate = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum  # None: cumulative average
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), rate)
    bn.running_var.lerp_(unbiased_var.to(bn.running_var.dtype), rate)


class SparseBatchNorm2d(nn.Module):
    """Stands in for a BatchNorm2d inside `sparse_forward`: `masked_batch_norm` with the layer's own parameters and
    buffers; a timm BatchNormAct2d's dropout and activation follow, re-masked."""

    def __init__(self, bn: nn.BatchNorm2d, masks: SparseMask):
        super().__init__()
        self.bn, self.masks = bn, masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        visible = self.masks.at(x.shape[-2:])
        y = masked_batch_norm(self.bn, x, visible)
        if hasattr(self.bn, "act"):  # timm's BatchNormAct2d
            y = self.bn.act(self.bn.drop(y)) * visible
        return y


def check_sparse_support(net: nn.Module) -> str | None:
    """Why `net` cannot be run sparsely (a layer mixing positions that the emulation cannot mask), or None."""
    for name, module in net.named_modules():
        if isinstance(module, UNSUPPORTED_NORMS):
            return f"its {name} ({type(module).__name__}) mixes masked and visible positions"
        if isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention"):
            return f"its {name} ({type(module).__name__}) is attention, which mixes every position"
    return None


def _remask_first(module: nn.Module, inputs: tuple, out: torch.Tensor, masks: SparseMask) -> torch.Tensor:
    return out * masks.at(out.shape[-2:]) if out.ndim == 4 else out


def _remask_last(module: nn.Module, inputs: tuple, out: torch.Tensor, masks: SparseMask) -> torch.Tensor:
    return out * masks.at(out.shape[1:3]).permute(0, 2, 3, 1) if out.ndim == 4 else out


@contextmanager
def sparse_forward(net: nn.Module, masks: SparseMask) -> Iterator[nn.Module]:
    """Within the block `net` runs sparsely on `masks` (see the module's docstring); the input must already be
    masked. BatchNorm2d children are swapped for SparseBatchNorm2d and swapped back on leaving; forward hooks
    re-mask the other layers' outputs and are removed on leaving."""
    swapped, handles = [], []
    try:
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    parent._modules[name] = SparseBatchNorm2d(child, masks)
                    swapped.append((parent, name, child))
        for module in net.modules():
            if isinstance(module, CHANNELS_FIRST):
                handles.append(module.register_forward_hook(lambda m, i, o: _remask_first(m, i, o, masks)))
            elif isinstance(module, CHANNELS_LAST):
                handles.append(module.register_forward_hook(lambda m, i, o: _remask_last(m, i, o, masks)))
        yield net
    finally:
        for handle in handles:
            handle.remove()
        for parent, name, child in swapped:
            parent._modules[name] = child
