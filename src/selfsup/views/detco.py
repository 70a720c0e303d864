"""DetCo's views (Xie et al. 2021, sec. 3.3): each image gives a global view (MoCo v2's recipe) and a local view, a 3x3
jigsaw of patches (64 px at 224 px in the paper) of a random crop, each patch colour-augmented on its own."""

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.views.bands import photometric
from selfsup.views.eval import normalization_for
from selfsup.views.simclr import crop_and_colour, simclr_jitter

GRID = 3  # a GRID x GRID jigsaw
PATCH_FRACTION = 64 / 224  # the paper's patch side over its image side


def jigsaw(crop: torch.Tensor) -> torch.Tensor:
    """(..., C, 3p, 3p) -> (..., 9, C, p, p): the crop cut into a 3x3 grid of p x p tiles, row by row (tile 3r + c
    is rows rp..(r+1)p, columns cp..(c+1)p), so that the tiles cover the crop exactly once."""
    *lead, C, H, W = crop.shape
    p = H // GRID
    tiles = crop.reshape(*lead, C, GRID, p, GRID, p).movedim(-4, -5).movedim(-2, -4)  # (..., 3, 3, C, p, p)
    return tiles.reshape(*lead, GRID * GRID, C, p, p)


def patch_colour(size: int, channels: int, jitter: tuple[float, ...]) -> tuple[v2.Compose, nn.Sequential]:
    """One patch's own augmentation, per patch (torchvision, uint8 (C, p, p)) and batched (kornia, float (N, C, p, p)
    in [0, 1], parameters per patch): `crop_and_colour` without the crop and flip (the jigsaw crop did those) —
    colour jitter p 0.8, grayscale p 0.2 (multi-band patches: band-wise brightness/contrast, views.bands.photometric),
    blur p 0.5 from 64 px, normalisation."""
    blur = size >= 64
    before, after, batched_colour = photometric(channels, jitter, 0.8)
    mean, std = normalization_for(channels)
    kernel = int(0.1 * size) // 2 * 2 + 1
    per_patch = v2.Compose([
        *before,
        *([v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5)] if blur else []),
        v2.ToDtype(torch.float32, scale=True),
        *after,
        v2.Normalize(mean, std),
    ])
    batched = nn.Sequential(
        *batched_colour,
        *([K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5)] if blur else []),
        K.Normalize(torch.tensor(mean), torch.tensor(std)),
    )
    return per_patch, batched


class DetCoViews:
    """uint8 image (C, H, W) -> [global q, global k (C, S, S), local q, local k (9, C, p, p)], float; `batch` does the
    same for a uint8 batch (B, C, H, W) on the device (global (B, C, S, S), local (B, 9, C, p, p)).

    Global: MoCo v2's recipe (`crop_and_colour`, crop scale `min_scale`-1, SimCLR jitter of strength
    `jitter_strength`). Local: a random resized crop (same scale range) to 3p x 3p + horizontal flip, cut into the
    3x3 jigsaw by `jigsaw`, then every patch colour-augmented independently by `patch_colour`. p is
    round(S · 64/224) by default (the paper: 64 px patches at 224 px), at least 1.
    """

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.2, jitter_strength: float = 0.5,
                 patch_size: int | None = None):
        p = patch_size or max(1, round(image_size * PATCH_FRACTION))
        self.patch_size, jitter = p, simclr_jitter(jitter_strength)
        self.global_transform, self.global_batch = crop_and_colour(image_size, channels, (min_scale, 1.0), jitter)
        self.local_crop = v2.Compose([v2.RandomResizedCrop(GRID * p, scale=(min_scale, 1.0), antialias=True),
                                      v2.RandomHorizontalFlip()])
        self.local_crop_batch = nn.Sequential(K.RandomResizedCrop((GRID * p, GRID * p), scale=(min_scale, 1.0)),
                                              K.RandomHorizontalFlip())
        self.patch_transform, self.patch_batch = patch_colour(p, channels, jitter)

    def local(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) -> (9, C, p, p) float patches."""
        return torch.stack([self.patch_transform(tile) for tile in jigsaw(self.local_crop(image))])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.global_transform(image), self.global_transform(image), self.local(image), self.local(image)]

    def local_batch(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, C, H, W) in [0, 1] -> (B, 9, C, p, p), parameters drawn per image (crop) and per patch (colour)."""
        tiles = jigsaw(self.local_crop_batch(x))  # (B, 9, C, p, p)
        return self.patch_batch(tiles.flatten(0, 1)).reshape(tiles.shape)

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> [global q, global k (B, C, S, S), local q, local k (B, 9, C, p, p)]."""
        x = images.float() / 255
        return [self.global_batch(x), self.global_batch(x), self.local_batch(x), self.local_batch(x)]
