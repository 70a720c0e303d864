import pytest
import torch

from selfsup.losses.sadlcd import SaDLCDLoss
from tests.distributed import assert_matches_one_process


def cos(a, b):
    return (a * b).sum() / torch.sqrt((a * a).sum()) / torch.sqrt((b * b).sum())


def naive_sadlcd(p1, p2, z1, z2, h1, h2, ps, valid, push_weight, swap_weight):
    """The three terms with explicit loops over images, classes and points (float64), z under stop-gradient."""
    B, _, N, _ = p1.shape
    z1, z2 = z1.detach(), z2.detach()
    pull, n_pull, push, n_push, swap, n_swap = 0, 0, 0, 0, 0, 0
    for b in range(B):
        for c in range(2):
            if valid[b, c]:
                for k in range(N):
                    pull = pull + 0.5 * ((2 - 2 * cos(p1[b, c, k], z2[b, c, k])) + (2 - 2 * cos(p2[b, c, k],
                                                                                              z1[b, c, k])))
                    n_pull += 1
        if valid[b, 0] and valid[b, 1]:
            per_view = []
            for h in (h1, h2):
                per_view.append(sum(1 + cos(h[b, 1, k], h[b, 0, l]) for k in range(N) for l in range(N)) / N**2)
            push = push + 0.5 * (per_view[0] + per_view[1])
            n_push += 1
        if valid[b, 1]:
            for k in range(N):
                swap = swap + (2 - 2 * cos(ps[b, k], z1[b, 1, k]))
                n_swap += 1
    pull, push, swap = pull / max(n_pull, 1), push / max(n_push, 1), swap / max(n_swap, 1)
    return pull + push_weight * push + swap_weight * swap, pull, push, swap


def inputs(B=4, N=3, D=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(B, 2, N, D)] * 6 + [(B, N, D)]
    return [torch.randn(*s, dtype=torch.float64, generator=generator, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("valid, push_weight, swap_weight", [
    ([[1, 1], [1, 1], [1, 1], [1, 1]], 1.0, 0.5),
    ([[1, 0], [1, 1], [0, 1], [1, 1]], 1.0, 0.5),  # an image without foreground, one without background
    ([[1, 1], [1, 0], [1, 1], [0, 0]], 0.3, 2.0),
])
def test_matches_naive_loops_values_and_gradients(valid, push_weight, swap_weight):
    tensors = inputs()
    valid = torch.tensor(valid, dtype=torch.bool)
    ours = SaDLCDLoss(push_weight, swap_weight)(*tensors, valid)
    reference = naive_sadlcd(*tensors, valid, push_weight, swap_weight)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64))
    grads = torch.autograd.grad(ours[0], tensors, allow_unused=True)
    expected = torch.autograd.grad(reference[0], tensors, allow_unused=True)
    for g, r in zip(grads, expected):
        torch.testing.assert_close(g if g is not None else torch.zeros(()), r if r is not None else torch.zeros(()))


def test_targets_get_no_gradient_and_features_are_pushed_on_both_sides():
    p1, p2, z1, z2, h1, h2, ps = tensors = inputs()
    loss = SaDLCDLoss()(*tensors, torch.ones(4, 2, dtype=torch.bool))[0]
    g = dict(zip(("p1", "p2", "z1", "z2", "h1", "h2", "ps"), torch.autograd.grad(loss, tensors, allow_unused=True)))
    assert g["z1"] is None and g["z2"] is None  # stop-gradient: the projections are targets only
    for name in ("p1", "p2", "ps"):
        assert g[name].abs().sum() > 0
    assert g["h1"][:, 0].abs().sum() > 0 and g["h1"][:, 1].abs().sum() > 0  # both classes move apart


def test_analytic_values():
    B, N, D = 2, 4, 6
    z = torch.randn(B, 2, N, D, dtype=torch.float64)
    h = torch.randn(B, 1, 1, D, dtype=torch.float64).expand(B, 2, N, D).clone()
    h[:, 1] *= -1  # foreground opposite to background: cos -1, push 0
    valid = torch.ones(B, 2, dtype=torch.bool)
    loss, pull, push, swap = SaDLCDLoss()(z, z, z, z, h, h, z[:, 1], valid)
    assert abs(float(pull)) < 1e-12 and abs(float(push)) < 1e-12 and abs(float(swap)) < 1e-12
    loss, pull, push, swap = SaDLCDLoss()(z, z, -z, -z, h.abs(), h.abs(), z[:, 1], valid)  # targets opposite
    assert float(pull) == pytest.approx(4.0) and float(push) == pytest.approx(2.0) and float(swap) == pytest.approx(4)
    assert float(loss) == pytest.approx(4.0 + 2.0 + 0.5 * 4.0)


def test_no_valid_point_gives_zero_and_still_backpropagates():
    tensors = inputs()
    loss, pull, push, swap = SaDLCDLoss()(*tensors, torch.zeros(4, 2, dtype=torch.bool))
    assert [float(t.detach()) for t in (loss, pull, push, swap)] == [0.0] * 4
    loss.backward()
    assert all(t.grad is None or torch.all(t.grad == 0) for t in tensors)


class _EveryPointValid(torch.nn.Module):
    def forward(self, p1, p2, z1, z2, h1, h2, ps):
        loss = SaDLCDLoss()(p1, p2, z1, z2, h1, h2, ps, torch.ones(len(p1), 2, dtype=torch.bool))[0]
        return loss + 0 * (z1.sum() + z2.sum())  # the targets (stop-gradient) in the graph: the harness grads them


def test_two_processes_match_one_process_on_the_global_batch():
    """Nothing is gathered: every term is a mean over images, so the ranks' mean (DDP's) is the global batch's."""
    assert_matches_one_process(_EveryPointValid(), tuple(t.detach() for t in inputs(B=4)))
