"""Images whose labels say *where*: a semantic map, instance masks and boxes per image (dense and object data).

Every dense source (the built-in `paste-scenes`, `paste-scenes-multi`, `trees` and `rs-mosaics`, a user's folder
with masks or boxes) is a `DenseSet`; `open_dense(spec, split)` turns a `--data` spec into one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

from .images import ImageSet

DENSE_BUILTIN = ("paste-scenes", "paste-scenes-multi", "trees", "rs-mosaics")
TAGS = ("real", "pseudo", "synthetic")  # what the labels are (DATA.md): every result row says it


@dataclass
class DenseTarget:
    """What one image's labels hold; fields the source does not have are None.

    semantic: int64 (H, W), 0 = background, c = class c (1-based index into the set's `classes`), 255 = ignore;
    masks: bool (N, H, W), one per object instance; boxes: float32 (N, 4) xyxy in pixels (x right, y down);
    labels: int64 (N,), each object's class (1-based, as `semantic`).
    """

    semantic: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class DenseSet(Dataset):
    """`set[i]` -> (uint8 image (C, H, W), DenseTarget).

    name: what logs call it; tag: 'real' | 'pseudo' | 'synthetic' (DATA.md); classes: the object class names
    (index 0 = the first class, which `semantic`/`labels` call 1; background is 0 there and not in this list);
    channels: C of every image; native_size: the side of square images of one size, else None.
    Subclasses implement `__len__` and `__getitem__`.
    """

    name: str
    tag: str
    classes: list[str]
    channels: int
    native_size: int | None = None
    has: tuple[str, ...] = field(default=("semantic", "masks", "boxes", "labels"))  # fields the targets fill
    # {field: tag} where one field's labels are of another kind than `tag` (trees: ellipses from real boxes, 'pseudo')
    label_tags: dict[str, str] = field(default_factory=dict)
    # whether class 0 marks pixels of no class; False where every pixel has one (a mosaic of classes): evaluation then
    # leaves background out of the mean IoU and reports no foreground / objectness IoU
    background: bool = True

    def __post_init__(self) -> None:
        if self.tag not in TAGS or not set(self.label_tags.values()) <= set(TAGS):
            raise ValueError(f"tags must be among {TAGS}, got {self.tag!r} and {self.label_tags!r}")

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DenseTarget]:
        raise NotImplementedError

    def label_tag(self, name: str) -> str:
        """The tag of the target field `name` ('semantic', 'masks', 'boxes', 'labels'): label_tags' or `tag`."""
        return self.label_tags.get(name, self.tag)

    def images(self) -> ImageSet:
        """The same images without their labels (label -1), for pretraining."""
        return _ImagesOnly(self)


class _ImagesOnly(ImageSet):
    def __init__(self, dense: DenseSet):
        self.dense, self.name, self.channels = dense, dense.name, dense.channels
        self.native_size, self.classes = dense.native_size, None
        self.labels = torch.full((len(dense),), -1, dtype=torch.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dense[i][0], -1


def is_dense_builtin(spec: str) -> bool:
    return spec in DENSE_BUILTIN


def open_dense(spec: str | os.PathLike, split: str = "train") -> DenseSet:
    """A dense data set's `split` ('train' | 'test'): a built-in name (DENSE_BUILTIN) or a user folder laid out as
    DIR/images/ + DIR/masks/ (same file stems) and/or a COCO JSON or Pascal VOC XML box file (see README).

    Raises SelfsupError naming what to pass for an unknown name, a missing folder or a folder without labels.
    """
    spec = os.fspath(spec)
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}': pass 'train' or 'test'")
    if spec in ("paste-scenes", "paste-scenes-multi"):
        from .scenes import load_scenes
        return load_scenes(spec, split)
    if spec == "trees":
        from .trees import load_trees
        return load_trees(split)
    if spec == "rs-mosaics":
        from .rs_mosaics import load_rs_mosaics
        return load_rs_mosaics(split)
    from .dense_folder import open_dense_folder
    return open_dense_folder(spec, split)
