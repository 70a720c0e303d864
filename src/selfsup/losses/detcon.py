"""DetCon's contrastive detection loss (Hénaff et al., "Efficient Visual Pretraining with Contrastive Detection",
ICCV 2021, eq. 2): InfoNCE over mask vectors, τ 0.1."""

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather, gather_with_grad, rank


class DetConLoss(nn.Module):
    """-log softmax of the same mask in the other view, against every other mask of both views of the global batch.

    q1, q2: (B, M, D) online mask vectors of views 1 and 2 (DetCon-S: projections; DetCon-B: predictions);
    k1, k2: (B, M, D) their targets (DetCon-S: the same projections, with gradient; DetCon-B: the EMA target's
    projections); ids: (B, M) each slot's mask id. Slots of one image with the same id are one mask: in the other
    view they are all positives (the target spreads evenly over them), in the same view they are neither positive
    nor negative. Negatives: every other mask of the same and of other images, gathered from all devices (with
    gradient, as SimCLR's). Mean over both directions and all B·M anchors.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                ids: torch.Tensor) -> torch.Tensor:
        B, M, D = q1.shape
        image = (rank() * B + torch.arange(B, device=ids.device)).repeat_interleave(M)  # (BM,) global image index
        key_image, key_ids = gather(image), gather(ids.reshape(-1))  # (BMW,)
        same = (image[:, None] == key_image[None]) & (ids.reshape(-1)[:, None] == key_ids[None])  # (BM, BMW)
        keys = [gather_with_grad(F.normalize(k, dim=-1).reshape(B * M, D)) for k in (k1, k2)]  # (BMW, D) each
        loss = 0.0
        for q, own, other in ((q1, keys[0], keys[1]), (q2, keys[1], keys[0])):
            q = F.normalize(q, dim=-1).reshape(B * M, D)  # (BM, D)
            logits_ab = q @ other.T / self.temperature  # (BM, BMW) against the other view: positives in here
            logits_aa = (q @ own.T / self.temperature).masked_fill(same, float("-inf"))  # (BM, BMW) same view
            log_p = F.log_softmax(torch.cat([logits_ab, logits_aa], dim=1), dim=1)[:, : logits_ab.shape[1]]
            loss = loss + (-(log_p * same).sum(1) / same.sum(1)).mean()
        return loss / 2
