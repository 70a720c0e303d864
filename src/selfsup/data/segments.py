"""Unsupervised masks for object-level pretraining: Felzenszwalb–Huttenlocher or SLIC segments (scikit-image), or a
spatial grid, computed once per image in a one-off pass and cached beside the folder index.

DetCon (Hénaff et al. 2021, sec. 3.2) contrasts features pooled inside such masks; a mask map is an integer image
(H, W) whose value is the segment id of each pixel.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from selfsup.errors import SelfsupError

from .cache import cache_root

MASK_SOURCES = ("fh", "slic", "grid")
REFERENCE_AREA = 224 * 224  # FH's scale and min_size are given for a 224 px image and scaled with the image's area


@dataclass(frozen=True)
class MaskRecipe:
    """How to segment an image: source 'fh' (Felzenszwalb–Huttenlocher, `scale` and `min_size` at 224 px), 'slic'
    (`n_segments` superpixels) or 'grid' (a `grid` x `grid` partition)."""

    source: str = "fh"
    scale: float = 1000.0
    min_size: int = 1000
    n_segments: int = 16
    grid: int = 4

    def __post_init__(self) -> None:
        if self.source not in MASK_SOURCES:
            raise SelfsupError(f"unknown mask source '{self.source}': pass one of {', '.join(MASK_SOURCES)}")

    def key(self) -> str:
        return f"{self.source}-{self.scale}-{self.min_size}-{self.n_segments}-{self.grid}"


def segment(image: torch.Tensor, recipe: MaskRecipe) -> np.ndarray:
    """uint8 image (C, H, W) -> int16 segment ids (H, W), 0..K-1. FH's scale and min_size are multiplied by
    H·W / 224²: both act through component sizes in pixels (FH merges while the edge weight < scale/|C|), so this
    keeps the segmentation of a small image like that of the same image at 224 px (at 64 px: ~12 segments on
    paste-scenes instead of 2) — a deviation from DetCon, which segments full ImageNet images."""
    _, h, w = image.shape
    if recipe.source == "grid":
        rows = np.arange(h) * recipe.grid // h  # (H,)
        cols = np.arange(w) * recipe.grid // w  # (W,)
        return (rows[:, None] * recipe.grid + cols[None, :]).astype(np.int16)
    from skimage.segmentation import felzenszwalb, slic  # imported here: skimage takes a second to import

    pixels = image.permute(1, 2, 0).numpy()  # (H, W, C)
    channel_axis = -1 if pixels.shape[2] > 1 else None
    pixels = pixels if channel_axis is not None else pixels[:, :, 0]
    if recipe.source == "fh":
        area = h * w / REFERENCE_AREA
        ids = felzenszwalb(pixels, scale=recipe.scale * area, min_size=max(1, round(recipe.min_size * area)),
                           channel_axis=channel_axis)
    else:
        ids = slic(pixels, n_segments=recipe.n_segments, start_label=0, channel_axis=channel_axis)
    return _renumbered(ids)


def _renumbered(ids: np.ndarray) -> np.ndarray:
    """Ids 0..K-1 in order of first appearance, int16."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].reshape(ids.shape).astype(np.int16)


class SegmentedImages(Dataset):
    """(image, label) -> ((image, segment ids (H, W) int16), label), the segments computed once for every image (a
    progress bar; the cost is printed per 1,000 images) and cached in CACHE/segments/, keyed by the data set's
    name, its images (paths where it has them) and the recipe. A second run, or epoch, pays nothing."""

    def __init__(self, images: Dataset, recipe: MaskRecipe):
        self.images, self.recipe = images, recipe
        path = cache_root() / "segments" / f"{_data_key(images, recipe)}.npz"
        self.segments = _read(path, len(images))
        if self.segments is None:
            self.segments = _compute(images, recipe)
            _write(path, self.segments)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, label = self.images[i]
        segments = torch.from_numpy(self.segments[i])
        if segments.shape != image.shape[1:]:  # the file changed since the cache was written
            segments = torch.from_numpy(segment(image, self.recipe))
        return (image, segments), label


def _data_key(images: Dataset, recipe: MaskRecipe) -> str:
    """What identifies the images: along the wrappers (SkipBadImages, Subset), the set's name, its paths where it
    has them, and the subset's indices."""
    parts = [recipe.key(), str(len(images))]
    while images is not None:
        parts += [str(getattr(images, "name", type(images).__name__)), *map(str, getattr(images, "indices", [])),
                  *map(str, getattr(images, "paths", []))]
        inner = [getattr(images, a, None) for a in ("images", "dataset")]
        images = next((d for d in inner if isinstance(d, Dataset)), None)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _compute(images: Dataset, recipe: MaskRecipe) -> list[np.ndarray]:
    start = time.perf_counter()
    segments = [segment(images[i][0], recipe) for i in tqdm(range(len(images)), desc=f"{recipe.source} masks (once)",
                                                              disable=None)]
    per_1000 = (time.perf_counter() - start) * 1000 / max(1, len(images))
    print(f"selfsup: {recipe.source} masks of {len(images)} images in {per_1000 * len(images) / 1000:.1f}s "
          f"({per_1000:.1f}s per 1,000 images), cached for later runs")
    return segments


def _read(path: os.PathLike, n: int) -> list[np.ndarray] | None:
    """The cached segment maps, or None when the file is missing, unreadable or of another length."""
    try:
        with np.load(path) as f:
            flat, shapes = f["flat"], f["shapes"]
    except (OSError, KeyError, ValueError):
        return None
    if len(shapes) != n:
        return None
    ends = np.cumsum(shapes[:, 0] * shapes[:, 1])
    return [flat[e - h * w:e].reshape(h, w) for e, (h, w) in zip(ends, shapes)]


def _write(path, segments: list[np.ndarray]) -> None:
    """All maps in one file (flat int16 + shapes), written atomically; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temp, flat=np.concatenate([s.ravel() for s in segments]),
                 shapes=np.array([s.shape for s in segments], dtype=np.int64))
        os.replace(temp, path)
    except OSError:
        pass
