"""Memory of TIFF tile sets (data/tiff.py): the index of a folder's windows costs a few bytes a window, whatever the
length of the tiles' paths (benchmarks/rs_memory.py measured ~190 bytes a window before, 375 MB for 2,048 tiles of
2,000 px at 64 px), and the stretch, measured one band at a time, keeps its values."""

import numpy as np
import tifffile
import torch

from selfsup.data.tiff import STRETCH_PERCENTILES, open_tiffs

LONG = "a_folder_named_at_some_length_" * 5  # 150 characters: a str array of the paths would take 600+ bytes a window


def write(path, chw):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, chw.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig")
    return str(path)


def tiles(n, c=3, h=96, w=80, dtype=np.uint8):
    rng = np.random.default_rng(0)
    return [rng.integers(0, np.iinfo(dtype).max, (c, h, w), endpoint=True).astype(dtype) for _ in range(n)]


def is_window_of(window: np.ndarray, tile: np.ndarray) -> bool:
    side = window.shape[-1]
    views = np.lib.stride_tricks.sliding_window_view(tile, (side, side), axis=(1, 2))  # (C, H-s+1, W-s+1, s, s)
    return bool((views == window[:, None, None]).all(axis=(0, 3, 4)).any())


def test_the_windows_of_a_tile_share_its_path_string(tmp_path):
    data = tiles(2)
    paths = [write(tmp_path / LONG / f"{i}.tif", t) for i, t in enumerate(data)]
    cut = open_tiffs(paths).windows(16)
    per_tile = (96 // 16) * (80 // 16)
    assert len(cut) == 2 * per_tile
    # paths (8 bytes a reference) + labels (int64) + sizes (2 x int64): 32 bytes a window, not 4 per character
    assert cut.paths.nbytes + cut.labels.numpy().nbytes + cut.sizes.nbytes == 32 * len(cut)
    assert [str(p) for p in cut.paths] == [paths[0]] * per_tile + [paths[1]] * per_tile
    assert len({id(p) for p in cut.paths}) == 2  # one str object per tile
    assert (cut.labels == -1).all() and cut.sizes.tolist() == [[96, 80]] * len(cut)
    torch.manual_seed(0)
    for i in (0, per_tile):
        window, label = cut[i]
        assert window.shape == (3, 16, 16) and label == -1
        assert is_window_of(window.numpy(), data[i // per_tile])


def test_copies_of_a_window_set_stay_compact_and_read_the_same_tiles(tmp_path):
    data = tiles(2)
    paths = [write(tmp_path / LONG / f"{i}.tif", t) for i, t in enumerate(data)]
    cut = open_tiffs(paths).windows(16)
    picked = cut.subset([0, 31, 59], name="some").pick_bands("3,1")
    assert picked.paths.dtype == object and [str(p) for p in picked.paths] == [paths[0], paths[1], paths[1]]
    assert picked.paths.nbytes == 8 * 3 and picked.name == "some" and picked.channels == 2
    window, _ = picked[1]
    assert is_window_of(window.numpy(), data[1][[2, 0]])
    again = picked.windows(32)  # from the whole tiles again: 3 * 2 windows each, bands kept
    assert len(again) == 2 * 3 * 2 and again.paths.dtype == object and again.index == (2, 0)


def test_the_stretch_is_each_bands_percentiles_over_the_sampled_pixels(tmp_path):
    data = tiles(3, c=4, h=40, w=40, dtype=np.uint16)  # square, < 256 px: the sample windows are the whole tiles
    data[1][2] = 700  # band 3 is constant in one tile and random in the others
    data[0][3], data[1][3], data[2][3] = 5, 5, 5  # band 4 constant everywhere: hi = lo + 1
    stretch = open_tiffs([write(tmp_path / f"{i}.tif", t) for i, t in enumerate(data)]).stretch
    for c in range(3):
        pixels = np.concatenate([t[c].ravel() for t in data]).astype(np.float64)
        np.testing.assert_allclose(stretch[c], np.percentile(pixels, STRETCH_PERCENTILES), rtol=1e-12)
    assert stretch[3] == [5.0, 6.0]
