"""GLCNet's losses (Li et al., "Global and Local Contrastive Self-Supervised Learning for Semantic Segmentation of HR
Remote Sensing Images", IEEE TGRS 2022): global style contrast on the channel statistics of the ASPP features, local
matching contrast on matched patches of the decoder output, both NT-Xent with τ 0.5, L = 0.5·L_g + 0.5·L_l."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.ntxent import NTXentLoss

STYLE_EPS = 1e-5  # inside the square root of the variance: σ stays differentiable on a constant channel


def style_vector(a: torch.Tensor, eps: float = STYLE_EPS) -> torch.Tensor:
    """The global "style" of a feature map, (B, D, h, w) -> (B, 2D): per channel c the mean μ_c over the h·w
    locations and the standard deviation σ_c = sqrt(Var_c + eps) (the biased variance, AdaIN's style statistics),
    concatenated [μ_1..μ_D, σ_1..σ_D]. GLCNet's global style contrast compares these rather than pooled features."""
    mu = a.mean(dim=(2, 3))  # (B, D)
    var = a.var(dim=(2, 3), unbiased=False)  # (B, D)
    return torch.cat([mu, (var + eps).sqrt()], dim=1)  # (B, 2D)


def patch_vectors(y: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average of a feature map inside each patch: y (B, D, h, w), masks (B, P, S, S) bool at the input's pixels ->
    (B, P, D). A cell's weight is its share of the patch (the mask average-pooled to h x w, so S need not be a
    multiple of h): v_p = Σ_ij w_pij y_ij / Σ_ij w_pij. Raises ValueError for an empty patch (no pixel to pool)."""
    w = F.adaptive_avg_pool2d(masks.to(y.dtype), y.shape[-2:])  # (B, P, h, w): each cell's share of each patch
    total = w.sum(dim=(2, 3))  # (B, P)
    if bool((total <= 0).any()):
        raise ValueError("a patch mask selects no pixel; every patch needs at least one pixel in its view")
    return torch.einsum("bphw,bdhw->bpd", w, y) / total[..., None]  # (B, P, D)


class GLCNetLoss(nn.Module):
    """L = w_g·L_g + w_l·L_l (GLCNet's total loss, both weights 0.5 in the paper), returned as (L, L_g, L_l).

    L_g: NT-Xent (τ) between g1 and g2, (B, D) projections of the two views' style vectors: image i's other view is
    the positive, the other 2B-2 views of the (global) batch the negatives.
    L_l: NT-Xent (τ) between l1 and l2, (B, P, D) projections of the P matched patches of each image in view 1 and in
    view 2: patch (i, p) of view 1 and patch (i, p) of view 2 cover the same pixels of the source image and are the
    positive pair; every other patch of both views, of the same image or another, is a negative (2BP-2 of them).
    Both are gathered across devices with gradient (NTXentLoss).
    """

    def __init__(self, temperature: float = 0.5, global_weight: float = 0.5, local_weight: float = 0.5):
        super().__init__()
        self.global_weight, self.local_weight = global_weight, local_weight
        self.ntxent = NTXentLoss(temperature)

    def forward(self, g1: torch.Tensor, g2: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss_g = self.ntxent(g1, g2)  # L_g over the B images
        loss_l = self.ntxent(l1.flatten(0, 1), l2.flatten(0, 1))  # L_l over the B·P patches, (BP, D) each
        return self.global_weight * loss_g + self.local_weight * loss_l, loss_g, loss_l
