"""The losses of the remote-sensing multitask network (Li, Chen, Shi, "Semantic Segmentation of Remote Sensing Images
With Self-Supervised Multitask Representation Learning", IEEE JSTARS 2021): inpainting (weighted L1), transformation
recognition (6-way cross-entropy) and instance discrimination (NT-Xent, τ 1), L = 20·L_inp + 1·L_tr + 1·L_inst."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.ntxent import NTXentLoss


def inpainting_loss(x: torch.Tensor, x_tilde: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L1 weighted by how much corruption changed each value: x the original, x_tilde the corrupted input, x_hat the
    restored image F(x_tilde), all (B, C, H, W) in the same (normalised) units ->
        L_inp = 1/(B·C·H·W) Σ_bchw W_bchw · |x − x_hat|_bchw,   W = |x − x_tilde| (a constant: no gradient).
    The weights are not normalised and there is no epsilon: values the corruption left unchanged weigh 0 and do not
    count, and a stronger corruption weighs more. The mean runs over every value of the batch (the same for each
    image, so it is also the mean of the per-image losses)."""
    W = (x - x_tilde).abs().detach()  # (B, C, H, W)
    return (W * (x - x_hat).abs()).mean()


class RSMultitaskLoss(nn.Module):
    """L = w_inp·L_inp + w_tr·L_tr + w_inst·L_inst (the paper's weights 20 : 1 : 1), returned as (L, L_inp, L_tr, L_inst).

    L_inp: `inpainting_loss(x, x_tilde, x_hat)`, (B, C, H, W) each.
    L_tr: cross-entropy of logits (B, 6) of the transformation T applied to x (labels k (B,) in 0..5), mean over B.
    L_inst: NT-Xent (τ, 1 in the paper) between z1 and z2, (B, D) projections of x and T(x): image i's other view is
    the positive, the other 2B-2 views of the (global, gathered across devices with gradient) batch the negatives.
    """

    def __init__(self, temperature: float = 1.0, inpaint_weight: float = 20.0, transform_weight: float = 1.0,
                 instance_weight: float = 1.0):
        super().__init__()
        self.weights = inpaint_weight, transform_weight, instance_weight
        self.ntxent = NTXentLoss(temperature)

    def forward(self, x: torch.Tensor, x_tilde: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor,
                k: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss_inp = inpainting_loss(x, x_tilde, x_hat)  # restore the corrupted square
        loss_tr = F.cross_entropy(logits, k)  # which of the 6 transformations
        loss_inst = self.ntxent(z1, z2)  # x and T(x) are one instance
        w_inp, w_tr, w_inst = self.weights
        return w_inp * loss_inp + w_tr * loss_tr + w_inst * loss_inst, loss_inp, loss_tr, loss_inst
