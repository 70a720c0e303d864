"""Reconstruction losses of masked image modelling, on patches (B, N, P) with a mask (B, N), 1 = hidden."""

import torch


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's per-patch normalised target: each patch minus its mean, over sqrt(its variance + eps);
    the variance is the unbiased one (torch's default), as in the authors' description. (B, N, P)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAE: mean squared error per patch, averaged over the hidden patches only."""
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM: mean absolute error over the pixels of the hidden patches (every patch has P values,
    so this is the mean over hidden patches of each patch's mean error)."""
    per_patch = (pred - target).abs().mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)
