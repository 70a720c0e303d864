import math

import torch
import torch.nn.functional as F

from selfsup.losses.moby import MoBYLoss
from tests.distributed import assert_matches_one_process


def naive_contrast(q: torch.Tensor, k_other: torch.Tensor, queue_other: torch.Tensor, tau: float) -> torch.Tensor:
    """MoBY eq. 1 with loops: −log exp(q·k₊/τ) / Σ_{i=0..K} exp(q·k_i/τ), k₊ the other view's target feature, k_1..K
    that view's queue; q and k₊ compared by cosine, the queue's rows already unit vectors."""
    losses = []
    for i in range(q.shape[0]):
        positive = torch.exp(F.cosine_similarity(q[i], k_other[i].detach(), dim=0) / tau)
        negatives = [torch.exp(q[i] @ key / q[i].norm() / tau) for key in queue_other]
        losses.append(-torch.log(positive / (positive + sum(negatives))))
    return torch.stack(losses).mean()


def naive_moby(q1, q2, k1, k2, queue1, queue2, tau):
    """Symmetric: view 1's prediction against view 2's target and queue, and the reverse."""
    return naive_contrast(q1, k2, queue2, tau) + naive_contrast(q2, k1, queue1, tau)


def _inputs(B=5, D=4, K=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q1, q2, k1, k2 = (torch.randn(B, D, dtype=torch.float64, generator=g) for _ in range(4))
    queue1, queue2 = (F.normalize(torch.randn(K, D, dtype=torch.float64, generator=g), dim=1) for _ in range(2))
    return q1, q2, k1, k2, queue1, queue2


def test_matches_naive_loop_values_and_gradients():
    for tau in (0.2, 1.0):
        q1, q2, k1, k2, queue1, queue2 = _inputs()
        q1.requires_grad_(), q2.requires_grad_()
        ours = MoBYLoss(tau)(q1, q2, k1, k2, queue1, queue2)
        reference = naive_moby(q1, q2, k1, k2, queue1, queue2, tau)
        torch.testing.assert_close(ours, reference)
        for a, b in zip(torch.autograd.grad(ours, (q1, q2)), torch.autograd.grad(reference, (q1, q2))):
            torch.testing.assert_close(a, b)


def test_each_prediction_meets_the_other_views_target_and_queue():
    q1, q2, k1, k2, queue1, queue2 = _inputs()
    loss = MoBYLoss(0.2)
    base = loss(q1, q2, k1, k2, queue1, queue2)
    # swapping the queues, or the targets, changes the loss: the pairing is not symmetric in the arguments
    assert not torch.isclose(base, loss(q1, q2, k1, k2, queue2, queue1))
    assert not torch.isclose(base, loss(q1, q2, k2, k1, queue1, queue2))
    # each prediction along its other view's target, that view's 4 queued keys orthogonal to it: each term is
    # −log(e^{1/τ} / (e^{1/τ} + 4)) = log(1 + 4·e^{−1/τ}); the norm of q does not matter
    eye = torch.eye(8, dtype=torch.float64)
    q1, q2, k1, k2 = eye[:2] * 3, eye[2:4] * 2, eye[2:4], eye[:2]
    queue1, queue2 = eye[4:], eye[4:]
    assert math.isclose(loss(q1, q2, k1, k2, queue1, queue2).item(), 2 * math.log(1 + 4 * math.exp(-1 / 0.2)),
                        rel_tol=1e-9)


def test_gradient_flows_only_through_the_predictions():
    q1, q2, k1, k2, queue1, queue2 = (x.clone().requires_grad_() for x in _inputs())
    grads = torch.autograd.grad(MoBYLoss(0.2)(q1, q2, k1, k2, queue1, queue2), (q1, q2, k1, k2, queue1, queue2),
                                allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert all(g is None for g in grads[2:])  # targets and queues are constants


class _FixedQueues(torch.nn.Module):
    """The loss with both queues fixed (as every device holds the same queues), over packed (B, 4, D) q1, q2, k1, k2."""

    def __init__(self, queue1: torch.Tensor, queue2: torch.Tensor):
        super().__init__()
        self.loss, self.queue1, self.queue2 = MoBYLoss(0.2), queue1, queue2

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.loss(*packed.unbind(1), self.queue1, self.queue2)


def test_two_processes_match_one_process_on_the_global_batch():
    q1, q2, k1, k2, queue1, queue2 = _inputs(B=8, D=6, K=5, seed=3)
    assert_matches_one_process(_FixedQueues(queue1, queue2), (torch.stack([q1, q2, k1, k2], dim=1),))
