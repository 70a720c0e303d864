"""Turn a `--data` spec into image sets: a built-in name, `name:DIR`, or a folder path."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

import numpy as np

from selfsup.errors import SelfsupError

from .builtin import BUILTIN, builtin_info, digits_set, load_builtin
from .dense import DENSE_BUILTIN, open_dense
from .documents import holds_pdfs, open_page_folder
from .folder import IMAGE_EXTENSIONS, FolderImageSet, index_images
from .folder_index import cached_index
from .images import ImageSet
from .shards import is_shard_spec
from .split import check_fraction, stratified_split
from .tiff import LANDSAT, TiffImageSet, open_landsat, open_tiffs, tiff_folder

_NO_IMAGES = f"no image files (read: {' '.join(IMAGE_EXTENSIONS)})"


def open_unlabeled(spec: str | os.PathLike) -> ImageSet:
    """Images for pretraining: a built-in's train split, or every image file under a folder (labels -1;
    the listing is cached between runs, see folder_index). A folder of TIFF files only, and the built-in landsat,
    open as multi-band tiles (data.tiff)."""
    spec = os.fspath(spec)
    if spec == LANDSAT:
        return open_landsat()
    if spec in DENSE_BUILTIN:  # scenes and tiles whose labels say where: pretraining sees the images only
        return open_dense(spec, "train").images()
    builtin = _parse_builtin(spec)
    if builtin is not None:
        return load_builtin(builtin[0], "train", builtin[1])
    root = existing_folder(spec, (*BUILTIN, *DENSE_BUILTIN, LANDSAT))
    paths = cached_index(root)
    held_out = held_out_folder(root)
    if held_out is not None:  # a labelled folder's root: its test images must stay unseen for `eval --data DIR`
        kept = os.path.join(root, held_out) + os.sep
        paths = [p for p in paths if not p.startswith(kept)]
        print(f"selfsup: warning: '{spec}' is laid out as train/ + {held_out}/; pretraining leaves out the "
              f"{held_out}/ images, which `selfsup eval --data {spec}` scores on (pass {os.path.join(spec, held_out)} "
              "itself to pretrain on them)", file=sys.stderr)
    if not paths and holds_pdfs(root):  # a folder of PDFs: their pages as grayscale images (documents.py)
        return open_page_folder(root)
    if not paths:
        tars = any(name.endswith(".tar") for name in os.listdir(root))
        hint = f"; for the tar shards in it pass shards:{spec}" if tars else ""
        raise SelfsupError(f"'{spec}' contains no image files nor PDFs (read: {' '.join(IMAGE_EXTENSIONS)} "
                           f".pdf): pass a folder of images or PDFs, or a built-in name{hint}")
    if tiff_folder(paths):
        return open_tiffs(paths, name=spec, root=root)
    return FolderImageSet(paths, name=spec, root=root)


def open_labeled(spec: str | os.PathLike, test_fraction: float = 0.2, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(train, test) labeled sets for evaluation.

    A built-in gives its official splits (digits: a stratified split seeded by `seed`). A folder is either
    DIR/train/<class>/... with DIR/test/<class>/... (or DIR/val/...), or DIR/<class>/... split per class
    with `test_fraction` and `seed`. Classes are sorted and numbered the same in both sets.
    """
    check_fraction(test_fraction)
    spec = os.fspath(spec)
    if spec == LANDSAT:
        raise SelfsupError("landsat is one unlabelled tile: pass a labelled folder of TIFF tiles (DIR/<class>/...) "
                           "to evaluate on")
    builtin = _parse_builtin(spec)
    if builtin is not None:
        name, root = builtin
        if name == "digits":  # no official split
            return digits_set("train", test_fraction, seed), digits_set("test", test_fraction, seed)
        return load_builtin(name, "train", root), load_builtin(name, "test", root)
    return _labeled_folder(existing_folder(spec), test_fraction, seed)


def _parse_builtin(spec: str) -> tuple[str, str | None] | None:
    """(name, folder or None) when `spec` names a built-in set, None when it is a path."""
    if spec in BUILTIN:
        return spec, None
    if is_shard_spec(spec) and not os.path.exists(spec):
        raise SelfsupError(f"'{spec}': only `selfsup train` reads tar shards; pass an image folder or a built-in name")
    name, colon, folder = spec.partition(":")
    # "word:..." that is not an existing path means name:DIR (two letters at least, so C:\ stays a path).
    if not colon or os.path.exists(spec) or not re.fullmatch(r"[A-Za-z][\w-]+", name):
        return None
    if builtin_info(name).default_dir is None:  # builtin_info raises for an unknown name
        raise SelfsupError(f"{name} comes with scikit-learn and is read from no folder: pass {name}")
    if not folder:
        raise SelfsupError(f"'{spec}' names no folder after ':': pass {name}:DIR, or just {name}")
    return name, folder


def existing_folder(spec: str, builtin: Sequence[str] = BUILTIN, noun: str = "images") -> str:
    """`spec` as a folder path, or a SelfsupError naming the built-in sets to pass instead."""
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise SelfsupError(f"'{spec}' does not exist: pass a built-in name ({'|'.join(builtin)}) or an existing "
                           f"folder of {noun}")
    if not os.path.isdir(path):
        raise SelfsupError(f"'{spec}' is a file, not a folder: pass the folder that holds the {noun}, or a built-in "
                           "name")
    return path


def held_out_folder(root: str) -> str | None:
    """'test' or 'val' when `root` is laid out as train/ + test/ (or val/), else None."""
    subfolders = _subfolders(root)
    return next((d for d in ("test", "val") if d in subfolders), None) if "train" in subfolders else None


def class_folders(folder: str, index: Callable[[str], list[str]] = index_images, noun: str = "images",
                  empty: str = _NO_IMAGES) -> dict[str, list[str]]:
    """Class name -> `index(class folder)` (image paths at any depth by default) of each non-hidden subfolder;
    `empty` says what an empty class folder lacks."""
    classes = _subfolders(folder)
    if not classes:
        raise SelfsupError(f"'{folder}' has no class subfolders: arrange labeled {noun} as DIR/<class>/... "
                           "or DIR/train/<class>/... with DIR/test/<class>/...")
    files = {c: index(os.path.join(folder, c)) for c in classes}
    for c, paths in files.items():
        if not paths:
            raise SelfsupError(f"class folder '{os.path.join(folder, c)}' holds {empty}: add {noun} or remove the "
                               "folder")
    return files


def _labeled_folder(root: str, test_fraction: float, seed: int) -> tuple[FolderImageSet, FolderImageSet]:
    subfolders = _subfolders(root)
    held_out = held_out_folder(root)
    if held_out is not None:
        train, test = class_folders(os.path.join(root, "train")), class_folders(os.path.join(root, held_out))
        classes = sorted(set(train) | set(test))
        train_set = _folder_set(train, classes, os.path.join(root, "train"))
        # TIFF tiles of other than uint8 pixels: the test tiles are mapped to uint8 with the train tiles' range
        stretch = train_set.stretch if isinstance(train_set, TiffImageSet) else None
        return train_set, _folder_set(test, classes, os.path.join(root, held_out), stretch)
    if subfolders == ["train"]:
        raise SelfsupError(
            f"'{root}' has a train/ folder but no test/ or val/: add {os.path.join(root, 'test')}/<class>/..., "
            f"or pass {os.path.join(root, 'train')} to split it with test_fraction"
        )
    files = class_folders(root)
    everything = _folder_set(files, sorted(files), root)
    train, test = stratified_split(everything.labels.numpy(), test_fraction, seed, everything.classes)
    if isinstance(everything, TiffImageSet):
        return everything.subset(train, f"{root}/train"), everything.subset(test, f"{root}/test")
    return (
        FolderImageSet(everything.paths[train], everything.labels[train], everything.classes, f"{root}/train"),
        FolderImageSet(everything.paths[test], everything.labels[test], everything.classes, f"{root}/test"),
    )


def _subfolders(folder: str) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop is no folder (the walk lists it if it is named like a file to read)
        return False


def _folder_set(files: dict[str, list[str]], classes: list[str], name: str,
                stretch: list[list[float]] | None = None) -> FolderImageSet:
    """One FolderImageSet of every class's files, labelled by the class's index in `classes` (a TiffImageSet when
    they are all TIFF files; `stretch` as open_tiffs takes it)."""
    paths = [p for c in files for p in files[c]]
    labels = np.concatenate([np.full(len(files[c]), classes.index(c), dtype=np.int64) for c in files])
    if tiff_folder(paths):
        return open_tiffs(paths, labels, classes, name, stretch=stretch)
    return FolderImageSet(paths, labels, classes, name)
