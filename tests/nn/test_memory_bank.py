import torch
import torch.nn.functional as F

from selfsup.nn.memory_bank import MemoryBank
from tests.distributed import run_distributed


def test_starts_with_random_unit_rows_in_a_buffer():
    torch.manual_seed(0)
    memory = MemoryBank(50, 16)
    torch.testing.assert_close(memory.bank.norm(dim=1), torch.ones(50))
    assert "bank" in memory.state_dict() and not list(memory.parameters())
    assert (memory.bank @ memory.bank.T - torch.eye(50)).abs().max() < 0.95  # no two rows alike
    assert len(memory) == 50


def test_update_is_the_normalised_running_average_of_the_batch_rows_only():
    torch.manual_seed(1)
    memory = MemoryBank(10, 4)
    before = memory.bank.clone()
    rows = memory(torch.tensor([2, 7]))  # a copy: the update below must not change it
    indices, f = torch.tensor([7, 2]), F.normalize(torch.randn(2, 4), dim=1)
    for momentum in (0.5, 0.9):
        memory.bank.copy_(before)
        memory.update(indices, f, momentum=momentum)
        for j, i in enumerate(indices.tolist()):
            expected = momentum * before[i] + (1 - momentum) * f[j]
            torch.testing.assert_close(memory.bank[i], expected / expected.norm())
        untouched = [i for i in range(10) if i not in (2, 7)]
        torch.testing.assert_close(memory.bank[untouched], before[untouched])
    torch.testing.assert_close(rows, before[[2, 7]])


def test_state_dict_round_trip():
    saved = MemoryBank(8, 3)
    saved.update(torch.tensor([1]), torch.ones(1, 3))
    restored = MemoryBank(8, 3)
    restored.load_state_dict(saved.state_dict())
    torch.testing.assert_close(restored.bank, saved.bank)


def _update(rank, world):
    torch.manual_seed(0)  # same initial bank on every rank, as DDP starts them
    memory = MemoryBank(6, 3)
    before = memory.bank.clone()
    indices = torch.tensor([rank, 3 + rank])  # rank 0 holds images 0 and 3, rank 1 images 1 and 4
    memory.update(indices, torch.full((2, 3), float(rank + 1)))
    return before, memory.bank


def test_two_processes_update_every_rank_rows_on_every_rank():
    (before, bank0), (_, bank1) = run_distributed(_update, world=2)
    torch.testing.assert_close(bank0, bank1)
    for rank, rows in ((0, [0, 3]), (1, [1, 4])):
        expected = F.normalize(0.5 * before[rows] + 0.5 * float(rank + 1), dim=1)
        torch.testing.assert_close(bank0[rows], expected)
    torch.testing.assert_close(bank0[[2, 5]], before[[2, 5]])
