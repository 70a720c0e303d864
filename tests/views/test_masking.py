import pytest
import torch

from selfsup.views.masking import grid_masking, random_masking


def test_random_masking_hides_the_ratio_of_each_image_and_keeps_the_rest_in_order():
    keep, mask = random_masking(64, 49, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (64, 12) and mask.shape == (64, 49)  # round(0.75 * 49) = 37 hidden
    assert torch.equal(mask.sum(dim=1), torch.full((64,), 37.0))
    assert torch.equal(keep, keep.sort(dim=1).values)
    for k, m in zip(keep, mask):
        assert torch.equal(torch.nonzero(m == 0).flatten(), k)


def test_random_masking_is_uniform_over_patches():
    _, mask = random_masking(20000, 16, 0.5, torch.Generator().manual_seed(1))
    frequency = mask.mean(dim=0)  # each patch is hidden with probability 0.5; std 0.0035
    assert torch.allclose(frequency, torch.full((16,), 0.5), atol=0.015)


def test_masks_are_reproducible_from_the_seed():
    a = random_masking(4, 49, 0.75, torch.Generator().manual_seed(3))
    b = random_masking(4, 49, 0.75, torch.Generator().manual_seed(3))
    c = random_masking(4, 49, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.equal(grid_masking(4, (7, 7), 2, 0.6, torch.Generator().manual_seed(3)),
                       grid_masking(4, (7, 7), 2, 0.6, torch.Generator().manual_seed(3)))


def test_random_masking_must_leave_a_patch():
    with pytest.raises(ValueError, match="must leave at least one"):
        random_masking(2, 4, 1.0)


def test_grid_masking_hides_whole_squares_of_the_ratio():
    mask = grid_masking(32, (8, 8), 2, 0.6, torch.Generator().manual_seed(0)).view(32, 8, 8)
    squares = mask.view(32, 4, 2, 4, 2)
    assert torch.equal(squares.amin(dim=(2, 4)), squares.amax(dim=(2, 4)))  # every 2x2 square all or nothing
    assert torch.equal(squares.amax(dim=(2, 4)).sum(dim=(1, 2)), torch.full((32,), 10.0))  # ceil(0.6 * 16)


def test_grid_masking_cuts_squares_at_an_odd_edge():
    # 7 x 7 patches in 2 x 2 squares: a 4 x 4 grid of squares, the last row and column half outside
    mask = grid_masking(1000, (7, 7), 2, 0.6, torch.Generator().manual_seed(0))
    assert mask.shape == (1000, 49)
    # ceil(0.6 * 16) = 10 of 16 squares hidden, each square equally likely: on average 10/16 of the 49 patches
    # (full squares hold 4, edge ones 2, the corner 1); the mean over 1000 masks has a std of ~0.06
    assert abs(float(mask.sum(dim=1).mean()) - 10 / 16 * 49) < 0.25
