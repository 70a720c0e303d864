"""DetCo's multi-level global and local contrastive loss (Xie et al., ICCV 2021, eqs. 2-4)."""

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.losses.infonce import InfoNCELoss

STAGE_WEIGHTS = (0.1, 0.4, 0.7, 1.0)  # w_s of ResNet stages 2-5 (res2 ... res5)


class DetCoLoss(nn.Module):
    """L = Σ_s w_s (L_gg^s + L_ll^s + L_gl^s), the mean over the B images of MoCo's InfoNCE (τ) terms per stage s:

    - L_gg = NCE(q^g, k^g₊, queue^g): the query's global vector against its key's global vector;
    - L_ll = NCE(q^l, k^l₊, queue^l): the query's local (jigsaw) vector against its key's local vector;
    - L_gl = NCE(q^g, k^l₊, queue^l) + NCE(q^l, k^g₊, queue^g): the cross global-local contrast, both ways.

    Negatives always come from the queue of the key's kind, one queue per stage and kind (2 x 4 queues). Inputs are
    sequences over the stages: q_g, q_l, k_g, k_l of (B, D) each (keys are detached), queue_g, queue_l of (K, D) unit
    rows. Gradient flows only through the queries.
    """

    def __init__(self, temperature: float = 0.2, stage_weights: Sequence[float] = STAGE_WEIGHTS):
        super().__init__()
        self.nce = InfoNCELoss(temperature)  # -log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_queue exp(q·k⁻/τ))
        self.stage_weights = tuple(stage_weights)

    def terms(self, q_g: Sequence[torch.Tensor], q_l: Sequence[torch.Tensor], k_g: Sequence[torch.Tensor],
              k_l: Sequence[torch.Tensor], queue_g: Sequence[torch.Tensor], queue_l: Sequence[torch.Tensor]
              ) -> dict[str, torch.Tensor]:
        """{"gg": Σ_s w_s L_gg^s, "ll": Σ_s w_s L_ll^s, "gl": Σ_s w_s L_gl^s}: their sum is the loss."""
        stages = zip(self.stage_weights, q_g, q_l, k_g, k_l, queue_g, queue_l, strict=True)
        gg, ll, gl = [], [], []
        for w, qg, ql, kg, kl, neg_g, neg_l in stages:  # (B, D) x 4, (K, D) x 2
            gg.append(w * self.nce(qg, kg, neg_g))
            ll.append(w * self.nce(ql, kl, neg_l))
            gl.append(w * (self.nce(qg, kl, neg_l) + self.nce(ql, kg, neg_g)))
        return {"gg": torch.stack(gg).sum(), "ll": torch.stack(ll).sum(), "gl": torch.stack(gl).sum()}

    def forward(self, q_g: Sequence[torch.Tensor], q_l: Sequence[torch.Tensor], k_g: Sequence[torch.Tensor],
                k_l: Sequence[torch.Tensor], queue_g: Sequence[torch.Tensor], queue_l: Sequence[torch.Tensor]
                ) -> torch.Tensor:
        return sum(self.terms(q_g, q_l, k_g, k_l, queue_g, queue_l).values())
