"""The built-in `rs-mosaics`: Voronoi cells quilted with texture patches cut from the real tiles, split by region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.data import change, rs_mosaics, trees
from selfsup.data.cache import cache_root
from selfsup.data.dense import open_dense
from selfsup.errors import SelfsupError

REAL_CACHE = cache_root()  # read at import, before tests/conftest.py gives each test its own SELFSUP_CACHE
P = rs_mosaics.PATCH


def link_sources(root):
    """root/wheels/ and root/landsat/ holding links to the real DeepForest wheel and Landsat tile (scripts/setup.sh)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        wheel = trees.wheel_path()
    (root / "wheels").mkdir()
    (root / "wheels" / wheel.name).symlink_to(wheel)
    (root / "landsat").mkdir()
    (root / "landsat" / "L7_ETMs.tif").symlink_to(REAL_CACHE / "landsat" / "L7_ETMs.tif")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """rs-mosaics generated once into a fresh cache for the module: (cache root, {split: set})."""
    root = link_sources(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(root))
        yield root, {split: open_dense("rs-mosaics", split) for split in ("train", "test")}


@pytest.fixture
def sets(cache, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache[0]))
    return cache[1]


def test_images_and_targets_have_their_shapes_and_cells_partition_the_canvas(sets):
    assert (len(sets["train"]), len(sets["test"])) == (400, 120)
    side = rs_mosaics.CANVAS
    for dense in sets.values():
        assert dense.tag == "synthetic" and dense.classes == ["crown", "shadow", "ground", "water", "built-up"]
        assert dense.label_tag("semantic") == "synthetic" and dense.native_size == side
        for i in range(0, len(dense), 7):
            image, target = dense[i]
            assert image.dtype == torch.uint8 and image.shape == (3, side, side)
            semantic, masks = target.semantic, target.masks  # (S, S), (K, S, S)
            assert semantic.dtype == torch.int64 and semantic.min() >= 1 and semantic.max() <= 5
            assert masks.sum(0).eq(1).all()  # one cell per pixel
            assert torch.equal(target.labels, semantic.unique()) and target.labels.tolist() == dense.meta[i]["classes"]
            lo, hi = rs_mosaics.CELLS
            assert lo <= len(masks) <= hi
            for mask, box, label in zip(masks, target.boxes, target.labels):
                assert torch.equal(mask, semantic == label)
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # every class appears, in both splits, on a fair share of the pixels
    for dense in sets.values():
        share = np.bincount(np.asarray(dense.semantic).ravel(), minlength=6)[1:] / np.asarray(dense.semantic).size
        assert share.min() > 0.1, share


def test_pure_windows_are_those_wholly_true_inside_the_rows():
    mask = np.zeros((40, 50), dtype=bool)
    mask[4:4 + P + 2, 8:8 + P + 1] = True  # a block 2 px taller and 1 px wider than a patch
    found = rs_mosaics.pure_windows(mask, 0, 40, 1)
    assert sorted(map(tuple, found.tolist())) == [(x, y) for x in (8, 9) for y in (4, 5, 6)]  # (x, y)
    assert sorted(map(tuple, rs_mosaics.pure_windows(mask, 5, 40, 1).tolist())) == [(8, 5), (8, 6), (9, 5), (9, 6)]
    assert rs_mosaics.pure_windows(mask, 0, 40, 2).tolist() == [[8, 4], [8, 6]]
    assert len(rs_mosaics.pure_windows(mask, 0, 4 + P + 1, 1)) == 4  # windows must end above the region's end


def test_tree_classes_follow_boxes_and_luminance():
    tile = np.full((3, 60, 90), 200, dtype=np.uint8)  # bright ground
    tile[:, :, 60:] = 20  # a dark strip: shadow
    boxes = np.array([[10, 10, 30, 40]], dtype=np.float32)
    classes = rs_mosaics.tree_classes(tile, boxes)
    expected = np.zeros((60, 90), dtype=bool)
    expected[10:40, 10:30] = change.ellipse(20, 30)
    np.testing.assert_array_equal(classes["crown"], expected)
    near = np.zeros((60, 90), dtype=bool)
    near[10 - rs_mosaics.MARGIN:40 + rs_mosaics.MARGIN, 10 - rs_mosaics.MARGIN:30 + rs_mosaics.MARGIN] = True
    assert not (classes["ground"] & near).any() and not (classes["shadow"] & near).any()
    assert classes["ground"][50, 5] and classes["shadow"][30, 80] and not classes["ground"][30, 80]
    assert not classes["shadow"][30, 60] and not classes["ground"][30, 60]  # the smoothed edge is neither


def test_landsat_classes_by_water_and_vegetation_indices():
    bands = np.zeros((1, 3, 6), dtype=np.uint8)
    bands[0, 0, :4] = [80, 70, 50, 10]  # B G R NIR: green far above NIR -> water
    bands[0, 1, :4] = [90, 80, 90, 85]  # NIR about red, under green a little -> built-up
    bands[0, 2, :4] = [60, 60, 40, 120]  # NIR far above red: green cover -> neither class
    classes = rs_mosaics.landsat_classes(bands)
    assert classes["water"][0].tolist() == [True, False, False]
    assert classes["built-up"][0].tolist() == [False, True, False]
    rgb = rs_mosaics.landsat_rgb(np.random.default_rng(0).integers(0, 256, (20, 20, 6), dtype=np.uint8))
    assert rgb.shape == (3, 20, 20) and rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255


def test_every_patch_of_a_split_lies_in_its_region(cache, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache[0]))
    sources, bank = rs_mosaics.banks()
    heights = [s.shape[1] for s in sources]  # the 4 NEON tiles, then the Landsat tile
    lines = [change.regions(h)["test"][0] for h in heights[:4]]
    lines.append(heights[4] - max(1, round(rs_mosaics.TEST_FRACTION * heights[4])))
    for name in rs_mosaics.CLASSES:
        for split in ("train", "test"):
            rows = bank[split][name]  # (M, 3) source, x, y
            line = np.array(lines)[rows[:, 0]]  # (M,) the split line of each patch's source
            if split == "train":
                assert (rows[:, 2] + P <= line).all(), name
            else:
                assert (rows[:, 2] >= line).all(), name
            source = set(rows[:, 0].tolist())
            assert source <= ({4} if name in ("water", "built-up") else {0, 1, 2, 3}), name


def test_a_mosaic_fills_each_cell_with_patches_of_its_class():
    # source k is uniform k * 40 and holds only class k's patches: the image then spells the semantic map
    sources = [np.full((3, 40, 40), 40 * k, dtype=np.uint8) for k in range(5)]
    bank = {c: np.array([[k, 3, 5], [k, 20, 10]]) for k, c in enumerate(rs_mosaics.CLASSES)}
    for seed in range(5):
        image, semantic, classes = rs_mosaics.mosaic(sources, bank, np.random.default_rng(seed))
        np.testing.assert_array_equal(image[0], (semantic.astype(np.int64) - 1) * 40)
        assert classes == sorted(np.unique(semantic).tolist())


def test_a_second_load_reads_the_cache_and_matches_a_fresh_build(sets, monkeypatch):
    arrays, meta, counts = rs_mosaics.build()
    assert min(n for per_class in counts.values() for n in per_class.values()) > 100
    monkeypatch.setattr(rs_mosaics, "banks", lambda: pytest.fail("generated again despite the cache"))
    for split in ("train", "test"):
        again = rs_mosaics.load_rs_mosaics(split)
        assert isinstance(again.pixels, np.memmap)
        np.testing.assert_array_equal(again.pixels, arrays[split][0])
        np.testing.assert_array_equal(again.semantic, arrays[split][1])
        assert again.meta == meta[split] == sets[split].meta


def test_a_missing_landsat_tile_names_the_setup_script(tmp_path, monkeypatch):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        wheel = trees.wheel_path()
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    with pytest.raises(SelfsupError, match="scripts/setup.sh") as error:
        rs_mosaics.load_rs_mosaics("test")
    assert "\n" not in str(error.value) and "rs-mosaics" in str(error.value)
    with pytest.raises(SelfsupError, match="'train' or 'test'"):
        rs_mosaics.load_rs_mosaics("val")


def test_cli_eval_segment_finetunes_on_the_mosaics(sets, tmp_path, capsys):
    import json

    from selfsup.cli import main

    out = tmp_path / "r.json"
    code = main(["eval", "segment", "--checkpoint", "random", "--backbone", "resnet10t", "--small-stem",
                 "--backbone-kwargs", "{channels: [8, 16, 32, 64]}", "--image-size", "32", "--data", "rs-mosaics",
                 "--finetune", "--label-fraction", "0.1", "--max-steps", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["tag"] == "synthetic" and result["n_labeled"] == 40 and result["n_test"] == 120
    assert set(result["iou"]) == {"background", *rs_mosaics.CLASSES}


def test_eval_segment_leaves_background_out_where_every_pixel_has_a_class(sets, tmp_path):
    from selfsup.eval.segment import evaluate_segment

    assert sets["train"].background is False
    result = evaluate_segment("pixels", "rs-mosaics", epochs=1, image_size=32, out=str(tmp_path / "r.json"),
                              progress=False, device="cpu")
    # no pixel is class 0: background is not scored (a predicted 0 still costs its true class an FN), and
    # foreground / objectness IoU, all-object by construction, are not reported (pixels scored 1.0 on both)
    assert result["iou"]["background"] is None and result["background_counted"] is False
    assert result["foreground_iou"] is None and "objectness_iou" not in result
    scored = [v for k, v in result["iou"].items() if k != "background"]
    assert result["miou"] == pytest.approx(sum(scored) / len(scored), abs=1e-4)
