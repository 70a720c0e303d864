import math

import torch
import torch.nn.functional as F

from selfsup.losses.infonce import InfoNCELoss
from tests.distributed import assert_matches_one_process


def naive_infonce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor | None, tau: float) -> torch.Tensor:
    """MoCo eq. 1 with explicit loops; keys are constants. Without negatives the candidates of
    query i are all keys of the batch (MoCo v3), with them its own key and the negatives (MoCo v1)."""
    k = k.detach()
    losses = []
    for i in range(q.shape[0]):
        candidates = [k[j] for j in range(k.shape[0])] if negatives is None else [k[i], *negatives]
        positive = i if negatives is None else 0
        sims = [torch.exp(F.cosine_similarity(q[i], c, dim=0) / tau) for c in candidates]
        losses.append(-torch.log(sims[positive] / sum(sims)))
    return torch.stack(losses).mean()


def test_matches_naive_loop_values_and_gradients():
    torch.manual_seed(0)
    for tau in (0.07, 1.0):
        for with_queue in (False, True):
            q = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
            k = torch.randn(5, 4, dtype=torch.float64)
            negatives = F.normalize(torch.randn(7, 4, dtype=torch.float64), dim=1) if with_queue else None
            ours = InfoNCELoss(tau)(q, k, negatives)
            reference = naive_infonce(q, k, negatives, tau)
            torch.testing.assert_close(ours, reference)
            torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(reference, q)[0])


def test_gradient_flows_only_through_the_queries():
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    queue = F.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    for negatives in (None, queue):
        loss = InfoNCELoss(0.2)(q, k, negatives)
        used = (q, k) if negatives is None else (q, k, negatives)
        grads = torch.autograd.grad(loss, used, allow_unused=True)
        assert grads[0] is not None and grads[0].abs().sum() > 0
        assert all(g is None for g in grads[1:])  # keys and queue are constants


def test_orthogonal_keys_give_the_analytic_value():
    # q_i = k_i, all other candidates orthogonal: loss = log(1 + n_neg·exp(-1/τ)); scale must not matter
    tau = 0.5
    q = torch.eye(4, 8) * 3.0
    assert math.isclose(InfoNCELoss(tau)(q, q.clone()).item(), math.log(1 + 3 * math.exp(-1 / tau)), rel_tol=1e-6)
    queue = torch.eye(8)[4:]  # 4 negatives orthogonal to every query
    assert math.isclose(InfoNCELoss(tau)(q, q.clone(), queue).item(), math.log(1 + 4 * math.exp(-1 / tau)),
                        rel_tol=1e-6)


def in_batch_loss(qk: torch.Tensor) -> torch.Tensor:
    """(B, 2, D) queries and keys packed together, so that the 2-process check splits them alike;
    the key half must receive zero gradient."""
    return InfoNCELoss(0.3)(qk[:, 0], qk[:, 1])


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(2)
    qk = torch.randn(8, 2, 6, dtype=torch.float64)
    assert_matches_one_process(in_batch_loss, (qk,))
    packed = qk.clone().requires_grad_()
    grad = torch.autograd.grad(in_batch_loss(packed), packed)[0]
    assert grad[:, 0].abs().sum() > 0 and torch.equal(grad[:, 1], torch.zeros_like(grad[:, 1]))
