"""BYOL's asymmetric two-view recipe (Grill et al. 2020, appendix B, table 6), scaled for small images."""

import torch

from selfsup.views.eval import normalization_for
from selfsup.views.simclr import crop_and_colour

# (view 1, view 2) probabilities from BYOL's table 6: the two views are augmented differently.
BLUR_P = (1.0, 0.1)
SOLARIZE_P = (0.0, 0.2)
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue


class BYOLViews:
    """One uint8 image (C, H, W) -> [view 1, view 2], float (C, S, S); `batch` does the same for a
    uint8 batch (B, C, H, W) with per-sample parameters.

    Both views: `crop_and_colour` with crop scale `min_scale`..1, jitter (0.4, 0.4, 0.2, 0.1) with
    p 0.8, grayscale p 0.2; then blur with p `blur_p[v]` and solarisation with p `solarize_p[v]`:
    (1.0, 0.1) and (0.0, 0.2) in the paper. Blur is dropped below 64 px, as in SimCLRViews.
    """

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08,
                 blur_p: tuple[float, float] = BLUR_P, solarize_p: tuple[float, float] = SOLARIZE_P):
        self.mean, self.std = normalization_for(channels)
        recipes = [crop_and_colour(image_size, channels, (min_scale, 1.0), JITTER, blur_p=b, solarize_p=s)
                   for b, s in zip(blur_p, solarize_p)]
        self.transforms = [per_sample for per_sample, _ in recipes]
        self.batch_transforms = [batched for _, batched in recipes]

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [transform(image) for transform in self.transforms]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> [view 1, view 2], float batches (B, C, S, S)."""
        x = images.float() / 255
        return [transform(x) for transform in self.batch_transforms]
