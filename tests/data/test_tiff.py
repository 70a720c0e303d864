"""Multi-band TIFF tiles (data/tiff.py): layouts, dtypes, band picks, windows of large tiles, band statistics, the
folder openers and the built-in Landsat tile."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from selfsup.data import BadImageError, header_problem, open_labeled, open_unlabeled
from selfsup.data.folder import header_side
from selfsup.data.tiff import (
    LANDSAT_WINDOW,
    STRETCH_PERCENTILES,
    TiffImageSet,
    open_landsat,
    open_tiffs,
    tiff_header,
    to_uint8,
)
from selfsup.errors import SelfsupError


def bands(c=6, h=20, w=24, dtype=np.uint8, seed=0):
    """(C, H, W) random bands of `dtype`."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random((c, h, w)).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, (c, h, w), dtype=dtype, endpoint=True)


def write(path, chw, layout="planar", **kwargs):
    """A TIFF of bands (C, H, W) as planar (C, H, W), interleaved (H, W, C) or one page per band."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "planar":
        tifffile.imwrite(path, chw, photometric="minisblack", planarconfig="separate", **kwargs)
    elif layout == "interleaved":
        tifffile.imwrite(path, chw.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig", **kwargs)
    else:  # pages
        with tifffile.TiffWriter(path) as tif:
            for band in chw:
                tif.write(band, photometric="minisblack", **kwargs)
    return path


@pytest.mark.parametrize("layout", ["planar", "interleaved", "pages"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_every_layout_reads_as_bands_first(tmp_path, layout, compression):
    data = bands()
    path = write(tmp_path / "t.tif", data, layout, compression=compression)
    header = tiff_header(str(path))
    assert (header.bands, header.height, header.width, header.dtype) == (6, 20, 24, "uint8")
    assert header.mappable == (compression is None and layout != "pages")
    image, label = open_tiffs([str(path)])[0]
    assert image.dtype == torch.uint8 and label == -1
    torch.testing.assert_close(image, torch.from_numpy(data))


def test_one_band_tile_is_one_channel(tmp_path):
    data = bands(1)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, data[0])
    images = open_tiffs([str(path)])
    assert images.channels == 1
    torch.testing.assert_close(images[0][0], torch.from_numpy(data))


def test_uint16_bands_are_stretched_between_the_sample_percentiles(tmp_path):
    data = bands(4, 24, 24, dtype=np.uint16)  # square: the sample window is the whole tile
    images = open_tiffs([str(write(tmp_path / "t.tif", data, "interleaved"))])
    expected_range = [list(np.percentile(band.astype(np.float64), STRETCH_PERCENTILES)) for band in data]
    np.testing.assert_allclose(images.stretch, expected_range)
    lo, hi = np.array(expected_range).T[:, :, None, None]
    expected = np.clip(np.round((data.astype(np.float32) - lo) * (255 / (hi - lo))), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(images[0][0].numpy(), expected, atol=1)  # float32 rounding at .5
    assert images[0][0].min() == 0 and images[0][0].max() == 255


def test_to_uint8_maps_the_range_clips_and_zeroes_nan():
    x = np.array([[[0.0, 0.5, 1.0, 2.0, np.nan]], [[10.0, 20.0, 30.0, 5.0, 40.0]]], dtype=np.float32)  # (2, 1, 5)
    out = to_uint8(x, [[0.0, 1.0], [10.0, 30.0]])
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 128, 255, 255, 0] and out[1, 0].tolist() == [0, 128, 255, 0, 255]
    same = bands(2)
    assert to_uint8(same, None) is same  # uint8 bands are used as they are


@pytest.mark.parametrize("dtype, nodata", [(np.uint16, 65535), (np.int16, -9999), (np.uint8, 255)])
def test_gdal_nodata_pixels_are_left_out_of_the_stretch_and_become_zero(tmp_path, dtype, nodata):
    data = bands(2, 24, 24, dtype=np.uint8).astype(dtype) + (0 if dtype == np.uint8 else 1000)
    data[:, :12] = nodata  # the top half has no data, as a tile's edge past the scene does
    path = write(tmp_path / "t.tif", data, "planar", extratags=[(42113, "s", 0, str(nodata), True)])
    assert tiff_header(str(path)).nodata == nodata
    images = open_tiffs([str(path)])
    image = images[0][0].numpy()
    assert (image[:, :12] == 0).all()
    if dtype == np.uint8:
        np.testing.assert_array_equal(image[:, 12:], np.where(data[:, 12:] == 255, 0, data[:, 12:]))
    else:  # the stretch is measured on the valid half only: its percentiles, not nodata's, map to 0 and 255
        valid = data[:, 12:].astype(np.float64)
        expected = [list(np.percentile(band, STRETCH_PERCENTILES)) for band in valid]
        np.testing.assert_allclose(images.stretch, expected)
        assert image[:, 12:].max() == 255
    stats = images.band_meta()  # of the valid pixels only, as the stretch
    valid = data != nodata
    expected = [float((image[b] / 255)[valid[b]].mean()) for b in range(2)]
    np.testing.assert_allclose(stats["mean"], expected, atol=1e-5)


def test_a_tile_without_the_nodata_tag_keeps_every_value(tmp_path):
    data = bands(2, 24, 24, dtype=np.uint16)
    data[:, :12] = 65535
    images = open_tiffs([str(write(tmp_path / "t.tif", data, "planar"))])
    assert tiff_header(images.paths[0]).nodata is None
    assert (images[0][0].numpy()[:, :12] == 255).all()  # 65535 is a value here: the top of the stretch


def test_a_nodata_tag_that_is_not_a_number_is_one_warning_per_file_not_tifffiles_every_read(tmp_path, capsys,
                                                                                              monkeypatch):
    from selfsup.data import tiff

    monkeypatch.setattr(tiff, "_WARNED", set())
    paths = [str(write(tmp_path / f"{i}.tif", bands(2, 24, 24, dtype=np.uint16), "planar",
                       extratags=[(42113, "s", 0, "garbage", True)])) for i in range(5)]
    images = open_tiffs(paths)
    for i in range(5):
        images[i]
        tiff_header(paths[i])
    err = capsys.readouterr().err
    assert tiff_header(paths[0]).nodata is None and "parsing GDAL_NODATA" not in err
    named = [line for line in err.splitlines() if "is not a number ('garbage')" in line]
    assert len(named) == tiff.NAMED_WARNINGS and len(err.splitlines()) == len(named)
    assert named[-1].endswith("further files with such a tag are not named")


def test_held_out_tiles_use_the_train_tiles_stretch(tmp_path):
    for split, seed in (("train", 0), ("test", 1)):
        for c in ("a", "b"):
            write(tmp_path / split / c / "0.tif", bands(4, dtype=np.uint16, seed=seed) // (1 + 3 * seed))
    train, test = open_labeled(tmp_path)
    assert isinstance(train, TiffImageSet) and isinstance(test, TiffImageSet)
    assert test.stretch == train.stretch and train.classes == test.classes == ["a", "b"]


def test_mixed_band_counts_are_one_clear_error(tmp_path):
    write(tmp_path / "a.tif", bands(4))
    write(tmp_path / "b.tif", bands(6))
    with pytest.raises(SelfsupError) as error:
        open_unlabeled(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "4 bands" in message and "6 bands" in message and "b.tif" in message


def test_mixed_pixel_types_are_one_clear_error(tmp_path):
    write(tmp_path / "a.tif", bands(4))
    write(tmp_path / "b.tif", bands(4, dtype=np.uint16))
    with pytest.raises(SelfsupError, match="pixel types: .*uint8.*uint16"):
        open_unlabeled(tmp_path)


def test_pick_bands_keeps_them_in_the_order_asked(tmp_path):
    data = bands(6)
    images = open_tiffs([str(write(tmp_path / "t.tif", data))]).pick_bands("4,3,2")
    assert images.channels == 3 and images.index == (3, 2, 1)
    torch.testing.assert_close(images[0][0], torch.from_numpy(data[[3, 2, 1]]))
    for bad in ("0,1", "7", "1,1", "a,b", ""):
        with pytest.raises(SelfsupError, match="--bands"):
            images.pick_bands(bad)


def test_rgb_only_when_the_file_says_rgb_and_the_first_three_bands_are_kept(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, bands(3).transpose(1, 2, 0), photometric="rgb")
    images = open_tiffs([str(rgb)])
    assert images.rgb and not images.pick_bands("3,2,1").rgb and images.pick_bands("1,2,3").rgb
    assert not open_tiffs([str(write(tmp_path / "grey3.tif", bands(3)))]).rgb


def test_large_tiles_are_cut_into_random_windows_small_ones_stay_whole(tmp_path):
    big, small = bands(4, 200, 130, seed=1), bands(4, 60, 70, seed=2)
    images = open_tiffs([str(write(tmp_path / "big.tif", big)), str(write(tmp_path / "small.tif", small))])
    cut = images.windows(32)
    # 200 x 130 >= 2 * 32 on both sides: floor(200/32) * floor(130/32) = 6 * 4 windows; 60 px < 64: whole
    assert len(cut) == 24 + 1 and cut.native_size is None and cut.channels == 4
    torch.manual_seed(0)
    seen = set()
    for i in range(24):
        window, _ = cut[i]
        assert window.shape == (4, 32, 32)
        found = np.argwhere((np.lib.stride_tricks.sliding_window_view(big[0], (32, 32)) == window[0].numpy())
                            .all(axis=(2, 3)))
        assert len(found) >= 1  # a true window of the tile, not a resized tile
        seen.add(tuple(found[0]))
    assert len(seen) > 1  # random places
    torch.testing.assert_close(cut[24][0], torch.from_numpy(small))
    assert open_tiffs([str(tmp_path / "big.tif")]).windows(32).native_size == 32  # every tile cut: one size


def test_windows_of_an_uncompressed_tile_are_memory_mapped_not_decoded_whole(tmp_path, monkeypatch):
    path = write(tmp_path / "big.tif", bands(4, 512, 512))
    cut = open_tiffs([str(path)]).windows(64)

    def whole_read(*args, **kwargs):
        raise AssertionError("the whole tile was decoded")

    monkeypatch.setattr(tifffile, "imread", whole_read)
    window, _ = cut[0]
    assert window.shape == (4, 64, 64) and len(cut) == 64


def test_windows_of_a_compressed_tile_decode_it_once_per_process(tmp_path, monkeypatch):
    path = write(tmp_path / "big.tif", bands(6, 200, 200), compression="zlib")
    cut = open_tiffs([str(path)]).windows(32)
    calls = []
    real = tifffile.imread
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: calls.append(1) or real(*a, **k))
    for i in range(len(cut)):
        assert cut[i][0].shape == (6, 32, 32)
    assert len(calls) == 1 and len(cut) == 36


def test_band_statistics_are_the_bands_mean_and_std_in_unit_range(tmp_path):
    tiles = [bands(5, 40, 40, seed=s) for s in range(3)]  # square, < 256 px: the sample windows are whole tiles
    tiles[0][2] = 200  # a constant band keeps a usable std
    paths = [str(write(tmp_path / f"{i}.tif", t)) for i, t in enumerate(tiles)]
    meta = open_tiffs(paths).pick_bands("3,1").band_meta()
    pixels = np.concatenate([t[[2, 0]].reshape(2, -1) for t in tiles], axis=1) / 255
    np.testing.assert_allclose(meta["mean"], pixels.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(meta["std"], np.maximum(pixels.std(axis=1), 1e-3), atol=1e-6)
    assert meta["index"] == [2, 0] and meta["count"] == 5 and meta["stretch"] is None and meta["rgb"] is False
    assert open_tiffs(paths).pick_bands("3,1").band_meta() == meta  # seeded: the same numbers every time


def test_folder_of_tiffs_opens_as_tiles_and_mixed_folders_as_rgb_images(tmp_path):
    write(tmp_path / "tiles" / "a.tif", bands(6))
    write(tmp_path / "tiles" / "sub" / "b.tiff", bands(6))
    images = open_unlabeled(tmp_path / "tiles")
    assert isinstance(images, TiffImageSet) and images.channels == 6 and len(images) == 2
    Image.fromarray(bands(3).transpose(1, 2, 0)).save(tmp_path / "tiles" / "c.png")
    mixed = open_unlabeled(tmp_path / "tiles")
    assert not isinstance(mixed, TiffImageSet) and mixed.channels == 3


def test_headers_of_tiffs_are_judged_by_tifffile(tmp_path):
    good = write(tmp_path / "good.tif", bands(6, 30, 40))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    assert header_problem(str(good)) is None and header_side(str(good)) == 30
    assert header_problem(str(tmp_path / "bad.tif")) and header_side(str(tmp_path / "bad.tif")) is None
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack", metadata={"axes": "TCYX"},
                     imagej=True)
    with pytest.raises(BadImageError, match="pass tiles of 2-D bands"):
        tiff_header(str(stack))


def test_an_unreadable_tile_is_a_bad_image_naming_it(tmp_path):
    good = write(tmp_path / "good.tif", bands(4))
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 truncated")
    images = open_tiffs([str(good), str(tmp_path / "bad.tif")]).windows(8)
    assert images.channels == 4 and images[0][0].shape == (4, 8, 8)
    with pytest.raises(BadImageError, match="bad.tif"):
        images[len(images) - 1]
    with pytest.raises(SelfsupError, match="none of the 1 TIFF files"):
        open_tiffs([str(tmp_path / "bad.tif")])


def test_jpeg_in_tiff_falls_back_to_pil(tmp_path):
    path = tmp_path / "j.tif"
    Image.fromarray(bands(3, 40, 50).transpose(1, 2, 0)).save(path, compression="jpeg")
    image, _ = open_tiffs([str(path)])[0]
    assert image.shape == (3, 40, 50)


def test_landsat_missing_names_the_setup_script(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    with pytest.raises(SelfsupError, match="scripts/setup.sh.*r-cran-stars"):
        open_unlabeled("landsat")
    with pytest.raises(SelfsupError, match="unlabelled"):
        open_labeled("landsat")


def test_landsat_tile_gives_random_windows_of_six_bands(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    (tmp_path / "landsat").mkdir()
    # a stand-in with the real tile's shape and layout (349 x 352 px, 6 interleaved uint8 bands, deflate)
    tifffile.imwrite(tmp_path / "landsat" / "L7_ETMs.tif", bands(6, 352, 349).transpose(1, 2, 0),
                     photometric="minisblack", planarconfig="contig", compression="zlib")
    images = open_landsat()
    assert images.channels == 6 and images.native_size == LANDSAT_WINDOW == 32 and len(images) == 11 * 10
    assert images[0][0].shape == (6, 32, 32) and images.classes is None
