"""MoBY's symmetric contrastive loss with two key queues (Xie et al. 2021, "Self-Supervised Learning with Swin
Transformers", sec. 2, the InfoNCE of eq. 1 applied to both views)."""

import torch
from torch import nn

from selfsup.losses.infonce import InfoNCELoss


class MoBYLoss(nn.Module):
    """L = L(q₁, k₂, Q₂) + L(q₂, k₁, Q₁), with L(q, k₊, Q) = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k∈Q} exp(q·k/τ)),
    the mean over the B images.

    Inputs: q1, q2 (B, D) the online predictions of views 1 and 2; k1, k2 (B, D) the target projections of the
    same views (constants: detached); queue1, queue2 (K, D) unit-norm earlier target projections of view 1 and of
    view 2. The prediction of one view is pulled to the target of the other and pushed from that other view's queue.
    q and k are L2-normalised here. Per device, like MoCo's loss: the positives are this device's, the queues hold
    every device's keys, so the mean of the devices' losses is the loss of the global batch.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.infonce = InfoNCELoss(temperature)

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                queue1: torch.Tensor, queue2: torch.Tensor) -> torch.Tensor:
        return self.infonce(q1, k2, queue2) + self.infonce(q2, k1, queue1)  # scalar; (B, 1+K) logits each
