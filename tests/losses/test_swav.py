import math

import torch

from selfsup.losses.swav import SwAVLoss, sinkhorn
from tests.distributed import assert_matches_one_process, run_distributed


def naive_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV appendix A.1 entry by entry: Q_kb = exp(s_bk / eps) / total; then, `iterations` times,
    Q_kb <- Q_kb / (K sum_b' Q_kb') and Q_kb <- Q_kb / (B sum_k' Q_k'b); returns q_bk = B Q_kb."""
    B, K = scores.shape
    Q = [[math.exp(scores[b, k].item() / epsilon) for b in range(B)] for k in range(K)]
    total = sum(sum(row) for row in Q)
    Q = [[Q[k][b] / total for b in range(B)] for k in range(K)]
    for _ in range(iterations):
        rows = [sum(Q[k]) for k in range(K)]
        Q = [[Q[k][b] / (K * rows[k]) for b in range(B)] for k in range(K)]
        cols = [sum(Q[k][b] for k in range(K)) for b in range(B)]
        Q = [[Q[k][b] / (B * cols[b]) for b in range(B)] for k in range(K)]
    return torch.tensor([[B * Q[k][b] for k in range(K)] for b in range(B)], dtype=torch.float64)


def naive_swav(global_scores, local_scores, tau, eps, iterations, queue_scores=None):
    """Eq. 3 with loops: for each global crop i, mean over the other crops v of
    -(1/B) sum_b sum_k q_i[b, k] log(exp(s_v[b, k] / tau) / sum_k' exp(s_v[b, k'] / tau))."""
    crops = list(global_scores) + list(local_scores)
    B, K = crops[0].shape
    total = 0.0
    for i, s_i in enumerate(global_scores):
        sinkhorn_input = s_i.detach() if queue_scores is None else torch.cat([queue_scores[i], s_i.detach()])
        q = naive_sinkhorn(sinkhorn_input, eps, iterations)[-B:]
        terms = []
        for v, s_v in enumerate(crops):
            if v == i:
                continue
            per_sample = []
            for b in range(B):
                normaliser = sum(torch.exp(s_v[b, k] / tau) for k in range(K))
                per_sample.append(-sum(q[b, k] * torch.log(torch.exp(s_v[b, k] / tau) / normaliser) for k in range(K)))
            terms.append(sum(per_sample) / B)
        total = total + sum(terms) / len(terms)
    return total / len(global_scores)


def _scores(n: int, B: int = 6, K: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """Cosine-like scores in [-1, 1], as unit z and unit prototypes give."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(n)]


def test_sinkhorn_matches_the_naive_loop():
    for eps, iterations in ((0.05, 3), (0.5, 1), (0.1, 10)):
        (s,) = _scores(1, B=7, K=4)
        torch.testing.assert_close(sinkhorn(s, eps, iterations), naive_sinkhorn(s, eps, iterations))


def test_sinkhorn_marginals():
    (s,) = _scores(1, B=8, K=4, seed=1)
    q = sinkhorn(s, 0.05, 3)
    # the last step normalises samples: every code is a distribution over the K prototypes
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8, dtype=torch.float64))
    assert (q >= 0).all()
    # converged, the prototypes also share the batch equally: each gets B/K of the mass
    q = sinkhorn(s, 0.05, 500)
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 8 / 4, dtype=torch.float64))
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8, dtype=torch.float64))


def test_sinkhorn_equalises_prototypes_that_plain_softmax_would_collapse_onto():
    # every sample prefers prototype 0; softmax would give them all to it, Sinkhorn spreads them
    s = torch.tensor([[1.0, 0.0, 0.0]] * 6, dtype=torch.float64) + 0.01 * torch.arange(18.0).view(6, 3)
    q = sinkhorn(s, 0.05, 3)
    assert torch.softmax(s / 0.05, dim=1)[:, 0].sum() > 5.9
    assert (q.sum(dim=0) - 2.0).abs().max() < 0.1


def test_sinkhorn_runs_in_float32_for_half_precision_scores_and_has_no_gradient():
    s = torch.tensor([[1.0, -1.0, 0.3], [-1.0, 1.0, 0.9]] * 3, dtype=torch.bfloat16).requires_grad_()
    q = sinkhorn(s, 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all() and not q.requires_grad
    torch.testing.assert_close(q.sum(dim=1), torch.ones(6))


def test_swapped_loss_matches_the_naive_loop_values_and_gradients():
    for tau, n_local in ((0.1, 2), (0.5, 0)):
        scores = [s.requires_grad_() for s in _scores(2 + n_local, seed=3)]
        ours = SwAVLoss(tau, 0.05, 3)(scores[:2], scores[2:])
        reference = naive_swav(scores[:2], scores[2:], tau, 0.05, 3)
        torch.testing.assert_close(ours, reference)
        for g, r in zip(torch.autograd.grad(ours, scores), torch.autograd.grad(reference, scores)):
            torch.testing.assert_close(g, r)


def test_codes_carry_no_gradient_so_a_crop_only_learns_from_the_others():
    # one global crop and nothing else to predict from: no other crop, so only crop 2 gets a gradient
    s1, s2 = [s.requires_grad_() for s in _scores(2, seed=4)]
    loss = SwAVLoss()([s1], [s2])
    g1, g2 = torch.autograd.grad(loss, (s1, s2), allow_unused=True)
    assert g1 is None and g2.abs().max() > 0


def test_queue_joins_sinkhorn_but_only_the_batch_codes_are_used():
    s1, s2, s3 = [s.requires_grad_() for s in _scores(3, seed=5)]
    queue = _scores(2, B=10, seed=6)
    ours = SwAVLoss(0.1, 0.05, 3)([s1, s2], [s3], queue)
    reference = naive_swav([s1, s2], [s3], 0.1, 0.05, 3, queue)
    torch.testing.assert_close(ours, reference)
    for g, r in zip(torch.autograd.grad(ours, (s1, s2, s3)), torch.autograd.grad(reference, (s1, s2, s3))):
        torch.testing.assert_close(g, r)
    assert not torch.allclose(ours, SwAVLoss(0.1, 0.05, 3)([s1, s2], [s3]))  # the queue changes the codes


def two_global_two_local(g1, g2, l1, l2):
    return SwAVLoss(0.1, 0.05, 3)([g1, g2], [l1, l2])


def test_two_processes_match_one_process_on_the_global_batch():
    assert_matches_one_process(two_global_two_local, tuple(_scores(4, B=8, seed=7)))


def _shard_codes_and_queued_loss(rank: int, world: int, scores, queue):
    shards = [s.chunk(world)[rank] for s in scores]
    codes = sinkhorn(shards[0], 0.05, 3)
    loss = SwAVLoss(0.1, 0.05, 3)(shards[:2], shards[2:], [q.chunk(world)[rank] for q in queue])
    return codes, loss.detach()


def test_two_process_sinkhorn_and_split_queue_equal_one_process_on_the_global_batch():
    # the sums over samples are all-reduced: the codes are those of the global batch, and each device's
    # slice of the queue counts once, as the method feeds it
    scores, queue = _scores(3, B=8, seed=8), _scores(2, B=12, seed=9)
    results = run_distributed(_shard_codes_and_queued_loss, world=2, args=(scores, queue))
    torch.testing.assert_close(torch.cat([codes for codes, _ in results]), sinkhorn(scores[0], 0.05, 3))
    full = SwAVLoss(0.1, 0.05, 3)(scores[:2], scores[2:], queue)
    torch.testing.assert_close(torch.stack([loss for _, loss in results]).mean(), full)
