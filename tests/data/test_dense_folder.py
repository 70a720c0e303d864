"""A user's dense folder: images/ with masks/, a COCO file or VOC files; splits; one clear line per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.dense import open_dense
from selfsup.data.dense_folder import random_split
from selfsup.errors import SelfsupError


def image(path: Path, size=(8, 6), value=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 0, 0)).save(path)
    return path


def mask(path: Path, ids: np.ndarray, mode="L") -> Path:
    """A mask whose pixel (y, x) is ids[y, x]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8), "L")
    (img.convert("P") if mode == "P" else img.convert(mode) if mode != "L" else img).save(path)
    return path


def masks_folder(root: Path, n=5, top=2) -> Path:
    """n 8x6 images a0..a{n-1}; mask j: class 1 + j % top in the left half, 255 in the last column."""
    for j in range(n):
        image(root / "images" / f"a{j}.jpg", value=10 * j)
        ids = np.zeros((6, 8), np.uint8)
        ids[:, :4], ids[:, 7] = 1 + j % top, 255
        mask(root / "masks" / f"a{j}.png", ids)
    return root


def coco(root: Path, files: list[str], annotations: list[dict], categories=((3, "cat"), (1, "dog"))) -> Path:
    path = root / "annotations.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": [{"id": k + 10, "file_name": f, "width": 8, "height": 6} for k, f in enumerate(files)],
        "annotations": [{"id": k, "iscrowd": 0, **a} for k, a in enumerate(annotations)],
        "categories": [{"id": i, "name": n} for i, n in categories]}))
    return path


def voc(path: Path, objects: list[tuple[str, tuple]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{body}</annotation>")
    return path


def one_line_error(folder: Path, *words: str, split="train") -> str:
    with pytest.raises(SelfsupError) as error:
        open_dense(str(folder), split)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_masks_give_semantic_maps_named_by_the_ids_seen(tmp_path):
    root = masks_folder(tmp_path / "d", n=5, top=3)
    train, test = open_dense(root, "train"), open_dense(root, "test")
    assert (len(train), len(test)) == (4, 1) and train.classes == ["class 1", "class 2", "class 3"]
    assert train.has == ("semantic",) and train.tag == "real" and train.native_size is None
    picture, target = test[0]
    j = int(picture[0, 0, 0]) // 10  # which image the test one is
    assert picture.shape == (3, 6, 8) and target.boxes is None and target.masks is None
    assert target.semantic.dtype == torch.int64 and target.semantic.shape == (6, 8)
    assert target.semantic[0, 0] == 1 + j % 3 and target.semantic[0, 5] == 0 and target.semantic[0, 7] == 255
    assert sorted(train.paths + test.paths) == sorted(str(p) for p in (root / "images").iterdir())


def test_classes_txt_names_the_ids_and_palette_masks_read_as_indices(tmp_path):
    root = masks_folder(tmp_path, n=3)
    (tmp_path / "classes.txt").write_text("road\nbuilding\nwater\n")
    ids = np.full((6, 8), 3, np.uint8)
    mask(root / "masks" / "a0.png", ids, mode="P")
    sets = [open_dense(root, s) for s in ("train", "test")]
    assert sets[0].classes == ["road", "building", "water"]
    semantic = {Path(p).stem: d[k][1].semantic for d in sets for k, p in enumerate(d.paths)}
    assert semantic["a0"].eq(3).all()


def test_the_random_split_is_seeded_and_covers_every_image():
    stems = [f"s{k:02d}" for k in range(10)]
    split = random_split(stems)
    assert split == random_split(list(stems)) and len(split["test"]) == 2
    assert sorted(split["train"] + split["test"]) == stems


def test_coco_boxes_become_xyxy_with_labels_by_category_id(tmp_path):
    files = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    for f in files:
        image(tmp_path / "images" / f)
    coco(tmp_path, ["sub/" + files[0]] + files[1:], [  # a path in file_name matches by base name
        {"image_id": 10, "category_id": 3, "bbox": [1, 2, 3, 4]},
        {"image_id": 10, "category_id": 1, "bbox": [0, 0, 8.5, 6]},  # 0.5 px beyond: clipped
        {"image_id": 10, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 1}])
    dense = {s: open_dense(tmp_path, s) for s in ("train", "test")}
    assert dense["train"].classes == ["dog", "cat"] and dense["train"].has == ("boxes", "labels")
    targets = {Path(p).name: d[k][1] for d in dense.values() for k, p in enumerate(d.paths)}
    a = targets["a.jpg"]
    assert a.boxes.dtype == torch.float32 and a.labels.dtype == torch.int64 and a.semantic is None
    assert a.boxes.tolist() == [[1, 2, 4, 6], [0, 0, 8, 6]] and a.labels.tolist() == [2, 1]
    assert targets["b.jpg"].boxes.shape == (0, 4) and targets["b.jpg"].labels.shape == (0,)
    assert dense["train"].native_size is None  # 8 x 6 is not square


def test_voc_train_test_folders_share_one_class_list(tmp_path):
    for split, names in (("train", ["tree", "car"]), ("test", ["bus"])):
        for k, name in enumerate(names):
            image(tmp_path / split / "images" / f"{k}.png", size=(10, 10))
            voc(tmp_path / split / "Annotations" / f"{k}.xml", [(name, (1, 1, 5, 9)), ("car", (0, 0, 11, 10))])
            mask(tmp_path / split / "masks" / f"{k}.png", np.ones((10, 10)))
    train, test = open_dense(tmp_path, "train"), open_dense(tmp_path, "test")
    assert train.classes == test.classes == ["bus", "car", "tree"]  # sorted VOC names
    assert (len(train), len(test)) == (2, 1) and train.native_size == 10
    assert train.has == ("semantic", "boxes", "labels")
    _, target = test[0]
    assert target.labels.tolist() == [1, 2] and target.boxes.tolist() == [[1, 1, 5, 9], [0, 0, 10, 10]]
    assert target.semantic.eq(1).all()


def test_a_mask_of_another_size_is_named(tmp_path):
    root = masks_folder(tmp_path)
    mask(root / "masks" / "a2.png", np.zeros((6, 9)))
    one_line_error(root, "a2.png", "is 9x6 px but its image is 8x6")


def test_a_colour_mask_is_refused(tmp_path):
    root = masks_folder(tmp_path)
    image(root / "masks" / "a1.png")
    one_line_error(root, "a1.png", "mode RGB", "single-channel")


def test_a_box_outside_its_image_is_named(tmp_path):
    image(tmp_path / "images" / "x.jpg")
    image(tmp_path / "images" / "y.jpg")
    voc(tmp_path / "annotations" / "x.xml", [("tree", (1, 1, 4, 4))])
    voc(tmp_path / "annotations" / "y.xml", [("tree", (2, 1, 9.5, 4))])  # 1.5 px beyond the 8 px width
    one_line_error(tmp_path, "y.jpg", "[2.0, 1.0, 9.5, 4.0]", "y.xml", "outside the 8x6 image")
    voc(tmp_path / "annotations" / "y.xml", [("tree", (2, 1, 2, 4))])
    one_line_error(tmp_path, "y.jpg", "[2.0, 1.0, 2.0, 4.0]", "is empty")


def test_coco_naming_missing_images_lists_the_first_few(tmp_path):
    image(tmp_path / "images" / "a.jpg")
    coco(tmp_path, ["a.jpg", "gone1.jpg", "gone2.jpg", "gone3.jpg", "gone4.jpg"], [])
    message = one_line_error(tmp_path, "annotations.json", "names 4 images missing", "gone1.jpg, gone2.jpg, gone3.jpg")
    assert "gone4" not in message


def test_an_unknown_category_id_is_named(tmp_path):
    image(tmp_path / "images" / "a.jpg")
    image(tmp_path / "images" / "b.jpg")
    coco(tmp_path, ["a.jpg", "b.jpg"], [{"image_id": 11, "category_id": 7, "bbox": [1, 1, 2, 2]}])
    one_line_error(tmp_path, "annotations.json", "unknown category id 7")


def test_images_without_labels_say_the_layout(tmp_path):
    image(tmp_path / "images" / "a.jpg")
    one_line_error(tmp_path, "neither masks/ nor a box file", "DIR/masks/<stem>.png", "annotations.json")
    one_line_error(tmp_path / "images", "has no images/ folder")


def test_a_mask_without_image_and_an_image_without_mask_are_named(tmp_path):
    root = masks_folder(tmp_path / "extra_mask")
    mask(root / "masks" / "stray.png", np.zeros((6, 8)))
    one_line_error(root, "1 masks", "stray.png", "no image of the same name")
    root = masks_folder(tmp_path / "extra_image")
    image(root / "images" / "lonely.jpg")
    one_line_error(root, "1 images", "lonely.jpg", "have no mask")


def test_an_image_left_out_of_the_box_file_is_named(tmp_path):
    image(tmp_path / "images" / "a.jpg")
    image(tmp_path / "images" / "b.jpg")
    coco(tmp_path, ["a.jpg"], [])
    one_line_error(tmp_path, "b.jpg", "are not in", "annotations.json")
    (tmp_path / "annotations.json").unlink()
    voc(tmp_path / "annotations" / "a.xml", [])
    one_line_error(tmp_path, "b.jpg", "no VOC file")


def test_a_class_missing_from_classes_txt_and_a_mask_id_beyond_it(tmp_path):
    root = masks_folder(tmp_path, n=3)
    (tmp_path / "classes.txt").write_text("road\n")
    dense = open_dense(root, "train")  # mask values are read with the mask, not on open
    with pytest.raises(SelfsupError, match="holds class id 2 but only 1 classes are named"):
        for k in range(len(dense)):
            dense[k]
    voc(tmp_path / "annotations" / "a0.xml", [("car", (1, 1, 2, 2))])
    for k in (1, 2):
        voc(tmp_path / "annotations" / f"a{k}.xml", [])
    one_line_error(root, "class 'car'", "a0.jpg", "classes.txt")
