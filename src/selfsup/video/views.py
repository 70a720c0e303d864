"""Views of clips: ConST-CL's pair of augmented clips with the random boxes of its local branch, and the
deterministic clip evaluation sees. Augmentations are torchvision.transforms.v2's, which draw their parameters once
per call and apply them to every frame of a video tensor, so a clip is augmented consistently over time."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.errors import SelfsupError

# ImageNet's statistics, the ones every selfsup image recipe normalises RGB with (views/eval.py)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_boxes(k: int, size: int, scale: tuple[float, float] = (0.25, 0.75),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(k, 4) float boxes (x1, y1, x2, y2) in pixels of a size x size frame, each side a uniform fraction in `scale`
    of `size`, the box uniform among the positions that keep it wholly inside: 0 <= x1 < x2 <= size, same for y."""
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise SelfsupError(f"box scale {scale} must satisfy 0 < low <= high <= 1; pass e.g. (0.25, 0.75)")
    sides = (lo + (hi - lo) * torch.rand(k, 2, generator=generator)) * size  # (k, 2) width, height
    corner = torch.rand(k, 2, generator=generator) * (size - sides)  # (k, 2) x1, y1 in [0, size - side]
    return torch.cat([corner, corner + sides], dim=1)  # (k, 4)


def to_input(clip: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> float (3, T, H, W) in [0, 1], normalised with MEAN/STD: a video network's input."""
    x = v2.functional.to_dtype(clip, torch.float32, scale=True)
    x = v2.functional.normalize(x, MEAN, STD)  # (T, 3, H, W)
    return x.permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)


class ClipViews:
    """Two clips of one video, uint8 (T, H, W, 3) each -> (view 1 (3, T, S, S), view 2 (3, T, S, S), boxes (K, 4)).

    Both clips get ONE random resized crop (area `scale` of the frame) and flip, so box k covers the same region of
    the scene in both (the correspondence ConST-CL's local loss rests on: the clips are far apart in time, the scene
    moved, the region did not); colour jitter (p 0.8: brightness, contrast, saturation 0.4, hue 0.1) and grayscale
    (p 0.2) are drawn for each clip apart, as for two image views (SimCLR's). K boxes from `random_boxes` in pixels of
    the S x S view. Randomness from torch's global RNG.
    """

    def __init__(self, size: int, boxes: int = 8, scale: tuple[float, float] = (0.3, 1.0),
                 box_scale: tuple[float, float] = (0.25, 0.75)):
        self.size, self.boxes, self.box_scale = size, boxes, box_scale
        self.geometry = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True),
                                    v2.RandomHorizontalFlip()])
        self.colour = v2.Compose([v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                                  v2.RandomGrayscale(p=0.2)])

    def __call__(self, clip1: torch.Tensor, clip2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T = clip1.shape[0]
        both = tv_tensors.Video(torch.cat([clip1, clip2]).permute(0, 3, 1, 2))  # (2T, 3, H, W): one crop for both
        both = self.geometry(both)  # (2T, 3, S, S)
        views = [to_input(self.colour(clip)) for clip in (both[:T], both[T:])]  # (3, T, S, S) each
        return views[0], views[1], random_boxes(self.boxes, self.size, self.box_scale)


def eval_clip(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, size, size): shorter side resized to `size`, centre-cropped, normalised."""
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise SelfsupError(f"a clip is uint8 (T, H, W, 3); got shape {tuple(clip.shape)}")
    frames = clip.permute(0, 3, 1, 2)  # (T, 3, H, W)
    frames = v2.functional.resize(frames, size, antialias=True)
    return to_input(v2.functional.center_crop(frames, size))
