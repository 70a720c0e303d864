"""Batch normalisation over the global batch on any device (SyncBN for CPU processes too).

SimCLR (sec. 2.3) aggregates BN mean and variance over all devices: with per-device statistics a
contrastive model can tell its device's samples apart by them, and W devices of B images are not
the same model as one device of W*B. torch's SyncBatchNorm does this on GPUs only; this module
does it wherever `torch.distributed` runs (gloo on CPUs included), with the statistics all-reduced
with gradient so that the backward pass is that of one BN over the whole batch.
"""

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.nn.distributed import all_reduce_with_grad, world_size


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm{1,2,3}d whose training statistics are those of the batch on all devices.

    Built from an existing BN layer, sharing its parameters and buffers (so state_dict keys and the
    optimiser's parameters stay the same); `local()` gives the plain layer back. In eval mode, or in
    one process, it is exactly the layer it was built from.
    """

    def __init__(self, bn: _BatchNorm):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.local_class = type(bn)
        self.weight, self.bias = bn.weight, bn.bias
        self.running_mean, self.running_var, self.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least a 2D input (B, C, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcasts a (C,) vector over (B, C, ...)
        x, dtype = x.to(torch.promote_types(x.dtype, torch.float32)), x.dtype  # float32 statistics under autocast
        # One all-reduce per layer (each is a round trip between processes): the count and the sums of
        # d = x - shift and d², shift the running mean, the same on every device (DDP broadcasts buffers)
        # and near the batch mean, so that E[d²] - E[d]² does not cancel catastrophically.
        shift = self.running_mean.detach().view(shape) if self.track_running_stats else x.new_zeros(shape)
        d = x - shift
        count = x.new_full((1,), x.numel() / x.shape[1])
        sums = all_reduce_with_grad(torch.cat([count, d.sum(dims), (d * d).sum(dims)]))  # (1 + 2C,)
        n, c = sums[0], x.shape[1]
        mean_d = sums[1:1 + c] / n  # (C,)
        var = (sums[1 + c:] / n - mean_d**2).clamp(min=0)  # (C,), biased
        mean = shift.view(-1) + mean_d
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y
        return y.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        # momentum None means a cumulative average, as in torch's BatchNorm
        m = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, m)
        self.running_var.lerp_(unbiased_var, m)

    def local(self) -> _BatchNorm:
        """The plain BatchNorm layer with this one's parameters and buffers."""
        bn = self.local_class(self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats)
        bn.weight, bn.bias = self.weight, self.bias
        bn.running_mean, bn.running_var, bn.num_batches_tracked = self.running_mean, self.running_var, self.num_batches_tracked
        return bn.train(self.training)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm layer (torch's SyncBatchNorm excepted) made a GlobalBatchNorm, in place."""
    return _replace(module, lambda m: GlobalBatchNorm(m).train(m.training)
                    if isinstance(m, _BatchNorm) and not isinstance(m, (GlobalBatchNorm, nn.SyncBatchNorm)) else None)


def revert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `convert_global_batchnorm`, in place."""
    return _replace(module, lambda m: m.local() if isinstance(m, GlobalBatchNorm) else None)


def _replace(module: nn.Module, swap) -> nn.Module:
    """`module` with each submodule m for which swap(m) is not None replaced by swap(m)."""
    new = swap(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace(child, swap))
    return module
