"""A dataset of (image, label) samples seen through a transform: a view recipe or eval preprocessing."""

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset


class TransformedImages(Dataset):
    """(image, label) -> (transform(image), label); with a view recipe the first item is a list of views."""

    def __init__(self, images: Dataset, transform: Callable[[Any], Any]):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, label = self.images[i]
        return self.transform(image), label
