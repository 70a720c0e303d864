"""The built-in paste-scenes sets: masks mark the pasted objects, targets agree, sizes and counts as specified,
deterministic, regenerated when incomplete, a missing source is a one-line error, grey level alone is no cue."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import ndimage

from selfsup.data import scenes
from selfsup.data.cache import cache_root
from selfsup.data.dense import open_dense
from selfsup.errors import SelfsupError

REAL_CACHE = cache_root()  # read at import, before conftest gives each test its own empty SELFSUP_CACHE


@pytest.fixture(scope="module")
def sources() -> dict[str, list[scenes.Source]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        return {split: scenes.load_sources(split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def made(sources) -> dict[str, dict[str, np.ndarray]]:
    """200 test scenes of each set."""
    return {name: scenes.make_scenes(name, "test", 200, 5, sources["test"]) for name in scenes.NAMES}


@pytest.fixture
def small(monkeypatch, sources):
    """load_scenes with 6 train + 4 test images per set, from the sources already loaded."""
    monkeypatch.setattr(scenes, "SIZES", {"train": 6, "test": 4})
    monkeypatch.setattr(scenes, "load_sources", lambda split: sources[split])


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("multi", [False, True])
def test_the_mask_marks_the_pasted_object(sources, multi):
    from selfsup.data.builtin import load_builtin

    fashion = load_builtin("fashion-mnist", "test")
    rng, inside = np.random.default_rng(0), []
    for _ in range(40):
        image, instances, _, _, background = scenes.scene(rng, sources["test"], fashion.images[:, 0].numpy(),
                                                          fashion.labels.numpy(), multi)
        pasted = instances > 0
        far = ~ndimage.binary_dilation(pasted | (instances == 255), np.ones((3, 3)), scenes.MARGIN)  # (S, S)
        assert (image[:, far] == background[:, far]).all()  # beyond the feathered edge: the background untouched
        core = ndimage.binary_erosion(pasted, iterations=2)
        inside.append(np.abs(image.astype(int) - background)[:, core].mean())
    assert np.mean(inside) > 25  # the object's own texture replaced the background there


@pytest.mark.parametrize("name", scenes.NAMES)
def test_masks_boxes_semantic_and_labels_agree(small, name):
    data = open_dense(name, "test")
    assert (len(data), data.tag, data.channels, data.native_size) == (4, "synthetic", 3, scenes.S)
    assert len(data.classes) == 10 and data.classes[0] == "T-shirt/top"
    for i in range(len(data)):
        image, target = data[i]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, scenes.S, scenes.S)
        masks, semantic = target.masks.numpy(), target.semantic.numpy()
        assert masks.dtype == bool and masks.shape[1:] == (scenes.S, scenes.S) and len(masks) >= 1
        assert (masks.sum(0) <= 1).all()  # visible parts do not overlap
        assert target.boxes.dtype.is_floating_point and target.labels.dtype == torch.int64
        for mask, box, label in zip(masks, target.boxes.tolist(), target.labels.tolist()):
            assert mask.sum() >= scenes.MIN_VISIBLE and box == _box(mask) and 1 <= label <= 10
            assert (semantic[mask] == label).all()
        assert set(np.unique(semantic[~masks.any(0)])) <= {0, 255}


def test_one_object_covers_10_to_50_percent(made):
    data = made["paste-scenes"]
    assert (data["pasted"] == 1).all() and (data["objects"][:, 0] > 0).all() and (data["objects"][:, 1:] == 0).all()
    coverage = (data["instances"] == 1).mean((1, 2))
    assert coverage.min() >= 0.10 and coverage.max() <= 0.50 and coverage.max() - coverage.min() > 0.25


def test_multi_pastes_2_to_6_and_drops_the_hidden(made):
    data = made["paste-scenes-multi"]
    assert set(data["pasted"].tolist()) == {2, 3, 4, 5, 6}
    kept = (data["objects"] > 0).sum(1)
    assert (kept >= 1).all() and (kept <= data["pasted"]).all() and (kept < data["pasted"]).any()
    for instances, n in zip(data["instances"], kept):
        areas = np.bincount(instances.ravel(), minlength=256)
        assert (areas[1:n + 1] >= scenes.MIN_VISIBLE).all() and not areas[n + 1:255].any()
        assert areas[255] < scenes.MIN_VISIBLE * (6 - n) + 1  # what is left of the dropped ones is tiny


@pytest.mark.parametrize("name", scenes.NAMES)
def test_generation_is_deterministic(sources, name):
    first, again = (scenes.make_scenes(name, "train", 12, 3, sources["train"]) for _ in range(2))
    other = scenes.make_scenes(name, "train", 12, 4, sources["train"])
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["pixels"], other["pixels"])


def test_an_incomplete_folder_is_regenerated(small):
    first = scenes.load_scenes("paste-scenes", "train")
    root = cache_root() / "scenes" / f"paste-scenes-v{scenes.VERSION}"
    pixels = np.array(first.pixels)
    assert (root / scenes.MANIFEST).is_file()
    (root / scenes.MANIFEST).unlink()
    np.save(root / "train-pixels.npy", np.zeros_like(pixels))  # half-written
    again = scenes.load_scenes("paste-scenes", "train")
    assert (root / scenes.MANIFEST).is_file() and np.array_equal(np.array(again.pixels), pixels)
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_missing_source_is_a_one_line_error(monkeypatch):
    with pytest.raises(SelfsupError) as missing:
        scenes.load_scenes("paste-scenes-multi", "test")
    (cache_root() / "opencv-doc").symlink_to(REAL_CACHE / "opencv-doc")
    with pytest.raises(SelfsupError) as no_wheel:
        scenes.load_scenes("paste-scenes", "train")
    for error in (missing, no_wheel):
        assert "\n" not in str(error.value) and "`bash scripts/setup.sh`" in str(error.value)
    assert "opencv-doc" in str(missing.value) and scenes.DEEPFOREST_WHEEL in str(no_wheel.value)
    assert not (cache_root() / "scenes" / "paste-scenes-v1").exists()


@pytest.mark.parametrize("name", scenes.NAMES)
def test_grey_level_alone_does_not_reveal_the_objects(sources, made, name):
    """The best per-pixel rule on grey level (a 32-bin histogram, fit on train scenes) is no better than always
    saying 'background' on test scenes, and its balanced accuracy stays near one half."""
    def pixels(data):
        keep = data["instances"].ravel() != 255
        grey = (data["pixels"].transpose(0, 2, 3, 1).astype(np.float32) @ scenes.LUMA).ravel()[keep]
        return (grey // 8).astype(int), data["instances"].ravel()[keep] > 0  # (P,) bins, (P,) object?

    bins, is_object = pixels(scenes.make_scenes(name, "train", 200, 6, sources["train"]))
    rule = np.bincount(bins[is_object], minlength=32) > np.bincount(bins[~is_object], minlength=32)  # (32,)
    bins, is_object = pixels(made[name])
    said = rule[bins]
    accuracy, majority = (said == is_object).mean(), max(is_object.mean(), 1 - is_object.mean())
    balanced = (said[is_object].mean() + (~said[~is_object]).mean()) / 2
    assert accuracy <= majority + 0.01 and balanced < 0.6

