import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.detcon import DetConLoss
from tests.distributed import assert_matches_one_process


def naive_detcon(q1, q2, k1, k2, ids, tau):
    """DetCon eq. 2 with explicit loops. Anchor (n, m) of view a: positives = masks of image n with the same id in
    view b; the denominator runs over every mask of view b and every mask of view a that is not the same
    (image, id); the anchor's loss is the mean of -log p over its positives."""
    B, M, _ = q1.shape
    losses = []
    for qa, ka, kb in ((q1, k1, k2), (q2, k2, k1)):
        for n in range(B):
            for m in range(M):
                q = qa[n, m]
                def s(k):
                    return torch.exp(F.cosine_similarity(q, k, dim=0) / tau)
                denominator = sum(s(kb[n2, m2]) for n2 in range(B) for m2 in range(M))
                denominator = denominator + sum(s(ka[n2, m2]) for n2 in range(B) for m2 in range(M)
                                                if not (n2 == n and ids[n2, m2] == ids[n, m]))
                positives = [m2 for m2 in range(M) if ids[n, m2] == ids[n, m]]
                losses.append(sum(-torch.log(s(kb[n, m2]) / denominator) for m2 in positives) / len(positives))
    return torch.stack(losses).mean()


def test_matches_naive_loop_values_and_gradients_with_repeated_ids():
    torch.manual_seed(0)
    ids = torch.tensor([[0, 1, 1, 2], [3, 3, 3, 3], [5, 0, 7, 2]])  # repeats: sampled with replacement
    for tau in (0.1, 0.5):
        inputs = [torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(4)]
        ours = DetConLoss(tau)(*inputs, ids)
        reference = naive_detcon(*inputs, ids, tau)
        torch.testing.assert_close(ours, reference)
        for g, r in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(reference, inputs)):
            torch.testing.assert_close(g, r)


def test_perfectly_matched_orthogonal_masks_give_the_analytic_value():
    # B·M distinct orthogonal masks, identical in both views: positive similarity 1, the other 2BM-2 similarities 0.
    B, M, tau = 2, 3, 0.1
    z = torch.eye(B * M, 8).reshape(B, M, 8) * 2.0
    ids = torch.arange(M).repeat(B, 1)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * B * M - 2))
    assert abs(DetConLoss(tau)(z, z, z, z, ids).item() - expected) < 1e-5


class _WithIds(nn.Module):
    """The harness splits float inputs along dim 0: ids travel as float64 and take no gradient."""

    def forward(self, q1, q2, k1, k2, ids):
        return DetConLoss(0.2)(q1, q2, k1, k2, ids.detach().long()) + 0 * ids.sum()


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(2)
    inputs = tuple(torch.randn(4, 3, 6, dtype=torch.float64) for _ in range(4))
    ids = torch.tensor([[0, 1, 1], [2, 0, 1], [0, 0, 0], [4, 5, 6]], dtype=torch.float64)
    assert_matches_one_process(_WithIds(), (*inputs, ids))
