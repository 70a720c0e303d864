import torch
import torch.distributed as dist

from selfsup.losses.barlow_twins import BarlowTwinsLoss, batch_normalize
from tests.distributed import assert_matches_one_process, run_distributed


def naive_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> torch.Tensor:
    """Zbontar et al. eq. 1-2 with explicit loops: standardise every dimension over the batch, then
    c_ij = Σ_b z1[b,i] z2[b,j] / N and L = Σ_i (1 - c_ii)² + λ Σ_{i≠j} c_ij²."""
    N, D = z1.shape

    def standardise(z):
        columns = []
        for d in range(D):
            mean = sum(z[b, d] for b in range(N)) / N
            var = sum((z[b, d] - mean) ** 2 for b in range(N)) / N
            columns.append(torch.stack([(z[b, d] - mean) / torch.sqrt(var + eps) for b in range(N)]))
        return torch.stack(columns, dim=1)

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(D):
        for j in range(D):
            c_ij = sum(a[n, i] * b[n, j] for n in range(N)) / N
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij ** 2)
    return loss


def test_matches_naive_loop_values_and_gradients():
    torch.manual_seed(0)
    for lambd in (0.0051, 0.5):
        z1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
        ours = BarlowTwinsLoss(lambd)(z1, z2)
        reference = naive_barlow_twins(z1, z2, lambd)
        torch.testing.assert_close(ours, reference)
        for g, r in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(reference, (z1, z2))):
            torch.testing.assert_close(g, r)
    assert ours.dtype == torch.float64  # float64 in, float64 out (never lowered to float32)


def test_decorrelated_identical_views_give_zero_and_opposite_views_4d():
    # Columns of a 4x4 Hadamard matrix without the constant one: mean 0, variance 1, orthogonal -> c = I.
    h = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    z = 3.0 * h + 7.0  # per-dimension scale and shift are undone by the batch normalisation
    loss = BarlowTwinsLoss(0.0051, eps=0.0)
    assert abs(loss(z, z.clone()).item()) < 1e-12
    assert abs(loss(z, -z).item() - 3 * 4.0) < 1e-12  # c = -I: Σ_i (1 - (-1))² = 4D


def test_batch_normalize_is_batchnorm_without_affine():
    torch.manual_seed(1)
    z = torch.randn(16, 5) * 4 + 2
    torch.testing.assert_close(batch_normalize(z, 16), torch.nn.BatchNorm1d(5, affine=False)(z))


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(2)
    z1, z2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    assert_matches_one_process(BarlowTwinsLoss(0.1), (z1, z2))


def _graph_cutting_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.1) -> torch.Tensor:
    """The common bug: the global BN is right, but c is summed with the non-autograd all_reduce."""
    n = z1.shape[0] * dist.get_world_size()
    c = batch_normalize(z1, n).T @ batch_normalize(z2, n)
    c.div_(n)
    dist.all_reduce(c)
    return (1 - c.diagonal()).pow(2).sum() + lambd * (c.pow(2).sum() - c.diagonal().pow(2).sum())


def _shard_grads(rank: int, world: int, loss_fn, z1, z2):
    shards = [z.chunk(world)[rank].clone().requires_grad_() for z in (z1, z2)]
    loss = loss_fn(*shards)
    return loss.detach(), torch.autograd.grad(loss, shards)


def test_a_graph_cutting_all_reduce_would_shrink_gradients_by_the_world_size():
    # Shows the 2-process test above can fail: the naive version has the right loss but each rank
    # back-propagates only its own term of c, so after DDP's mean the gradient is 1/W of the true one.
    torch.manual_seed(3)
    z1, z2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    full = [z1.clone().requires_grad_(), z2.clone().requires_grad_()]
    full_loss = BarlowTwinsLoss(0.1)(*full)
    full_grads = torch.autograd.grad(full_loss, full)
    world = 2
    for loss_fn, factor in ((_graph_cutting_loss, 1 / world), (BarlowTwinsLoss(0.1), 1.0)):
        results = run_distributed(_shard_grads, world=world, args=(loss_fn, z1, z2))
        for loss, _ in results:
            torch.testing.assert_close(loss, full_loss.detach())  # the values agree either way
        for i in range(2):
            ddp_grad = torch.cat([grads[i] for _, grads in results]) / world
            torch.testing.assert_close(ddp_grad, factor * full_grads[i])
