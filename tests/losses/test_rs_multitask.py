import math

import pytest
import torch
from torch import nn

from selfsup.losses.rs_multitask import RSMultitaskLoss, inpainting_loss
from tests.distributed import assert_matches_one_process


def naive_inpainting(x, x_tilde, x_hat):
    """1/N Σ over every value of |x − x_tilde| · |x − x_hat|, the weight a constant, one value at a time."""
    B, C, H, W = x.shape
    total = 0
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    weight = abs(float(x[b, c, i, j] - x_tilde[b, c, i, j]))
                    total = total + weight * torch.abs(x[b, c, i, j] - x_hat[b, c, i, j])
    return total / (B * C * H * W)


def naive_cross_entropy(logits, k):
    losses = [-(logits[b, int(k[b])] - torch.log(sum(torch.exp(v) for v in logits[b]))) for b in range(len(k))]
    return sum(losses) / len(losses)


def naive_ntxent(z1, z2, tau):
    """Anchor i of 2N, its positive the other view, the denominator every k != i; cosines written out."""
    z = torch.cat([z1, z2])
    n = len(z1)

    def s(i, k):
        return torch.exp(torch.dot(z[i], z[k]) / (torch.sqrt(torch.dot(z[i], z[i]) * torch.dot(z[k], z[k]))) / tau)
    losses = [-torch.log(s(i, (i + n) % (2 * n)) / sum(s(i, k) for k in range(2 * n) if k != i)) for i in range(2 * n)]
    return sum(losses) / (2 * n)


def inputs(B=3, C=2, S=5, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, S, S, generator=g, dtype=torch.float64)
    x_tilde = x.clone()
    x_tilde[:, :, 1:3, 2:4] += torch.randn(B, C, 2, 2, generator=g, dtype=torch.float64)  # a corrupted square
    x_hat = torch.randn(B, C, S, S, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(B, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randint(6, (B,), generator=g)
    z1, z2 = (torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    return x, x_tilde, x_hat, logits, k, z1, z2


def test_inpainting_loss_is_the_weighted_l1_of_the_naive_loop_values_and_gradients():
    x, x_tilde, x_hat, *_ = inputs()
    ours, reference = inpainting_loss(x, x_tilde, x_hat), naive_inpainting(x, x_tilde, x_hat)
    torch.testing.assert_close(ours, reference)
    grad, = torch.autograd.grad(ours, x_hat)
    torch.testing.assert_close(grad, torch.autograd.grad(reference, x_hat)[0])
    unchanged = (x == x_tilde)
    assert unchanged.any() and (grad[unchanged] == 0).all()  # weight 0: pixels outside the square do not count
    assert (grad[~unchanged] != 0).all()


def test_inpainting_loss_is_zero_without_corruption_and_for_a_perfect_restoration():
    x, x_tilde, x_hat, *_ = inputs()
    assert inpainting_loss(x, x, x_hat).item() == 0
    assert inpainting_loss(x, x_tilde, x.clone()).item() == 0


def test_the_weight_carries_no_gradient():
    x, x_tilde, x_hat, *_ = inputs()
    x, x_tilde = x.requires_grad_(), x_tilde.requires_grad_()
    grad_x, grad_tilde = torch.autograd.grad(inpainting_loss(x, x_tilde, x_hat), (x, x_tilde), allow_unused=True)
    assert grad_tilde is None  # the corrupted input is only a weight, and the weight is a constant
    torch.testing.assert_close(grad_x, -torch.autograd.grad(inpainting_loss(x.detach(), x_tilde, x_hat), x_hat)[0])


@pytest.mark.parametrize("tau, weights", [(1.0, (20.0, 1.0, 1.0)), (0.3, (2.0, 0.5, 3.0))])
def test_total_matches_naive_loops_values_and_gradients(tau, weights):
    x, x_tilde, x_hat, logits, k, z1, z2 = inputs(seed=1)
    ours = RSMultitaskLoss(tau, *weights)(x, x_tilde, x_hat, logits, k, z1, z2)
    parts = naive_inpainting(x, x_tilde, x_hat), naive_cross_entropy(logits, k), naive_ntxent(z1, z2, tau)
    reference = (sum(w * p for w, p in zip(weights, parts)), *parts)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    leaves = (x_hat, logits, z1, z2)
    for g, r in zip(torch.autograd.grad(ours[0], leaves), torch.autograd.grad(reference[0], leaves)):
        torch.testing.assert_close(g, r)


def test_paper_defaults_and_the_analytic_instance_value():
    loss = RSMultitaskLoss()
    assert loss.weights == (20.0, 1.0, 1.0) and loss.ntxent.temperature == 1.0
    B = 3
    z = torch.eye(B, 5, dtype=torch.float64)  # each image its own direction, the same in both views
    x = torch.zeros(B, 1, 2, 2, dtype=torch.float64)
    logits = torch.zeros(B, 6, dtype=torch.float64)  # uniform: CE = log 6
    total, loss_inp, loss_tr, loss_inst = loss(x, x, x, logits, torch.zeros(B, dtype=torch.long), z, z)
    expected = -math.log(math.e / (math.e + 2 * B - 2))  # cos 1 with the positive, 0 with the 2B-2 others, τ 1
    assert loss_inp.item() == 0 and abs(loss_tr.item() - math.log(6)) < 1e-12
    assert abs(loss_inst.item() - expected) < 1e-12 and abs(total.item() - math.log(6) - expected) < 1e-12


class _Total(nn.Module):
    def forward(self, x, x_tilde, x_hat, logits, k, z1, z2):
        total = RSMultitaskLoss()(x, x_tilde, x_hat, logits, k.long(), z1, z2)[0]
        return total + 0 * (x_tilde.sum() + k.sum())  # the harness differentiates every input: keep these in the graph


def test_two_processes_match_one_process_on_the_global_batch():
    x, x_tilde, x_hat, logits, k, z1, z2 = inputs(B=4, seed=3)
    # the harness splits float64 tensors; the labels travel as float64 and are cast back
    assert_matches_one_process(_Total(), (x, x_tilde, x_hat.detach(), logits.detach(), k.double(), z1.detach(),
                                          z2.detach()))
