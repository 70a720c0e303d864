import numpy as np
import pytest
import torch

from selfsup.data import ArrayImageSet
from selfsup.data import segments as segments_module
from selfsup.data.segments import MaskRecipe, SegmentedImages, segment
from selfsup.errors import SelfsupError


def _images(n: int = 6, size: int = 48) -> ArrayImageSet:
    rng = np.random.default_rng(0)
    images = np.zeros((n, 3, size, size), dtype=np.uint8)
    for i in range(n):  # two flat regions with a little noise: FH must find the boundary
        images[i, :, :, : size // 2] = rng.integers(0, 30, (3, size, size // 2))
        images[i, :, :, size // 2:] = 200 + rng.integers(0, 30, (3, size, size - size // 2))
    return ArrayImageSet(torch.from_numpy(images), name="two-halves")


def test_fh_finds_the_two_regions_and_ids_are_renumbered_from_zero():
    ids = segment(_images()[0][0], MaskRecipe("fh"))
    assert ids.dtype == np.int16 and ids.shape == (48, 48)
    assert ids[0, 0] == 0 and len(np.unique(ids)) >= 2
    assert len(np.unique(ids[:, :20])) == 1 and len(np.unique(ids[:, 28:])) == 1 and ids[0, 0] != ids[0, 47]


def test_grid_and_slic():
    grid = segment(torch.zeros(1, 8, 8, dtype=torch.uint8), MaskRecipe("grid", grid=4))
    assert grid.tolist()[0] == [0, 0, 1, 1, 2, 2, 3, 3] and grid[7, 7] == 15
    slic = segment(_images()[0][0], MaskRecipe("slic", n_segments=4))
    assert 2 <= len(np.unique(slic)) <= 8 and slic.min() == 0


def test_unknown_source_is_one_line():
    with pytest.raises(SelfsupError, match="unknown mask source 'felz'"):
        MaskRecipe("felz")


def test_masks_are_computed_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    first = SegmentedImages(_images(), MaskRecipe("fh"))
    (image, seg), label = first[2]
    assert seg.shape == image.shape[1:] and label == -1
    monkeypatch.setattr(segments_module, "_compute", lambda *a: pytest.fail("recomputed despite the cache"))
    second = SegmentedImages(_images(), MaskRecipe("fh"))
    assert all(np.array_equal(a, b) for a, b in zip(first.segments, second.segments))
    other_recipe_is_computed = pytest.raises(BaseException)
    with other_recipe_is_computed:
        SegmentedImages(_images(), MaskRecipe("fh", scale=10))
