"""GLCNet's views (Li et al., IEEE TGRS 2022): two augmented views of one tile with a per-pixel index map that tracks
where every view pixel came from, and P matched patches (the same source pixels) cut from both."""

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.errors import SelfsupError
from selfsup.views.bands import photometric
from selfsup.views.byol import JITTER
from selfsup.views.eval import normalization_for

PATCH_FRACTION = 48 / 256  # the paper's local patches: up to 48 px in a 256 px view
DRAWS = 20  # view pairs drawn before giving up on one whose patches cover pixels of both views


class RandomRot90(v2.Transform):
    """Rotation by k·90°, k uniform in {0, 1, 2, 3}, of every input of one call alike (image and index map): exact,
    no resampling, for square inputs (..., S, S)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class GLCNetViews:
    """One uint8 tile (C, H, W) -> [view 1, view 2 (C, S, S) float, masks 1, masks 2 (P, S, S) bool].

    Each view: random resized crop (scale `min_scale`..1, aspect 3/4..4/3) to S, horizontal and vertical flips
    (p 0.5 each), a rotation by k·90°, then colour by the one rule of views.bands.photometric (RGB: BYOL's jitter
    (0.4, 0.4, 0.2, 0.1) with p `jitter_p` and grayscale p 0.2; one channel: brightness/contrast; other band counts:
    band-wise brightness/contrast), normalised with the run's statistics. The geometric steps move an index map
    n = y·W + x of the tile's pixels with the image (nearest neighbour), so index_v[i, j] is the source pixel of view
    v's pixel (i, j).

    Patches: the two crops' source rectangles overlap (crops of scale >= 0.4 always do); P squares of side
    s = `patch_fraction` x the shorter side of the smaller crop (the paper's 48 px in a 256 px view), cut to the
    overlap where it is narrower ("up to"), are placed uniformly inside the overlap, in source pixels. masks_v[p] marks
    the pixels of view v whose source lies in square p: the same source pixels in both views, whatever the flips
    and rotations did. A pair whose patches miss the pixels of a view (a crop far smaller than S's sampling step) is
    drawn again, up to DRAWS times; SelfsupError after that.
    """

    batch = None  # the index maps ride along per sample: no batched on-device recipe

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.4, n_patches: int = 4,
                 patch_fraction: float = PATCH_FRACTION, jitter_p: float = 0.8,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR):
        self.n_patches, self.patch_fraction, self.min_scale = n_patches, patch_fraction, min_scale
        self.geometry = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRot90(),
        ])
        before, after, _ = photometric(channels, JITTER, jitter_p)
        mean, std = normalization_for(channels)
        self.colour = v2.Compose([*before, v2.ToDtype(torch.float32, scale=True), *after, v2.Normalize(mean, std)])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        x1, x2, masks1, masks2, _ = self.draw(image)
        return [x1, x2, masks1, masks2]

    def draw(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 (C, H, W) -> (view 1, view 2 (C, S, S) float, masks 1, masks 2 (P, S, S) bool, boxes (P, 4) int64:
        each patch's source rows [y0, y1) and columns [x0, x1) as (y0, x0, y1, x1))."""
        H, W = image.shape[-2:]
        source = tv_tensors.Mask(torch.arange(H * W).view(H, W))  # (H, W) n = y·W + x
        for _ in range(DRAWS):
            pairs = [self.geometry(tv_tensors.Image(image), source) for _ in range(2)]
            index1, index2 = (n.as_subclass(torch.Tensor) for _, n in pairs)  # (S, S) int64 each
            boxes = self.patches(index1, index2, W)
            if boxes is None:
                continue
            masks1, masks2 = self.masks(index1, boxes, W), self.masks(index2, boxes, W)  # (P, S, S) each
            if masks1.flatten(1).any(1).all() and masks2.flatten(1).any(1).all():
                x1, x2 = (self.colour(view).as_subclass(torch.Tensor) for view, _ in pairs)
                return x1, x2, masks1, masks2, boxes
        raise SelfsupError(f"glcnet found no two crops sharing pixels of a {H}x{W} image in {DRAWS} draws; pass a "
                           f"larger crop_min_scale (now {self.min_scale:g}) or a larger patch_fraction")

    def patches(self, index1: torch.Tensor, index2: torch.Tensor, W: int) -> torch.Tensor | None:
        """Index maps (S, S) x 2 of a W-wide tile -> (P, 4) source boxes (y0, x0, y1, x1) inside both crops' source
        rectangles, or None when the rectangles do not overlap."""
        rows, cols = (index1 // W, index2 // W), (index1 % W, index2 % W)
        top, bottom = max(int(r.min()) for r in rows), min(int(r.max()) for r in rows) + 1
        left, right = max(int(c.min()) for c in cols), min(int(c.max()) for c in cols) + 1
        if bottom <= top or right <= left:
            return None
        shorter = min(min(int(r.max() - r.min()), int(c.max() - c.min())) + 1 for r, c in zip(rows, cols))
        side = max(1, round(self.patch_fraction * shorter))  # s, in source pixels
        h, w = min(side, bottom - top), min(side, right - left)  # up to s: cut to the overlap
        y0 = top + torch.randint(bottom - top - h + 1, (self.n_patches,))  # (P,)
        x0 = left + torch.randint(right - left - w + 1, (self.n_patches,))
        return torch.stack([y0, x0, y0 + h, x0 + w], dim=1)  # (P, 4)

    @staticmethod
    def masks(index: torch.Tensor, boxes: torch.Tensor, W: int) -> torch.Tensor:
        """Index map (S, S), boxes (P, 4) -> (P, S, S) bool: pixel (i, j) of the view is in patch p when its source
        pixel lies in box p."""
        y, x = (index // W)[None], (index % W)[None]  # (1, S, S) source row and column
        y0, x0, y1, x1 = (boxes[:, k, None, None] for k in range(4))  # (P, 1, 1) each
        return (y >= y0) & (y < y1) & (x >= x0) & (x < x1)  # (P, S, S)
