import functools
import math

import torch

from selfsup.losses.nce import NCELoss, estimate_Z
from tests.distributed import assert_matches_one_process, run_distributed


def naive_nce(positive, negatives, tau, Z, n):
    """Wu et al. eq. 3-6 with loops: P(i|v) = exp(s/τ)/Z, h = P/(P + K/n),
    loss = mean over the batch of −log h(pos) − Σ_k log(1 − h(neg_k))."""
    B, K = negatives.shape
    losses = []
    for b in range(B):
        p = torch.exp(positive[b] / tau) / Z
        loss = -torch.log(p / (p + K / n))
        for k in range(K):
            q = torch.exp(negatives[b, k] / tau) / Z
            loss = loss - torch.log(1 - q / (q + K / n))
        losses.append(loss)
    return torch.stack(losses).mean()


def _similarities(B, K, seed=0):
    torch.manual_seed(seed)
    f = torch.nn.functional.normalize(torch.randn(B, 8, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(B + K, 8, dtype=torch.float64), dim=1)
    return (f * v[:B]).sum(1), f @ v[B:].T  # (B,), (B, K) cosine similarities


def test_matches_naive_loop_values_and_gradients():
    for tau, Z, n in ((0.07, 3000.0, 500), (0.5, 40.0, 20)):
        positive, negatives = (s.clone().requires_grad_() for s in _similarities(5, 7))
        ours = NCELoss(tau)(positive, negatives, torch.tensor(Z, dtype=torch.float64), n)
        reference = naive_nce(positive, negatives, tau, Z, n)
        torch.testing.assert_close(ours, reference)
        for g, r in zip(torch.autograd.grad(ours, (positive, negatives)),
                        torch.autograd.grad(reference, (positive, negatives))):
            torch.testing.assert_close(g, r)


def test_a_hand_computed_value():
    # s = 0 everywhere, τ 1, Z = n: P = 1/n, h = 1/(1 + K); loss = log(1 + K) + K log((1 + K)/K)
    K, n = 3, 10
    loss = NCELoss(1.0)(torch.zeros(2), torch.zeros(2, K), float(n), n)
    assert abs(loss.item() - (math.log(1 + K) + K * math.log((1 + K) / K))) < 1e-6


def test_stays_finite_where_the_probabilities_underflow():
    positive, negatives = torch.tensor([1.0, -1.0]), torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    loss = NCELoss(0.001)(positive, negatives, 1e30, 10**6)  # exp(1000) overflows, exp(-1000) underflows
    assert torch.isfinite(loss)


def test_estimate_Z_is_n_times_the_mean_of_the_exponentials():
    _, negatives = _similarities(4, 6)
    expected = sum(math.exp(s / 0.1) for s in negatives.flatten().tolist()) / 24 * 1000
    assert abs(estimate_Z(negatives, 0.1, 1000).item() / expected - 1) < 1e-12


def _estimate(rank, world, negatives):
    return estimate_Z(negatives.chunk(world)[rank], 0.1, 1000)


def test_estimate_Z_is_averaged_over_devices():
    _, negatives = _similarities(4, 6)
    halves = [estimate_Z(h, 0.1, 1000) for h in negatives.chunk(2)]
    for Z in run_distributed(_estimate, world=2, args=(negatives,)):
        torch.testing.assert_close(Z, (halves[0] + halves[1]) / 2)


def test_two_processes_match_one_process_on_the_global_batch():
    positive, negatives = _similarities(8, 5, seed=1)
    assert_matches_one_process(functools.partial(NCELoss(0.1), Z=100.0, n=50), (positive, negatives))
