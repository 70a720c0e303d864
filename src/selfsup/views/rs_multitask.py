"""Views of the remote-sensing multitask network (Li, Chen, Shi, IEEE JSTARS 2021): an image x, x with a corrupted
square (the inpainting input) and T(x) for one of 6 transformations T after shortcut breakers (the pair for
transformation recognition and instance discrimination). Every draw comes from torch's global generator, which the
loader seeds per sample (train.resume.seeded), so a resumed run sees the same views."""

import math

import torch
from torchvision.transforms import v2

from selfsup.errors import SelfsupError
from selfsup.views.bands import photometric
from selfsup.views.byol import JITTER
from selfsup.views.eval import normalization_for

# T_k: k = 0..3 a rotation by k·90° (counter-clockwise, torch.rot90), 4 a horizontal flip, 5 a vertical flip
TRANSFORMS = ("rot0", "rot90", "rot180", "rot270", "hflip", "vflip")
CORRUPTIONS = ("jitter", "flip", "rotate")  # what happens inside the square, one drawn uniformly


def transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """T_k of a square image (..., S, S) -> (..., S, S): exact (no resampling)."""
    if k < 4:
        return torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1 if k == 4 else -2)


def inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """T_k⁻¹: rotations back by k·90°; the flips are their own inverses."""
    return torch.rot90(x, -k, dims=(-2, -1)) if k < 4 else transform(x, k)


def square_sides(S: int, low: float, high: float) -> tuple[int, int]:
    """The integer sides s with low·S <= s <= high·S, as (smallest, largest). SelfsupError when none fits."""
    smallest, largest = max(1, math.ceil(low * S)), math.floor(high * S)
    if smallest > largest:
        raise SelfsupError(f"rs-multitask's corrupted square must be {low:g}-{high:g} of the {S} px side, and no whole "
                           "number of pixels is; pass a larger --image-size or a wider square_min..square_max")
    return smallest, largest


class RSMultitaskViews:
    """One uint8 tile (C, H, W) -> [x, x_tilde, t (C, S, S) float, k () int64, box (4,) int64].

    x: a random resized crop of the tile (scale `min_scale`..1, aspect 3/4..4/3) to S, normalised with the run's
    statistics; no colour change.
    x_tilde: x with one square corrupted in place: side s drawn uniformly among the whole pixel counts in
    [`square`[0]·S, `square`[1]·S] (20-33 % of the side in the paper), placed uniformly inside the image; the
    square's own content is colour-jittered (views.bands.photometric with p 1 and no grayscale: RGB jitter
    (0.4, 0.4, 0.2, 0.1), band-wise brightness/contrast for other band counts), flipped (horizontally or vertically)
    or rotated by 90, 180 or 270°, one of the three drawn uniformly. Every value outside the square equals x's.
    box: the square's rows [y0, y1) and columns [x0, x1) as (y0, x0, y1, x1).
    t = T_k(b(x)), k uniform in 0..5 (TRANSFORMS): b the shortcut breakers — a random resized crop of x of scale
    `breaker_scale` (0.7-0.95 of its area) back to S, then colour by views.bands.photometric (RGB: jitter p 0.8 and
    grayscale p 0.2; other band counts: band-wise brightness/contrast only).
    """

    batch = None  # per sample only: the square and the transformation label ride along

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.25, square: tuple[float, float] = (0.2, 0.33),
                 breaker_scale: tuple[float, float] = (0.7, 0.95), jitter_p: float = 0.8,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR):
        self.sides = square_sides(image_size, *square)
        self.crop = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), interpolation=interpolation, antialias=True),
            v2.ToDtype(torch.float32, scale=True)])
        before, after, _ = photometric(channels, JITTER, 1.0, grayscale_p=0.0)
        self.jitter = v2.Compose([*before, *after])  # the square's colour corruption, on float [0, 1]
        before, after, _ = photometric(channels, JITTER, jitter_p)
        self.breakers = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=tuple(breaker_scale), interpolation=interpolation, antialias=True),
            *before, *after])
        self.normalize = v2.Normalize(*normalization_for(channels))

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.crop(image)  # (C, S, S) in [0, 1]
        x_tilde, box = self.corrupt(x)
        k = int(torch.randint(len(TRANSFORMS), ()))
        t = transform(self.breakers(x), k)  # (C, S, S)
        return [self.normalize(x), self.normalize(x_tilde), self.normalize(t), torch.tensor(k), box]

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, S, S) float in [0, 1] -> (x with one square corrupted (C, S, S), box (4,) int64 (y0, x0, y1, x1))."""
        S = x.shape[-1]
        s = int(torch.randint(self.sides[0], self.sides[1] + 1, ()))
        y0, x0 = (int(v) for v in torch.randint(S - s + 1, (2,)))
        patch = x[:, y0:y0 + s, x0:x0 + s]  # (C, s, s)
        kind = CORRUPTIONS[int(torch.randint(len(CORRUPTIONS), ()))]
        if kind == "jitter":
            patch = self.jitter(patch)
        elif kind == "flip":
            patch = patch.flip(-1 if int(torch.randint(2, ())) == 0 else -2)
        else:
            patch = torch.rot90(patch, int(torch.randint(1, 4, ())), dims=(-2, -1))
        out = x.clone()
        out[:, y0:y0 + s, x0:x0 + s] = patch
        return out, torch.tensor([y0, x0, y0 + s, x0 + s])
