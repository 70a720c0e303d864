"""SaDL-CD's loss (Chen, Li, Chen, Shi, "Semantic-Aware Dense Representation Learning for Remote Sensing Image Change
Detection", IEEE TGRS 2022): on N points per class (0 background, 1 foreground) sampled at the same source pixels
of two views, aligned points are pulled together SimSiam-style, foreground and background are pushed apart, and the
foreground points of a background-swapped view regress those of view 1.

With D(p, z) = 2 − 2·cos(p, sg(z)) (the authors' cosine loss; sg: stop-gradient) and v_bc ∈ {0, 1} whether image b
has points of class c in both views:

    L_pull = Σ_bck v_bc · ½[D(p1_bck, z2_bck) + D(p2_bck, z1_bck)] / (N · Σ_bc v_bc)
    L_push = Σ_b v_b0 v_b1 · ½ Σ_view (1/N²) Σ_kl [1 + cos(h_b1k, h_b0l)] / Σ_b v_b0 v_b1
    L_swap = Σ_bk v_b1 · D(ps_bk, z1_b1k) / (N · Σ_b v_b1)
    L      = L_pull + λ_push·L_push + λ_swap·L_swap        (λ_push 1, λ_swap ½ in the authors' code)

h are the points' dense features before the projector (the push acts there, both sides with gradient), z the
projections, p the predictions, ps the predictions of view 1's foreground points in the background-swapped view.
The paper states the push only in words ("background and foreground points are pushed apart"); 1 + cos is its form
in the authors' code, which pairs the k-th foreground with the k-th background point; here every foreground point of
an image and view meets every background point of it (the same expectation, less variance). Every term is a mean
over this device's images: under DDP nothing is gathered, the ranks' mean is the global batch's loss when each has
as many valid points (a per-rank mean otherwise, as every per-sample loss here).
"""

import torch
import torch.nn.functional as F
from torch import nn


def regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = 2 − 2·cos(p, sg(z)) per point: p, z (..., D) -> (...)."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·x / Σ w of values and 0/1 weights of one shape; 0 (still in the graph) when every weight is 0."""
    return (values * weights).sum() / weights.sum().clamp_min(1)


def push(h: torch.Tensor) -> torch.Tensor:
    """Mean over the N x N (foreground, background) pairs of one image and view of 1 + cos(h_fg, h_bg):
    h (B, 2, N, D) with class 0 background, 1 foreground -> (B,), in [0, 2]."""
    h = F.normalize(h, dim=-1)  # (B, 2, N, D)
    cos = torch.einsum("bkd,bld->bkl", h[:, 1], h[:, 0])  # (B, N, N): fg k against bg l
    return 1 + cos.mean(dim=(1, 2))  # (B,)


class SaDLCDLoss(nn.Module):
    """(L, L_pull, L_push, L_swap) of the module docstring's equations.

    Inputs, class axis first background then foreground: p1, p2, z1, z2, h1, h2 (B, 2, N, ·) of the two views' points
    (predictions, projections, dense features; point (b, c, k) is the same source pixel in both views); ps (B, N, D)
    the predictions of view 1's foreground points in the background-swapped view; valid (B, 2) bool, whether the
    image's class c has points (an image without foreground in the views' overlap has none). Scalars out.
    """

    def __init__(self, push_weight: float = 1.0, swap_weight: float = 0.5):
        super().__init__()
        self.push_weight, self.swap_weight = push_weight, swap_weight

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, h1: torch.Tensor,
                h2: torch.Tensor, ps: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        v = valid.to(p1.dtype)  # (B, 2)
        pull = 0.5 * (regression(p1, z2) + regression(p2, z1))  # (B, 2, N)
        loss_pull = masked_mean(pull, v[..., None].expand_as(pull))
        loss_push = masked_mean(0.5 * (push(h1) + push(h2)), v[:, 0] * v[:, 1])  # over images with both classes
        swap = regression(ps, z1[:, 1])  # (B, N): foreground of the swapped view -> view 1's
        loss_swap = masked_mean(swap, v[:, 1:].expand_as(swap))
        loss = loss_pull + self.push_weight * loss_push + self.swap_weight * loss_swap
        return loss, loss_pull, loss_push, loss_swap
