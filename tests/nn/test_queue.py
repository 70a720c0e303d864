import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.nn.queue import KeyQueue
from tests.distributed import run_distributed


def unit_rows(n: int, dim: int, start: int) -> torch.Tensor:
    """n unit vectors: row i is the one-hot of (start + i) mod dim."""
    return F.one_hot((start + torch.arange(n)) % dim, dim).float()


def test_starts_with_unit_keys_in_buffers():
    queue = KeyQueue(10, 4)
    assert set(queue.state_dict()) == {"keys", "ptr"}
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(10))
    assert queue.ptr.item() == 0 and len(queue) == 10


def test_fifo_order_and_wrap_around():
    queue = KeyQueue(5, 3)
    a = torch.tensor([[2.0, 0, 0], [0, 3.0, 0]])
    b = torch.tensor([[0, 0, 1.0], [1.0, 1.0, 0]])
    c = torch.tensor([[0, 4.0, 4.0], [5.0, 0, 0]])
    queue.enqueue(a)
    queue.enqueue(b)
    assert queue.ptr.item() == 4
    torch.testing.assert_close(queue.keys[:4], F.normalize(torch.cat([a, b]), dim=1))  # stored normalised
    untouched = queue.keys[4].clone()
    queue.enqueue(c)  # c[0] fills the last slot, c[1] replaces the oldest key, a[0]
    assert queue.ptr.item() == 1
    torch.testing.assert_close(queue.keys[4], F.normalize(c[0], dim=0))
    torch.testing.assert_close(queue.keys[0], F.normalize(c[1], dim=0))
    torch.testing.assert_close(queue.keys[1:4], F.normalize(torch.cat([a[1:], b]), dim=1))
    assert not torch.equal(untouched, queue.keys[4])
    # oldest -> newest, read from ptr: a[1], b[0], b[1], c[0], c[1]
    order = torch.roll(queue.keys, -queue.ptr.item(), dims=0)
    torch.testing.assert_close(order, F.normalize(torch.cat([a[1:], b, c]), dim=1))


def test_a_batch_longer_than_the_queue_is_refused():
    with pytest.raises(SelfsupError, match="holds 3 keys but one step brings 4.*queue_size=4"):
        KeyQueue(3, 2).enqueue(torch.randn(4, 2))


def test_keys_reach_the_queue_without_gradient():
    queue = KeyQueue(4, 2)
    keys = torch.randn(2, 2, requires_grad=True)
    queue.enqueue(keys)
    assert not queue.keys.requires_grad


def _enqueue_on_each_rank(rank: int, world: int):
    torch.manual_seed(0)  # the same initial queue on every rank, as DDP's broadcast would give
    queue = KeyQueue(6, 16)
    for step in range(2):
        queue.enqueue(unit_rows(2, 16, start=10 * step + 2 * rank) * (rank + 1))  # each rank its own keys, unnormalised
    return queue.keys, queue.ptr


def test_enqueue_gathers_every_devices_keys_in_rank_order():
    results = run_distributed(_enqueue_on_each_rank, world=2)
    # step 0 fills slots 0-3 with rank 0's keys then rank 1's; step 1's four keys go to slots 4, 5, 0, 1
    for keys, ptr in results:
        assert ptr.item() == 2
        torch.testing.assert_close(keys[[4, 5, 0, 1]], torch.cat([unit_rows(2, 16, 10), unit_rows(2, 16, 12)]))
        torch.testing.assert_close(keys[2:4], unit_rows(2, 16, 2))
    torch.testing.assert_close(results[0][0], results[1][0])
