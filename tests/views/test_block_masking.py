import pytest
import torch

from selfsup.views.block_masking import block_masking
from selfsup.views.masking import random_masking


def neighbours_hidden(mask: torch.Tensor, grid: tuple[int, int]) -> float:
    """Of the pairs of side-by-side patches with at least one hidden, the share with both hidden (about 1/3 for
    uniform masking of half the patches, near 1 for large blocks)."""
    m = mask.view(-1, *grid)
    both = (m[:, :, 1:] * m[:, :, :-1]).sum() + (m[:, 1:] * m[:, :-1]).sum()
    either = (m[:, :, 1:] + m[:, :, :-1]).clamp(max=1).sum() + (m[:, 1:] + m[:, :-1]).clamp(max=1).sum()
    return float(both / either)


@pytest.mark.parametrize("grid, min_block, hidden", [((14, 14), 16, 98), ((7, 7), 4, 24), ((4, 4), 1, 8)])
def test_every_image_hides_exactly_the_ratio_in_blocks(grid, min_block, hidden):
    mask = block_masking(300, grid, 0.5, min_block, 0.3, torch.Generator().manual_seed(0))
    assert mask.shape == (300, grid[0] * grid[1]) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask.sum(dim=1), torch.full((300,), float(hidden)))  # CAE: 98 of 196
    _, uniform = random_masking(300, grid[0] * grid[1], 0.5, torch.Generator().manual_seed(0))
    assert neighbours_hidden(mask, grid) > neighbours_hidden(uniform, grid) + 0.15  # blocks, not scattered patches


def test_square_blocks_of_the_whole_budget_are_one_square():
    # 16 of 196 patches, blocks of at least 16 with aspect 1: s = 16, a 4 x 4 square at a random place
    mask = block_masking(50, (14, 14), 16 / 196, 16, 1.0, torch.Generator().manual_seed(1)).view(50, 14, 14)
    tops, lefts = set(), set()
    for m in mask:
        rows, cols = m.nonzero(as_tuple=True)
        top, left = int(rows.min()), int(cols.min())
        assert torch.equal(m[top:top + 4, left:left + 4], torch.ones(4, 4)) and m.sum() == 16
        tops.add(top), lefts.add(left)
    assert len(tops) > 3 and len(lefts) > 3  # the place is drawn


def test_masks_are_reproducible_from_the_seed_and_differ_between_images():
    a = block_masking(8, (7, 7), 0.5, 4, 0.3, torch.Generator().manual_seed(3))
    b = block_masking(8, (7, 7), 0.5, 4, 0.3, torch.Generator().manual_seed(3))
    c = block_masking(8, (7, 7), 0.5, 4, 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a[0], a[1])
    torch.manual_seed(5)  # no generator: torch's global one
    d = block_masking(8, (7, 7), 0.5, 4, 0.3)
    torch.manual_seed(5)
    assert torch.equal(d, block_masking(8, (7, 7), 0.5, 4, 0.3))


def test_a_ratio_that_hides_nothing_or_everything_and_a_bad_aspect_are_refused():
    with pytest.raises(ValueError, match="must hide at least one and leave at least one"):
        block_masking(2, (4, 4), 1.0)
    with pytest.raises(ValueError, match="must hide at least one"):
        block_masking(2, (4, 4), 0.01)
    with pytest.raises(ValueError, match=r"min_aspect 1.5 must be in \(0, 1\]"):
        block_masking(2, (4, 4), 0.5, min_aspect=1.5)
