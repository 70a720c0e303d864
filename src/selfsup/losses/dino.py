"""DINO's self-distillation loss (Caron et al., ICCV 2021, eq. 1 and algorithm 1): the student's softmax over every
crop learns the teacher's centred, sharpened softmax over each other global crop."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import all_reduce_with_grad, world_size


class DINOLoss(nn.Module):
    """L = mean over pairs (teacher global crop i, student crop v != i) of H(P_t(x_i), P_s(x_v)), H(a, b) =
    -sum_k a_k log b_k averaged over the batch; P_s = softmax(g_s / τ_s), P_t = softmax((g_t - c) / τ_t), and no
    gradient reaches the teacher.

    Inputs: student_logits, one (B, K) per crop, the global crops first and in the teacher's order;
    teacher_logits, one (B, K) per global crop; teacher_temperature τ_t of this step. In training mode each call then
    moves the centre c (1, K) toward the teacher's mean output over the global batch of every device:
    c <- m c + (1 - m) mean(g_t). Paper defaults τ_s 0.1, m 0.9 (τ_t 0.04 -> 0.07 is the method's schedule).
    """

    def __init__(self, num_prototypes: int, student_temperature: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temperature, self.center_momentum = student_temperature, center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))  # c

    def teacher_probabilities(self, teacher_logits: torch.Tensor, teacher_temperature: float) -> torch.Tensor:
        """(B, K) -> P_t (B, K): centred, sharpened, without gradient."""
        return F.softmax((teacher_logits.detach() - self.center) / teacher_temperature, dim=1)

    def forward(self, student_logits: Sequence[torch.Tensor], teacher_logits: Sequence[torch.Tensor],
                teacher_temperature: float = 0.04) -> torch.Tensor:
        log_p_s = [F.log_softmax(s / self.student_temperature, dim=1) for s in student_logits]  # (B, K) each
        p_t = [self.teacher_probabilities(t, teacher_temperature) for t in teacher_logits]  # (B, K) each
        pairs = [-(p_t[i] * log_p_s[v]).sum(dim=1).mean()
                 for i in range(len(p_t)) for v in range(len(log_p_s)) if v != i]
        loss = torch.stack(pairs).mean()
        if self.training:
            self.update_center(teacher_logits)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: Sequence[torch.Tensor]) -> None:
        """c <- m c + (1 - m) mean of the teacher outputs (n_global B, K) over all devices (summed by all-reduce)."""
        t = torch.cat(list(teacher_logits)).detach()  # (n_global B, K)
        batch_mean = all_reduce_with_grad(t.sum(dim=0, keepdim=True)) / (len(t) * world_size())  # (1, K)
        self.center.mul_(self.center_momentum).add_(batch_mean.to(self.center.dtype), alpha=1 - self.center_momentum)
