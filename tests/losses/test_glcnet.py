import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.glcnet import GLCNetLoss, patch_vectors, style_vector
from tests.distributed import assert_matches_one_process


def naive_ntxent(z1, z2, tau):
    """NT-Xent with explicit loops: anchor i of 2N, positive its other view, denominator every k != i."""
    z = torch.cat([z1, z2])
    n = len(z1)
    losses = []
    for i in range(2 * n):
        def s(k):
            return torch.exp(F.cosine_similarity(z[i], z[k], dim=0) / tau)
        positive = (i + n) % (2 * n)
        losses.append(-torch.log(s(positive) / sum(s(k) for k in range(2 * n) if k != i)))
    return torch.stack(losses).mean()


def naive_glcnet(g1, g2, l1, l2, tau, w_g, w_l):
    """L = w_g·NT-Xent(images) + w_l·NT-Xent(patches), the patches listed image by image: (i, p) -> i·P + p."""
    B, P, D = l1.shape
    patches = [torch.stack([l[i, p] for i in range(B) for p in range(P)]) for l in (l1, l2)]
    loss_g, loss_l = naive_ntxent(g1, g2, tau), naive_ntxent(*patches, tau)
    return w_g * loss_g + w_l * loss_l, loss_g, loss_l


@pytest.mark.parametrize("tau, w_g, w_l", [(0.5, 0.5, 0.5), (0.2, 0.3, 1.0)])
def test_matches_naive_loops_values_and_gradients(tau, w_g, w_l):
    torch.manual_seed(0)
    inputs = [torch.randn(3, 6, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    inputs += [torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ours = GLCNetLoss(tau, w_g, w_l)(*inputs)
    reference = naive_glcnet(*inputs, tau, w_g, w_l)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    for g, r in zip(torch.autograd.grad(ours[0], inputs), torch.autograd.grad(reference[0], inputs)):
        torch.testing.assert_close(g, r)


def test_matched_orthogonal_patches_give_the_analytic_value():
    # every image and patch its own direction, identical in both views: positive similarity 1, the other 2N-2 zero
    B, P, tau = 2, 4, 0.5
    g = torch.eye(B, 8) * 3.0
    l = torch.eye(B * P, 16).reshape(B, P, 16)
    def expected(n):
        return -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    loss, loss_g, loss_l = GLCNetLoss(tau)(g, g, l, l)
    assert abs(loss_g.item() - expected(B)) < 1e-5 and abs(loss_l.item() - expected(B * P)) < 1e-5
    assert abs(loss.item() - 0.5 * (expected(B) + expected(B * P))) < 1e-5


def naive_style(a, eps):
    B, D = a.shape[:2]
    rows = []
    for b in range(B):
        mu = [sum(a[b, c].flatten()) / a[b, c].numel() for c in range(D)]
        sigma = [torch.sqrt(sum((v - mu[c]) ** 2 for v in a[b, c].flatten()) / a[b, c].numel() + eps) for c in range(D)]
        rows.append(torch.stack(mu + sigma))
    return torch.stack(rows)


def test_style_vector_is_channel_mean_and_std_values_and_gradients():
    torch.manual_seed(1)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    a_const = torch.zeros(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)  # σ = sqrt(eps), finite gradient
    for x in (a, a_const):
        ours, reference = style_vector(x, eps=1e-5), naive_style(x, 1e-5)
        torch.testing.assert_close(ours, reference)
        weights = torch.randn_like(ours)
        grad, = torch.autograd.grad((ours * weights).sum(), x)
        torch.testing.assert_close(grad, torch.autograd.grad((reference * weights).sum(), x)[0])
        assert torch.isfinite(grad).all()


def naive_patch_vectors(y, masks):
    """Each feature cell covers a (S/h) x (S/w) block of pixels; its weight is the share of that block in the patch."""
    B, D, h, w = y.shape
    S = masks.shape[-1]
    k = S // h
    out = []
    for b in range(B):
        rows = []
        for p in range(masks.shape[1]):
            weights = [[masks[b, p, i * k:(i + 1) * k, j * k:(j + 1) * k].double().mean() for j in range(w)]
                       for i in range(h)]
            total = sum(weights[i][j] for i in range(h) for j in range(w))
            rows.append(sum(weights[i][j] * y[b, :, i, j] for i in range(h) for j in range(w)) / total)
        out.append(torch.stack(rows))
    return torch.stack(out)


def test_patch_vectors_average_the_map_over_each_patch_values_and_gradients():
    torch.manual_seed(2)
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:7, 3:9] = True  # straddles cells: fractional weights
    masks[0, 1, :, :] = True  # the whole view: the plain mean
    masks[0, 2, 12:, 12:] = True  # exactly one cell
    masks[1, 0, 5:6, 5:6] = True  # one pixel
    masks[1, 1, 0:16:5, 0:16:3] = True  # scattered pixels
    masks[1, 2, 8:, :8] = True
    ours, reference = patch_vectors(y, masks), naive_patch_vectors(y, masks)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours[0, 1], y[0].mean((1, 2)))
    torch.testing.assert_close(ours[0, 2], y[0, :, 3, 3])
    weights = torch.randn_like(ours)
    grad, = torch.autograd.grad((ours * weights).sum(), y)
    torch.testing.assert_close(grad, torch.autograd.grad((reference * weights).sum(), y)[0])


def test_an_empty_patch_is_refused():
    masks = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    with pytest.raises(ValueError, match="selects no pixel"):
        patch_vectors(torch.randn(1, 3, 2, 2), masks)


class _Total(nn.Module):
    def forward(self, g1, g2, l1, l2):
        return GLCNetLoss(0.5)(g1, g2, l1, l2)[0]


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(3)
    inputs = (torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64),
              torch.randn(4, 3, 6, dtype=torch.float64), torch.randn(4, 3, 6, dtype=torch.float64))
    assert_matches_one_process(_Total(), inputs)
