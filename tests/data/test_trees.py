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
        assert dense.tag == "real" and dense.classes == ["tree"] and dense.has == ("boxes", "labels", "semantic")
        assert dense.label_tag("boxes") == "real" and dense.label_tag("semantic") == "pseudo"
        for i in range(len(dense)):
            image, target = dense[i]
            assert image.dtype == torch.uint8 and image.shape == (3, trees.CROP, trees.CROP)
            boxes = target.boxes  # (N, 4)
            assert boxes.dtype == torch.float32 and target.labels.dtype == torch.int64 and target.labels.eq(1).all()
            assert boxes.ge(0).all() and boxes.le(trees.CROP).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert target.masks is None and target.semantic.shape == (trees.CROP, trees.CROP)
            assert target.semantic.dtype == torch.int64 and set(target.semantic.unique().tolist()) <= {0, 1}
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


def test_semantic_maps_are_the_inscribed_ellipses_of_the_tile_boxes(sets, monkeypatch):
    """Every crop's map against ellipses drawn on the whole tile by a per-pixel loop, then cut out."""
    monkeypatch.setenv("SELFSUP_CACHE", str(REAL_CACHE))
    with zipfile.ZipFile(trees.wheel_path()) as wheel:
        boxes = trees.tile_boxes(wheel, "OSBS_029")  # 400 x 400 px: 4 crops, 2 train and 2 test
    whole = np.zeros((400, 400), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        x0, y0, x1, y1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
        for y in range(max(y0, 0), min(y1, 400)):
            for x in range(max(x0, 0), min(x1, 400)):
                u, v = (x + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2), (y + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
                whole[y, x] |= u * u + v * v <= 1
    seen = 0
    for dense in sets.values():
        for i, (tile, (x, y)) in enumerate(zip(dense.tiles, dense.origins)):
            if tile == "OSBS_029":
                semantic = dense[i][1].semantic.numpy()
                np.testing.assert_array_equal(semantic, whole[y:y + trees.CROP, x:x + trees.CROP])
                seen += 1
    assert seen == 4 and whole.mean() > 0.3  # crowns cover much of this tile


def test_a_crown_reaching_beyond_the_crop_is_drawn_where_it_lies_inside():
    crowns = np.array([[-10, 190, 30, 230], [50, 50, 54, 60]])  # a 40 px crown cut by two edges; a 4 x 10 one
    semantic = trees.crown_map(crowns)
    assert semantic[199, 10] == 1 and semantic[190, 0] == 0  # the ellipse's centre (10, 210) lies outside
    np.testing.assert_array_equal(semantic[50:60, 50:54], trees.change.ellipse(4, 10))
    assert semantic.sum() == trees.change.ellipse(4, 10).sum() + trees.change.ellipse(40, 40)[:10, 10:].sum()


def test_eval_segment_runs_on_the_tree_maps(sets, tmp_path):
    from selfsup.eval.segment import evaluate_segment

    result = evaluate_segment("random", "trees", finetune=True, label_fraction=0.05, max_steps=2, image_size=32,
                              backbone="resnet10t", small_stem=True, backbone_kwargs={"channels": [8, 16, 32, 64]},
                              out=str(tmp_path / "r.json"), progress=False, device="cpu")
    assert set(result["iou"]) == {"background", "tree"} and (result["n_train"], result["n_test"]) == (138, 32)
    assert result["n_labeled"] == 7 and 0 <= result["miou"] <= 1
    assert result["tag"] == "pseudo"  # ellipses drawn from the real boxes: the result says what its masks are
