import math

import torch

from selfsup.losses.constcl import ConSTCLLoss, RegionInfoNCELoss
from tests.distributed import assert_matches_one_process


def naive_region_infonce(z: torch.Tensor, h: torch.Tensor, tau: float) -> torch.Tensor:
    """−log exp(cos(z_n, h_n)/τ) / Σ_m exp(cos(z_n, h_m)/τ), averaged over n, one region at a time."""
    total = 0.0
    for n in range(len(z)):
        sims = [torch.dot(z[n], h[m]) / (z[n].norm() * h[m].norm()) / tau for m in range(len(h))]
        total = total - (sims[n] - torch.logsumexp(torch.stack(sims), 0))
    return total / len(z)


def naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss over the 2B anchors, one at a time: the positive among the 2B - 1 other views."""
    z = torch.cat([z1, z2])
    B, total = len(z1), 0.0
    for i in range(2 * B):
        sims = {j: torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm()) / tau for j in range(2 * B) if j != i}
        total = total - (sims[(i + B) % (2 * B)] - torch.logsumexp(torch.stack(list(sims.values())), 0))
    return total / (2 * B)


def leaves(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


def test_region_infonce_matches_the_naive_loop_values_and_gradients():
    z, h = leaves((12, 6), (12, 6))  # 3 clips x 4 regions
    loss = RegionInfoNCELoss(0.2)(z, h)
    z_ref, h_ref = (t.detach().clone().requires_grad_() for t in (z, h))
    reference = naive_region_infonce(z_ref, h_ref, 0.2)
    torch.testing.assert_close(loss, reference)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(z.grad, z_ref.grad)
    torch.testing.assert_close(h.grad, h_ref.grad)  # the targets get gradient too (no stop-gradient)
    assert h.grad.abs().sum() > 0


def test_region_infonce_by_hand():
    # two regions, each predicted exactly (cosine 1) and orthogonal to the other (cosine 0): −log e^{1/τ}/(e^{1/τ}+1)
    z = torch.eye(2)
    assert math.isclose(RegionInfoNCELoss(0.5)(z, z).item(), math.log(1 + math.exp(-2)), rel_tol=1e-6)


def test_constcl_loss_is_the_weighted_sum_of_both_branches():
    g1, g2, z12, h2, z21, h1 = leaves((4, 5), (4, 5), (8, 3), (8, 3), (8, 3), (8, 3))
    out = ConSTCLLoss(0.1, 0.2, 1.0, 0.001)(g1, g2, z12, h2, z21, h1)
    refs = [t.detach().clone().requires_grad_() for t in (g1, g2, z12, h2, z21, h1)]
    l_global = naive_ntxent(refs[0], refs[1], 0.1)
    l_local = (naive_region_infonce(refs[2], refs[3], 0.2) + naive_region_infonce(refs[4], refs[5], 0.2)) / 2
    reference = 1.0 * l_global + 0.001 * l_local
    torch.testing.assert_close(out["global"], l_global.detach())
    torch.testing.assert_close(out["local"], l_local.detach())
    torch.testing.assert_close(out["loss"], reference)
    out["loss"].backward()
    reference.backward()
    for ours, ref in zip((g1, g2, z12, h2, z21, h1), refs):
        torch.testing.assert_close(ours.grad, ref.grad)
    assert z12.grad.abs().max() < 0.01 * g1.grad.abs().max()  # the local branch weighs 1/1000


def test_two_processes_match_one_process_on_the_global_batch():
    z, h = (t.detach() for t in leaves((8, 4), (8, 4)))
    assert_matches_one_process(RegionInfoNCELoss(0.2), (z, h))
