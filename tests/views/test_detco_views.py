import pytest
import torch

from selfsup.views.detco import DetCoViews, jigsaw


def test_jigsaw_cuts_nine_tiles_that_cover_the_crop_row_by_row():
    crop = torch.arange(2 * 2 * 12 * 12).reshape(2, 2, 12, 12)  # every pixel value says where it sits
    tiles = jigsaw(crop)
    assert tiles.shape == (2, 9, 2, 4, 4)
    for r in range(3):
        for c in range(3):
            assert torch.equal(tiles[:, 3 * r + c], crop[:, :, 4 * r: 4 * r + 4, 4 * c: 4 * c + 4]), (r, c)
    assert torch.equal(tiles.flatten().sort().values, crop.flatten())  # each pixel exactly once


def test_patch_size_scales_with_the_image():
    assert DetCoViews(224, 3).patch_size == 64  # the paper's 64 px at 224 px
    assert DetCoViews(28, 1).patch_size == 8
    assert DetCoViews(28, 1, patch_size=5).patch_size == 5


def _reassembled(tiles: torch.Tensor) -> torch.Tensor:
    """(9, 1, p, p) normalised patches -> (3p, 3p) in [0, 1], tile 3r + c put back at grid cell (r, c)."""
    p = tiles.shape[-1]
    return (tiles[:, 0] * 0.5 + 0.5).reshape(3, 3, p, p).permute(0, 2, 1, 3).reshape(3 * p, 3 * p)


def _ramps(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """One-channel images whose value is 5 x the row, and 5 x the column."""
    ramp = (torch.arange(size) * 5).to(torch.uint8)
    return ramp[None, :, None].expand(1, size, size).clone(), ramp[None, None, :].expand(1, size, size).clone()


@pytest.mark.parametrize("batched", [False, True])
def test_local_view_is_the_jigsaw_of_one_crop(batched):
    views = DetCoViews(24, 1, jitter_strength=0.0)  # one channel, no jitter, no blur at 7 px: geometry only
    rows, cols = _ramps()

    def local(image, seed):
        torch.manual_seed(seed)
        if batched:
            return views.batch(image[None])[2][0]
        return views(image)[2]

    for seed in range(10):
        by_row, by_col = _reassembled(local(rows, seed)), _reassembled(local(cols, seed))  # the same crop, flip
        assert by_row.shape == (21, 21)
        # put back in grid order the tiles make one crop of the image: the row ramp stays constant along each row
        # and rises down the rows, the column ramp constant down each column and monotone along the row
        assert (by_row.amax(1) - by_row.amin(1)).max() < 1e-3, seed
        assert (by_row.diff(dim=0) > -1e-4).all() and by_row[-1, 0] - by_row[0, 0] > 0.1, seed
        assert (by_col.amax(0) - by_col.amin(0)).max() < 1e-3, seed
        steps = by_col[0].diff()
        assert (steps > -1e-4).all() or (steps < 1e-4).all(), seed  # flipped or not, as one piece
        assert (by_col[0, -1] - by_col[0, 0]).abs() > 0.1, seed


@pytest.mark.parametrize("batched", [False, True])
def test_every_patch_gets_its_own_colour(batched):
    torch.manual_seed(0)
    views = DetCoViews(32, 3, jitter_strength=1.0)
    grey = torch.full((3, 40, 40), 128, dtype=torch.uint8)
    out = views.batch(grey[None]) if batched else [v[None] for v in views(grey)]
    g_q, g_k, l_q, l_k = out
    assert g_q.shape == g_k.shape == (1, 3, 32, 32) and l_q.shape == l_k.shape == (1, 9, 3, 9, 9)
    assert len({round(v, 4) for v in l_q[0].mean((1, 2, 3)).tolist()}) > 3  # flat patches, coloured differently
    assert not torch.equal(l_q, l_k)
