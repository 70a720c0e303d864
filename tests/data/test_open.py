import os

import pytest

from selfsup.data import FolderImageSet, open_labeled, open_unlabeled
from selfsup.errors import SelfsupError


def fill(root, counts, make_image):
    """counts: {relative class folder: number of images}; image j of a class has value j."""
    for folder, n in counts.items():
        for j in range(n):
            make_image(root / folder / f"img{j:02d}.png", value=j)


def label_names(images):
    return [images.classes[label] for label in images.labels.tolist()]


def class_of(path, root):
    """The class a file belongs to: the first folder under the split folder `root`."""
    return os.path.relpath(path, root).split(os.sep)[0]


def test_unlabeled_folder_ignores_subfolder_names(tmp_path, make_image):
    fill(tmp_path, {"cats": 2, "dogs/puppies": 3, ".trash": 4}, make_image)
    make_image(tmp_path / "loose.jpg", fmt="JPEG")
    images = open_unlabeled(str(tmp_path))
    assert isinstance(images, FolderImageSet) and len(images) == 6
    assert images.classes is None and images.labels.eq(-1).all() and images.name == str(tmp_path)
    image, label = images[0]
    assert image.shape == (3, 4, 5) and label == -1


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_train_test_layout_numbers_the_union_of_classes(tmp_path, make_image, held_out):
    fill(tmp_path, {"train/bee": 2, "train/cat": 3, f"{held_out}/cat": 1, f"{held_out}/dog/nested": 2}, make_image)
    train, test = open_labeled(str(tmp_path))
    assert train.classes == test.classes == ["bee", "cat", "dog"]
    assert label_names(train) == ["bee"] * 2 + ["cat"] * 3 and label_names(test) == ["cat", "dog", "dog"]
    assert test.labels.tolist() == [1, 2, 2]
    for images, split in ((train, "train"), (test, held_out)):
        assert images.name == os.path.join(str(tmp_path), split)
        assert label_names(images) == [class_of(p, tmp_path / split) for p in images.paths]
    assert train[4][1] == 1 and train[4][0].shape == (3, 4, 5)


def test_pretrain_on_train_then_evaluate_the_same_folder(tmp_path, make_image):
    fill(tmp_path, {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1}, make_image)
    assert len(open_unlabeled(str(tmp_path / "train"))) == 4
    assert [len(s) for s in open_labeled(str(tmp_path))] == [4, 2]


def test_flat_layout_is_split_per_class_with_a_seed(tmp_path, make_image):
    fill(tmp_path, {"ant": 10, "bat": 5, "cow/sub": 20}, make_image)
    train, test = open_labeled(str(tmp_path), test_fraction=0.2, seed=1)
    assert train.classes == test.classes == ["ant", "bat", "cow"]
    assert test.labels.bincount().tolist() == [2, 1, 4] and train.labels.bincount().tolist() == [8, 4, 16]
    assert not set(train.paths) & set(test.paths) and len(set(train.paths) | set(test.paths)) == 35
    for images in (train, test):
        assert label_names(images) == [class_of(p, tmp_path) for p in images.paths]
    same = open_labeled(str(tmp_path), test_fraction=0.2, seed=1)[1]
    other = open_labeled(str(tmp_path), test_fraction=0.2, seed=2)[1]
    assert list(same.paths) == list(test.paths) and list(other.paths) != list(test.paths)
    assert test.name == f"{tmp_path}/test"


def test_flat_split_keeps_one_image_on_each_side(tmp_path, make_image):
    fill(tmp_path, {"few": 2, "many": 10}, make_image)
    train, test = open_labeled(str(tmp_path), test_fraction=0.01)
    assert test.labels.bincount().tolist() == [1, 1] and train.labels.bincount().tolist() == [1, 9]
    train, test = open_labeled(str(tmp_path), test_fraction=0.99)
    assert train.labels.bincount().tolist() == [1, 1]


def expect_error(call, *words):
    with pytest.raises(SelfsupError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_path_errors(tmp_path, make_image):
    expect_error(lambda: open_unlabeled(str(tmp_path / "missing")), "does not exist", "fashion-mnist|mnist|digits")
    expect_error(lambda: open_labeled(str(tmp_path / "missing")), "does not exist", "existing folder")
    image = make_image(tmp_path / "one.png")
    expect_error(lambda: open_unlabeled(str(image)), "is a file, not a folder")
    (tmp_path / "empty" / "deep").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    expect_error(lambda: open_unlabeled(str(tmp_path / "empty")), "contains no image files nor PDFs", ".png", ".jpg",
                 ".webp", ".pdf")


def test_labeled_layout_errors(tmp_path, make_image):
    make_image(tmp_path / "flat" / "loose.png")
    expect_error(lambda: open_labeled(str(tmp_path / "flat")), "has no class subfolders", "DIR/<class>/")
    fill(tmp_path / "hollow", {"a": 3}, make_image)
    (tmp_path / "hollow" / "b").mkdir()
    (tmp_path / "hollow" / "b" / "readme.txt").write_text("x")
    expect_error(lambda: open_labeled(str(tmp_path / "hollow")), "class folder", "holds no image files", "add images")
    fill(tmp_path / "lonely", {"a": 3, "b": 1}, make_image)
    expect_error(lambda: open_labeled(str(tmp_path / "lonely")), "class 'b' has only 1 image", "at least 2")
    fill(tmp_path / "trainonly", {"train/a": 3}, make_image)
    expect_error(lambda: open_labeled(str(tmp_path / "trainonly")), "no test/ or val/", "trainonly/train")
    fill(tmp_path / "ok", {"a": 3, "b": 3}, make_image)
    expect_error(lambda: open_labeled(str(tmp_path / "ok"), test_fraction=1.5), "strictly between 0 and 1")
    fill(tmp_path / "emptytest", {"train/a": 2}, make_image)
    (tmp_path / "emptytest" / "test").mkdir()
    expect_error(lambda: open_labeled(str(tmp_path / "emptytest")), "emptytest/test' has no class subfolders")


def test_a_path_with_a_colon_is_still_a_path(tmp_path, make_image):
    fill(tmp_path, {"run:1": 2}, make_image)
    assert len(open_unlabeled(str(tmp_path / "run:1"))) == 2
