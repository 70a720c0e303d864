"""The image-set interface every data source implements, and its in-memory form."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError


class ImageSet(Dataset):
    """Images with optional labels: `set[i]` -> (image, label).

    image: uint8 tensor (C, H, W); label: int, -1 when unlabeled.
    name: what logs call it ("fashion-mnist/train" or a folder path); channels: C of every image;
    native_size: side of the square images, None when sizes vary; classes: class names, None if
    unlabeled; labels: int64 tensor (N,) of every label, readable without decoding any image.
    """

    name: str
    channels: int
    native_size: int | None
    classes: list[str] | None
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        n_classes = len(self.classes) if self.classes is not None else "no"
        return f"{type(self).__name__}('{self.name}', {len(self)} images, {self.channels} channels, {n_classes} classes)"


class ArrayImageSet(ImageSet):
    """Images held in memory.

    In: images, a uint8 tensor (N, C, H, W); labels, int64-convertible (N,) or None (all -1).
    Out: (images[i], int(labels[i])). The tensors are shared, not copied: do not modify them in place.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        name: str = "arrays",
        classes: list[str] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise SelfsupError(f"ArrayImageSet needs images as a uint8 tensor (N, C, H, W), got {got}; convert them first")
        labels = torch.full((len(images),), -1, dtype=torch.int64) if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (len(images),):
            raise SelfsupError(f"ArrayImageSet got {len(images)} images but labels of shape {tuple(labels.shape)}; pass one label per image")
        self.images, self.labels = images, labels
        self.name, self.classes = name, classes
        self.channels = images.shape[1]
        self.native_size = images.shape[2] if images.shape[2] == images.shape[3] else None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class SubsetImages(ImageSet):
    """images[indices[i]] for i in 0..len(indices)-1, with the set's name, channels, size, classes and labels."""

    def __init__(self, images: ImageSet, indices: torch.Tensor):
        self.images, self.indices = images, indices
        self.labels = images.labels[indices]
        self.name, self.channels, self.native_size, self.classes = (images.name, images.channels, images.native_size,
                                                                    images.classes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[int(self.indices[i])]


def seeded_subset(images: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """n images of `images` drawn without replacement by a generator seeded with `seed`, in their original order
    (all of them when there are n or fewer). The online probe (train/probe.py) and `selfsup eval --limit` pick their
    examples with it."""
    if len(images) <= n:
        return images
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return SubsetImages(images, chosen.sort().values)
