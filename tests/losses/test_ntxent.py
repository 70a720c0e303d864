import math

import torch
import torch.nn.functional as F

from selfsup.losses import NTXentLoss
from tests.distributed import assert_matches_one_process


def naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR eq. 1 with explicit loops: l(i, j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t)."""
    z = torch.cat([z1, z2])
    n, B = z.shape[0], z1.shape[0]
    losses = []
    for i in range(n):
        j = (i + B) % n
        sim = [F.cosine_similarity(z[i], z[k], dim=0) / tau for k in range(n)]
        denominator = sum(torch.exp(sim[k]) for k in range(n) if k != i)
        losses.append(-torch.log(torch.exp(sim[j]) / denominator))
    return torch.stack(losses).mean()


def test_matches_naive_loop_values_and_gradients():
    torch.manual_seed(0)
    for tau in (0.1, 0.5):
        z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
        ours = NTXentLoss(tau)(z1, z2)
        g1, g2 = torch.autograd.grad(ours, (z1, z2))
        reference = naive_ntxent(z1, z2, tau)
        r1, r2 = torch.autograd.grad(reference, (z1, z2))
        torch.testing.assert_close(ours, reference)
        torch.testing.assert_close(g1, r1)
        torch.testing.assert_close(g2, r2)


def test_identical_orthogonal_views_give_the_analytic_value():
    # Positive similarity 1, the 2B-2 negatives 0: loss = log(1 + (2B-2) exp(-1/t)).
    B, tau = 4, 0.5
    z = torch.eye(B, 8) * 3.0  # scale must not matter: the loss normalises
    expected = math.log(1 + (2 * B - 2) * math.exp(-1 / tau))
    assert abs(NTXentLoss(tau)(z, z.clone()).item() - expected) < 1e-6


def test_swapping_views_does_not_change_the_loss():
    torch.manual_seed(1)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    loss = NTXentLoss(0.2)
    torch.testing.assert_close(loss(z1, z2), loss(z2, z1))


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(2)
    z1, z2 = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    assert_matches_one_process(NTXentLoss(0.3), (z1, z2))
