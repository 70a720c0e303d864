"""SwAV's swapped prediction of Sinkhorn-Knopp codes (Caron et al., NeurIPS 2020, eq. 2-3 and appendix A.1)."""

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import world_size


def _all_reduce(x: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Scores s (B, K) of this device's samples against K prototypes -> codes q (B, K), each row summing to 1.

    Q = exp(s/eps)^T (K, B_total) is rescaled alternately so its rows (prototypes) sum to 1/K and
    its columns (samples) to 1/B_total, `iterations` times; every sum over samples is all-reduced, so
    B_total is the global batch and the prototypes share it equally. Returns B_total * Q^T.
    """
    s = scores.detach().to(torch.promote_types(scores.dtype, torch.float32)) / epsilon  # (B, K)
    s = s - _all_reduce(s.max(), dist.ReduceOp.MAX)  # a common constant: cancels, keeps exp finite
    Q = torch.exp(s).T  # (K, B)
    K = Q.shape[0]
    B = _all_reduce(torch.tensor(float(Q.shape[1]), dtype=Q.dtype, device=Q.device))  # global batch
    Q /= _all_reduce(Q.sum())
    for _ in range(iterations):
        Q /= _all_reduce(Q.sum(dim=1, keepdim=True)) * K  # each prototype's row sums to 1/K
        Q /= Q.sum(dim=0, keepdim=True) * B  # each sample's column sums to 1/B (a column lives on one device)
    return (Q * B).T  # (B, K)


class SwAVLoss(nn.Module):
    """Swapped prediction: codes q_i of each global crop i (Sinkhorn, no gradient) are predicted from
    every other crop v, global or local: l = -sum_k q_i,k log softmax(s_v / tau)_k; mean over the
    batch, the other crops and the global crops.

    Inputs: global_scores and local_scores, lists of (B, K) scores z_v . c_k of unit vectors;
    queue_scores, optionally one (L, K) per global crop: scores of past projections, put before the
    batch in Sinkhorn (only the batch's codes are used). Paper defaults tau 0.1, eps 0.05, 3 iterations.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3):
        super().__init__()
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, iterations

    def codes(self, scores: torch.Tensor, queue_scores: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) -> (B, K) codes; with a queue (L, K), Sinkhorn runs on L + B samples."""
        if queue_scores is None:
            return sinkhorn(scores, self.epsilon, self.iterations)
        B = scores.shape[0]
        return sinkhorn(torch.cat([queue_scores, scores.detach()]), self.epsilon, self.iterations)[-B:]

    def forward(self, global_scores: Sequence[torch.Tensor], local_scores: Sequence[torch.Tensor] = (),
                queue_scores: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        scores = [*global_scores, *local_scores]
        log_p = [F.log_softmax(s / self.temperature, dim=1) for s in scores]  # (B, K) each
        loss = 0.0
        for i, s_i in enumerate(global_scores):
            q_i = self.codes(s_i, None if queue_scores is None else queue_scores[i])  # (B, K), no gradient
            swapped = [-(q_i * log_p[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i]
            loss = loss + torch.stack(swapped).mean()
        return loss / len(global_scores)
