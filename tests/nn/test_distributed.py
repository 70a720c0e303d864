import torch

from selfsup.nn import gather_with_grad, rank, world_size
from tests.distributed import run_distributed


def test_single_process_is_identity():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x and world_size() == 1 and rank() == 0


def _gather(r: int, world: int):
    x = torch.full((2, 3), float(r), requires_grad=True)
    gathered = gather_with_grad(x)
    # weight each slice by (rank + 1): the gradient reaching rank r sums every rank's use of it
    weights = torch.arange(1, world + 1, dtype=torch.float).repeat_interleave(2)[:, None]
    (gathered * weights).sum().backward()
    return gathered.detach(), x.grad


def test_gather_orders_by_rank_and_returns_gradients_to_their_owner():
    results = run_distributed(_gather, world=2)
    expected = torch.tensor([0.0, 0.0, 1.0, 1.0])[:, None].expand(4, 3)
    for gathered, grad in results:
        torch.testing.assert_close(gathered, expected)
    # both ranks' losses use rank r's slice with weight r+1, so its gradient is 2(r+1)
    for r, (_, grad) in enumerate(results):
        torch.testing.assert_close(grad, torch.full((2, 3), 2.0 * (r + 1)))
