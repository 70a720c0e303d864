import math

import torch
import torch.nn.functional as F

from selfsup.losses.detco import DetCoLoss


def naive_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """-log exp(cos(q_i, k_i)/τ) / (exp(cos(q_i, k_i)/τ) + Σ_j exp(cos(q_i, queue_j)/τ)), averaged over i."""
    losses = []
    for i in range(q.shape[0]):
        positive = torch.exp(F.cosine_similarity(q[i], k[i].detach(), dim=0) / tau)
        negatives = sum(torch.exp(F.cosine_similarity(q[i], n, dim=0) / tau) for n in queue)
        losses.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(losses).mean()


def naive_detco(q_g, q_l, k_g, k_l, queue_g, queue_l, tau, weights) -> torch.Tensor:
    """Σ_s w_s [NCE(q^g, k^g, Q^g) + NCE(q^l, k^l, Q^l) + NCE(q^g, k^l, Q^l) + NCE(q^l, k^g, Q^g)]."""
    total = 0
    for s, w in enumerate(weights):
        total = total + w * (naive_nce(q_g[s], k_g[s], queue_g[s], tau) + naive_nce(q_l[s], k_l[s], queue_l[s], tau)
                             + naive_nce(q_g[s], k_l[s], queue_l[s], tau)
                             + naive_nce(q_l[s], k_g[s], queue_g[s], tau))
    return total


def _inputs(B=5, D=6, K=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q_g = [torch.randn(B, D, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(4)]
    q_l = [torch.randn(B, D, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(4)]
    k_g = [torch.randn(B, D, dtype=torch.float64, generator=g) for _ in range(4)]
    k_l = [torch.randn(B, D, dtype=torch.float64, generator=g) for _ in range(4)]
    queue_g = [F.normalize(torch.randn(K, D, dtype=torch.float64, generator=g), dim=1) for _ in range(4)]
    queue_l = [F.normalize(torch.randn(K, D, dtype=torch.float64, generator=g), dim=1) for _ in range(4)]
    return q_g, q_l, k_g, k_l, queue_g, queue_l


def test_matches_a_naive_loop_values_and_gradients():
    for tau, weights in ((0.2, (0.1, 0.4, 0.7, 1.0)), (1.0, (0.0, 0.0, 2.0, 0.5))):
        inputs = _inputs()
        q = [*inputs[0], *inputs[1]]
        ours = DetCoLoss(tau, weights)(*inputs)
        reference = naive_detco(*inputs, tau, weights)
        torch.testing.assert_close(ours, reference)
        for a, b in zip(torch.autograd.grad(ours, q), torch.autograd.grad(reference, q), strict=True):
            torch.testing.assert_close(a, b)


def test_terms_add_up_and_each_uses_the_queue_of_its_keys_kind():
    q_g, q_l, k_g, k_l, queue_g, queue_l = _inputs(seed=1)
    loss = DetCoLoss(0.2)
    terms = loss.terms(q_g, q_l, k_g, k_l, queue_g, queue_l)
    torch.testing.assert_close(sum(terms.values()), loss(q_g, q_l, k_g, k_l, queue_g, queue_l))
    w = (0.1, 0.4, 0.7, 1.0)
    torch.testing.assert_close(terms["gl"], sum(w[s] * (naive_nce(q_g[s], k_l[s], queue_l[s], 0.2)
                                                       + naive_nce(q_l[s], k_g[s], queue_g[s], 0.2)) for s in range(4)))
    swapped = loss.terms(q_g, q_l, k_g, k_l, queue_l, queue_g)  # the local keys against the global queue: differs
    assert not torch.allclose(swapped["gl"], terms["gl"]) and not torch.allclose(swapped["gg"], terms["gg"])


def test_gradient_flows_only_through_the_queries():
    q_g, q_l, k_g, k_l, queue_g, queue_l = _inputs(seed=2)
    keys = [k.requires_grad_() for k in [*k_g, *k_l, *queue_g, *queue_l]]
    grads = torch.autograd.grad(DetCoLoss()(q_g, q_l, k_g, k_l, queue_g, queue_l), [*q_g, *q_l, *keys],
                                allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:8])
    assert all(g is None for g in grads[8:])


def test_orthogonal_keys_give_the_analytic_value():
    # q = k for both kinds, global and local vectors orthogonal, queues orthogonal to all: L_gg = L_ll =
    # log(1 + K e^{-1/τ}) (positive cos 1, negatives cos 0); each cross term log(1 + K) (every cosine 0)
    tau, K = 0.5, 2
    eye = torch.eye(8, dtype=torch.float64)
    g, loc = eye[:2], eye[2:4]  # 2 images, global and local vectors orthogonal
    queue_g, queue_l = [eye[4:6]] * 4, [eye[6:8]] * 4
    loss = DetCoLoss(tau)([g] * 4, [loc] * 4, [g] * 4, [loc] * 4, queue_g, queue_l)
    same = math.log(1 + K * math.exp(-1 / tau))  # positive cos 1, negatives cos 0
    cross = math.log(1 + K)  # positive cos 0, negatives cos 0
    assert math.isclose(loss.item(), 2.2 * (2 * same + 2 * cross), rel_tol=1e-9)
