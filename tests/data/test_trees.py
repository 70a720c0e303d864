"""The built-in `--data trees`: DeepForest's tiles read out of the real wheel, cut into crops, split by region, cached."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from selfsup.data import trees
from selfsup.data.cache import cache_root
from selfsup.data.dense import open_dense
from selfsup.errors import SelfsupError

REAL_CACHE = cache_root()  # read at import, before tests/conftest.py gives each test its own SELFSUP_CACHE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache holding only a link to the real wheel; the crops are built into it once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        wheel = trees.wheel_path()  # downloaded by scripts/setup.sh
    root = tmp_path_factory.mktemp("cache")
    (root / "wheels").mkdir()
    (root / "wheels" / wheel.name).symlink_to(wheel)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(root))
        sets = {split: trees.load_trees(split) for split in ("train", "test")}
        yield root, sets


@pytest.fixture
def sets(cache, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache[0]))
    return cache[1]


def test_the_wheel_holds_951_tree_boxes(monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(REAL_CACHE))
    with zipfile.ZipFile(trees.wheel_path()) as wheel:
        counts = {stem: len(trees.tile_boxes(wheel, stem)) for stem in trees.TILES}
    assert sum(counts.values()) == 951 and counts["SOAP_061"] == 37


def test_crops_hold_their_boxes_inside(sets):
    assert (len(sets["train"]), len(sets["test"])) == (138, 32)
    for dense in sets.values():
        assert dense.tag == "real" and dense.classes == ["tree"] and dense.has == ("boxes", "labels")
        for i in range(len(dense)):
            image, target = dense[i]
            assert image.dtype == torch.uint8 and image.shape == (3, trees.CROP, trees.CROP)
            boxes = target.boxes  # (N, 4)
            assert boxes.dtype == torch.float32 and target.labels.dtype == torch.int64 and target.labels.eq(1).all()
            assert boxes.ge(0).all() and boxes.le(trees.CROP).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert target.semantic is None and target.masks is None
    assert sum(len(b) for b in sets["train"].boxes) == 676 and sum(len(b) for b in sets["test"].boxes) == 185


def test_no_train_crop_reaches_into_the_test_region(sets):
    train, test = sets["train"], sets["test"]
    for stem in trees.TILES:
        train_y = [y for t, (_, y) in zip(train.tiles, train.origins) if t == stem]
        test_y = [y for t, (_, y) in zip(test.tiles, test.origins) if t == stem]
        assert train_y and test_y, stem
        assert max(train_y) + trees.CROP <= min(test_y), stem  # every train crop ends above the split line
    # Crops are cells of one grid: no two crops of a tile share a pixel.
    cells = [(t, x, y) for dense in sets.values() for t, (x, y) in zip(dense.tiles, dense.origins)]
    assert len(set(cells)) == len(cells) and all(x % trees.CROP == y % trees.CROP == 0 for _, x, y in cells)


def test_a_cut_box_is_clipped_or_dropped_by_the_area_left_inside():
    boxes = np.array([[190, 10, 230, 50],  # 10 of 40 px wide inside the crop at x = 200: dropped
                      [170, 10, 210, 50],  # 30 of 40 inside: clipped
                      [20, 190, 60, 210],  # half inside: kept
                      [300, 300, 320, 320]], dtype=np.float32)  # elsewhere
    kept = trees.clip_boxes(boxes, 0, 0)
    np.testing.assert_array_equal(kept, [[170, 10, 200, 50], [20, 190, 60, 200]])
    np.testing.assert_array_equal(trees.clip_boxes(boxes, 200, 0), [[0, 10, 30, 50]])


def test_a_second_load_reads_the_cache_and_matches_a_fresh_build(sets, monkeypatch):
    images, crops = trees.build()  # decodes the tiles again
    monkeypatch.setattr(trees, "_decode_tile", lambda *a: pytest.fail("decoded a tile despite the cache"))
    for split in ("train", "test"):
        again = trees.load_trees(split)
        assert isinstance(again.pixels, np.memmap)
        np.testing.assert_array_equal(again.pixels, images[split])
        assert [c["boxes"] for c in crops[split]] == [b.tolist() for b in again.boxes]
        assert again.origins == sets[split].origins
    image, _ = open_dense("trees", "test")[0]
    assert torch.equal(image, torch.from_numpy(images["test"][0]))


def test_a_missing_wheel_names_the_setup_script(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    with pytest.raises(SelfsupError, match="bash scripts/setup.sh") as error:
        trees.load_trees("train")
    assert "\n" not in str(error.value) and str(cache_root()) in str(error.value)


def test_pretraining_reads_the_crops_as_unlabelled_images(sets):
    from selfsup.data import open_unlabeled

    images = open_unlabeled("trees")  # DenseSet.images(): once hidden by the crops' own array attribute
    assert len(images) == len(sets["train"]) and images[0][0].shape == (3, trees.CROP, trees.CROP)
