import math

import torch

from selfsup.losses.negative_cosine import BYOLLoss, SimSiamLoss, negative_cosine, normalized_mse
from tests.distributed import run_distributed


def naive_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = Σ a_k b_k / (sqrt(Σ a_k²) sqrt(Σ b_k²)) for two vectors, with explicit sums."""
    dot = sum(a[k] * b[k] for k in range(len(a)))
    return dot / (sum(x * x for x in a).sqrt() * sum(x * x for x in b).sqrt())


def naive_simsiam(p1, p2, z1, z2) -> torch.Tensor:
    """SimSiam eq. 2 per sample, z detached (sg): -1/2 [cos(p1, sg z2) + cos(p2, sg z1)], then the batch mean."""
    z1, z2 = z1.detach(), z2.detach()
    terms = [-0.5 * (naive_cos(p1[i], z2[i]) + naive_cos(p2[i], z1[i])) for i in range(len(p1))]
    return sum(terms) / len(terms)


def naive_byol(q1, q2, z1, z2) -> torch.Tensor:
    """BYOL eq. 2 symmetrised, per sample: ||q1/|q1| - z2/|z2|||² + ||q2/|q2| - z1/|z1|||², z detached."""
    z1, z2 = z1.detach(), z2.detach()

    def sq_dist(q, z):
        qn, zn = q / sum(x * x for x in q).sqrt(), z / sum(x * x for x in z).sqrt()
        return sum((qn[k] - zn[k]) ** 2 for k in range(len(q)))

    terms = [sq_dist(q1[i], z2[i]) + sq_dist(q2[i], z1[i]) for i in range(len(q1))]
    return sum(terms) / len(terms)


def _inputs(seed: int, B: int = 5, D: int = 4) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(B, D, dtype=torch.float64, requires_grad=True) for _ in range(4)]


def test_simsiam_loss_matches_the_equation_values_and_gradients():
    p1, p2, _, _ = inputs = _inputs(0)
    ours = SimSiamLoss()(*inputs)
    reference = naive_simsiam(*inputs)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(torch.autograd.grad(ours, (p1, p2)), torch.autograd.grad(reference, (p1, p2))):
        torch.testing.assert_close(mine, theirs)


def test_byol_loss_matches_the_equation_values_and_gradients():
    q1, q2, _, _ = inputs = _inputs(1)
    ours = BYOLLoss()(*inputs)
    reference = naive_byol(*inputs)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(torch.autograd.grad(ours, (q1, q2)), torch.autograd.grad(reference, (q1, q2))):
        torch.testing.assert_close(mine, theirs)


def test_targets_get_no_gradient_through_the_loss():
    for loss in (SimSiamLoss(), BYOLLoss()):
        p1, p2, z1, z2 = _inputs(2)
        loss(p1, p2, z1, z2).backward()
        assert z1.grad is None and z2.grad is None  # sg(z): no path from the loss to the targets
        assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_stop_gradient_leaves_only_the_predictor_path_to_a_shared_encoder():
    # z = W x and p = H z: with sg, dL/dW flows only through p; without sg it would also flow through z.
    torch.manual_seed(3)
    x1, x2 = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    W = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    H = torch.randn(4, 4, dtype=torch.float64)

    def grad_W(loss_fn, targets_as_constants=False):
        z1, z2 = x1 @ W.T, x2 @ W.T  # (6, 4)
        p1, p2 = z1 @ H.T, z2 @ H.T
        if targets_as_constants:
            z1, z2 = z1.detach(), z2.detach()
        return torch.autograd.grad(loss_fn(p1, p2, z1, z2), W)[0]

    def no_sg(p1, p2, z1, z2):
        return -0.5 * (torch.cosine_similarity(p1, z2).mean() + torch.cosine_similarity(p2, z1).mean())

    torch.testing.assert_close(grad_W(SimSiamLoss()), grad_W(naive_simsiam, targets_as_constants=True))
    torch.testing.assert_close(grad_W(no_sg, targets_as_constants=True), grad_W(SimSiamLoss()))
    assert not torch.allclose(grad_W(SimSiamLoss()), grad_W(no_sg))  # the z path would change the gradient


def test_the_functions_on_hand_made_vectors():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    z = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])  # cos: 0, -1, 1/sqrt(2)
    cos = torch.tensor([0.0, -1.0, 1 / math.sqrt(2)])
    torch.testing.assert_close(negative_cosine(p, z), -cos.mean())
    torch.testing.assert_close(normalized_mse(p, z), (2 - 2 * cos).mean())
    assert normalized_mse(z, z).abs() < 1e-6 and math.isclose(negative_cosine(z, z).item(), -1.0, rel_tol=1e-6)


def test_symmetric_in_the_two_views():
    p1, p2, z1, z2 = _inputs(4)
    for loss in (SimSiamLoss(), BYOLLoss()):
        torch.testing.assert_close(loss(p1, p2, z1, z2), loss(p2, p1, z2, z1))


LOSSES = (SimSiamLoss(), BYOLLoss())


def _loss_and_prediction_grads(loss_fn, p1, p2, z1, z2):
    p1, p2 = p1.clone().requires_grad_(), p2.clone().requires_grad_()
    loss = loss_fn(p1, p2, z1, z2)
    return loss.detach(), torch.autograd.grad(loss, (p1, p2))


def _on_shard(rank: int, world: int, inputs):
    shards = [x.chunk(world)[rank] for x in inputs]
    return [_loss_and_prediction_grads(loss_fn, *shards) for loss_fn in LOSSES]


def test_two_processes_match_one_process_on_the_global_batch():
    # per-sample means: DDP's average of the ranks' losses and gradients is the global batch's, with no gather
    inputs = tuple(x.detach() for x in _inputs(5, B=8))
    ranks = run_distributed(_on_shard, world=2, args=(inputs,))  # one spawn for both losses
    for k, loss_fn in enumerate(LOSSES):
        full, full_grads = _loss_and_prediction_grads(loss_fn, *inputs)
        torch.testing.assert_close(torch.stack([r[k][0] for r in ranks]).mean(), full)
        for i in range(2):
            torch.testing.assert_close(torch.cat([r[k][1][i] for r in ranks]) / 2, full_grads[i])
