"""Change pairs: `rs-change` generated from DeepForest's real tiles (edits = mask, split by region, cached) and a
user's folder in the LEVIR-CD layout."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from selfsup.data import change, trees
from selfsup.data.cache import cache_root
from selfsup.data.change import open_change
from selfsup.data.folder import decode_bytes
from selfsup.errors import SelfsupError

REAL_CACHE = cache_root()  # read at import, before tests/conftest.py gives each test its own SELFSUP_CACHE


def link_wheel(root):
    """root/wheels/ holding a link to the real DeepForest wheel (downloaded by scripts/setup.sh)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        wheel = trees.wheel_path()
    (root / "wheels").mkdir(exist_ok=True)
    (root / "wheels" / wheel.name).symlink_to(wheel)
    return root


@pytest.fixture(scope="module")
def small_tile():
    """OSBS_029 (400 x 400 px, 61 boxes): uint8 (3, H, W) and float boxes (N, 4)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        with zipfile.ZipFile(trees.wheel_path()) as wheel:
            tile = decode_bytes(wheel.read("deepforest/data/OSBS_029.png"), "OSBS_029.png").numpy()
            return tile, trees.tile_boxes(wheel, "OSBS_029")


@pytest.fixture(scope="module")
def rs_change(tmp_path_factory):
    """The whole rs-change, generated once into a fresh cache for the module: (cache root, {split: set})."""
    root = link_wheel(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(root))
        yield root, {split: open_change("rs-change", split) for split in ("train", "test")}


def test_the_edits_are_exactly_the_mask_without_nuisance(small_tile):
    tile, boxes = small_tile
    _, height, width = tile.shape
    edited, mask = tile.copy(), np.zeros((height, width), dtype=bool)
    whole = change.pixel_boxes(boxes, width, height)
    edits = []
    for y0, y1 in change.regions(height).values():
        region = change.edit_region(tile, edited, mask, whole, y0, y1, np.random.default_rng(3))
        for e in region:  # ground and crowns come from the edited region itself
            assert all(y0 <= e[k][1] and e[k][3] <= y1 for k in ("box", "source"))
        edits += region
    assert {e["kind"] for e in edits} == {"removed", "added"}
    # the mask is the union of the edited ellipses, and replaying the edits' copies of time-1 pixels, in order
    # (a later removal may overlap an earlier one), onto time 1 gives time 2 exactly
    expected, replay = np.zeros_like(mask), tile.copy()
    for e in edits:
        x0, y0, x1, y1 = e["box"]
        sx0, sy0, sx1, sy1 = e["source"]
        inside = change.ellipse(x1 - x0, y1 - y0)
        expected[y0:y1, x0:x1] |= inside
        assert (sx1 - sx0, sy1 - sy0) == (x1 - x0, y1 - y0)
        replay[:, y0:y1, x0:x1][:, inside] = tile[:, sy0:sy1, sx0:sx1][:, inside]
        if e["kind"] == "added":  # onto crown-free ground: no box within MARGIN px
            assert not any(b[0] < x1 + change.MARGIN and x0 - change.MARGIN < b[2] and b[1] < y1 + change.MARGIN
                           and y0 - change.MARGIN < b[3] for b in whole)
    assert np.array_equal(edited, replay)
    assert np.array_equal(mask, expected)
    assert np.array_equal(edited[:, ~mask], tile[:, ~mask])  # nothing else changed
    assert (edited != tile).any(0)[mask].mean() > 0.5  # and the edits do change the pixels


def test_crops_differ_only_inside_the_mask_without_nuisance(small_tile):
    tile, boxes = small_tile
    pairs = change.tile_pairs(tile, boxes, np.random.default_rng(0), with_nuisance=False)
    changed = 0
    for a, b, masks, meta, _ in pairs.values():
        for first, second, mask in zip(a, b, masks):
            assert first.shape == second.shape == (3, change.CROP, change.CROP) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}
            differs = (first != second).any(0)
            assert not differs[mask == 0].any()
            changed += int(mask.sum())
    assert changed > 0


def test_nuisance_moves_and_recolours_time_2_only(small_tile):
    tile, boxes = small_tile
    a_plain = change.tile_pairs(tile, boxes, np.random.default_rng(0), with_nuisance=False)
    a_noisy = change.tile_pairs(tile, boxes, np.random.default_rng(0), with_nuisance=True)
    for split in a_plain:
        first_plain, _, masks, _, _ = a_plain[split]
        first, second, masks_noisy, meta, _ = a_noisy[split]
        for p, q, m, n in zip(first_plain, first, masks, masks_noisy):
            assert np.array_equal(p, q)  # time 1 is the tile itself
        for params in meta:
            assert abs(params["dx"]) <= change.SHIFT and abs(params["dy"]) <= change.SHIFT
            assert 1 / change.GAMMA <= params["gamma"] <= change.GAMMA
    crop = tile[:, :64, :64]
    same = {"dx": 0, "dy": 0, "gamma": 1.0, "gains": [1.0, 1.0, 1.0], "blur": 0.0}
    assert np.array_equal(change.apply_nuisance(crop, same), crop)
    darker = change.apply_nuisance(crop, {**same, "gamma": 1.3, "gains": [0.9, 1.0, 1.1]})
    assert darker[1].astype(int).sum() < crop[1].astype(int).sum()  # gamma > 1 darkens
    blurred = change.apply_nuisance(crop, {**same, "blur": 1.0})
    assert np.abs(np.diff(blurred.astype(int), axis=2)).mean() < np.abs(np.diff(crop.astype(int), axis=2)).mean()


def test_split_regions_and_crops_do_not_overlap():
    pitch = change.CROP + 2 * change.SHIFT
    for height, width in ((2472, 2299), (1035, 1249), (400, 400)):
        spans = change.regions(height)
        assert spans["train"][1] == spans["test"][0] == trees.split_row(height // trees.CROP) * trees.CROP
        cells = {}
        for split, (y0, y1) in spans.items():
            cells[split] = set()
            for x, y in change.crop_places(y0, y1, width):  # a crop with every shift it may be cut at
                assert y0 <= y - change.SHIFT and y + change.CROP + change.SHIFT <= y1
                assert 0 <= x - change.SHIFT and x + change.CROP + change.SHIFT <= width
                cells[split].add(((x - change.SHIFT) // pitch, (y - change.SHIFT) // pitch))
        covered = {s: np.zeros((height, width), dtype=np.uint8) for s in spans}
        for split, (y0, y1) in spans.items():
            for x, y in change.crop_places(y0, y1, width):
                covered[split][y - change.SHIFT:y + change.CROP + change.SHIFT,
                               x - change.SHIFT:x + change.CROP + change.SHIFT] += 1
        assert covered["train"].max() == covered["test"].max() == 1  # no pixel in two crops
        assert not (covered["train"] & covered["test"]).any()


def test_rs_change_is_generated_once_split_by_region(rs_change, monkeypatch):
    root, sets = rs_change
    assert (len(sets["train"]), len(sets["test"])) == (630, 132)
    shapes = {"2019_YELL_2_528000_4978000_image_crop2": (2472, 2299),
              "2019_YELL_2_541000_4977000_image_crop": (1035, 1249), "OSBS_029": (400, 400), "SOAP_061": (400, 400)}
    covered = {(split, tile): np.zeros(shape, dtype=bool) for split in sets for tile, shape in shapes.items()}
    for split, pairs in sets.items():
        assert pairs.tag == "synthetic" and pairs.channels == 3 and pairs.native_size == change.CROP
        a, b, mask = pairs[0]
        assert a.dtype == b.dtype == mask.dtype == torch.uint8 and mask.shape == (change.CROP, change.CROP)
        masks = np.asarray(pairs.masks)
        assert set(np.unique(masks)) == {0, 1} and 0.02 < masks.mean() < 0.2  # change is the rare class
        for p in pairs.pairs:  # the pixels of time 1 and of the shifted time 2, in tile coordinates
            y0, y1 = change.regions(shapes[p["tile"]][0])[split]
            for x, y in ((p["x"], p["y"]), (p["x"] + p["dx"], p["y"] + p["dy"])):
                assert y0 <= y and y + change.CROP <= y1
                covered[split, p["tile"]][y:y + change.CROP, x:x + change.CROP] = True
    for tile in shapes:
        assert covered["train", tile].any() and covered["test", tile].any()
        assert not (covered["train", tile] & covered["test", tile]).any()
    monkeypatch.setenv("SELFSUP_CACHE", str(root))
    monkeypatch.setattr(change, "build", lambda: pytest.fail("generated again instead of read from the cache"))
    again = open_change("rs-change", "test")
    assert np.array_equal(np.asarray(again.b), np.asarray(sets["test"].b)) and again.pairs == sets["test"].pairs


def test_rs_change_without_the_wheel_names_the_setup_script():
    with pytest.raises(SelfsupError, match="scripts/setup.sh"):
        open_change("rs-change", "train")


# --- a user's folder ---------------------------------------------------------------------------------------------

def write_pair(root, name, size=(16, 12), change_box=(2, 2, 8, 8), ext="png", label_value=255):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    a = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    b = a.copy()
    x0, y0, x1, y1 = change_box
    b[y0:y1, x0:x1] = 255 - b[y0:y1, x0:x1]
    label = np.zeros((size[1], size[0]), dtype=np.uint8)
    label[y0:y1, x0:x1] = label_value
    for part, array in (("A", a), ("B", b), ("label", label)):
        (root / part).mkdir(parents=True, exist_ok=True)
        path = root / part / f"{name}.{ext if part != 'label' else 'png'}"
        if ext == "tif" and part != "label":
            tifffile.imwrite(path, array, photometric="rgb")
        else:
            Image.fromarray(array).save(path)
    return a, b, label


def test_a_levir_folder_reads_pairs_and_binary_masks(tmp_path):
    written = {f"p{i}": write_pair(tmp_path / "train", f"p{i}") for i in range(3)}
    written["q"] = write_pair(tmp_path / "test", "q", label_value=1)
    train, test = open_change(tmp_path, "train"), open_change(tmp_path, "test")
    assert len(train) == 3 and len(test) == 1 and train.tag == "real" and train.channels == 3
    for pairs in (train, test):
        for i, name in enumerate(pairs.names):
            a, b, mask = pairs[i]
            wa, wb, wl = written[name]
            assert np.array_equal(a.permute(1, 2, 0).numpy(), wa) and np.array_equal(b.permute(1, 2, 0).numpy(), wb)
            assert np.array_equal(mask.numpy(), (wl > 0).astype(np.uint8))


def test_a_flat_levir_folder_is_split_by_name_and_skips_are_counted(tmp_path, caplog):
    for i in range(6):
        write_pair(tmp_path, f"p{i}")
    (tmp_path / "label" / "p5.png").unlink()  # no label
    Image.new("RGB", (20, 12)).save(tmp_path / "B" / "p4.png")  # another size than its A
    with caplog.at_level(logging.WARNING):
        train, test = open_change(tmp_path, "train"), open_change(tmp_path, "test")
    assert sorted(train.names + test.names) == ["p0", "p1", "p2", "p3"] and not set(train.names) & set(test.names)
    assert train.skipped == 2
    assert "skipped 2 of 6 names (1 missing from A/, B/ or label/, 1 whose files differ in size" in caplog.text


def test_tiff_pairs_are_read_band_by_band(tmp_path):
    wa, wb, wl = write_pair(tmp_path / "train", "t", ext="tif")
    write_pair(tmp_path / "test", "u", ext="tif")
    a, b, mask = open_change(tmp_path, "train")[0]
    assert np.array_equal(a.permute(1, 2, 0).numpy(), wa) and np.array_equal(b.permute(1, 2, 0).numpy(), wb)
    assert int(mask.sum()) == int((wl > 0).sum())


@pytest.mark.parametrize("problem", ["no B", "none usable", "missing"])
def test_a_bad_levir_folder_is_one_line(tmp_path, problem):
    if problem == "no B":
        write_pair(tmp_path, "p0")
        write_pair(tmp_path, "p1")
        for f in (tmp_path / "B").iterdir():
            f.unlink()
        (tmp_path / "B").rmdir()
        match = "has no B/ folder: lay change pairs out as DIR/A/"
    elif problem == "none usable":
        write_pair(tmp_path, "p0")
        (tmp_path / "label" / "p0.png").rename(tmp_path / "label" / "other.png")
        match = "holds no usable pair"
    else:
        tmp_path = tmp_path / "nowhere"
        match = "does not exist: pass a built-in name"
    with pytest.raises(SelfsupError, match=match) as error:
        open_change(tmp_path, "train")
    assert "\n" not in str(error.value)
