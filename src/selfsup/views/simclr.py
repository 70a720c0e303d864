"""SimCLR's augmentation recipe (Chen et al. 2020, appendix A), scaled for small images; the crop +
colour recipe that MoCo, BYOL, SimSiam and SwAV's multi-crop build on."""

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.views.bands import photometric, solarizes
from selfsup.views.eval import normalization_for


def simclr_jitter(strength: float) -> tuple[float, float, float, float]:
    """Brightness, contrast, saturation 0.8s and hue 0.2s (SimCLR's colour distortion of strength s)."""
    return 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength


def crop_and_colour(size: int, channels: int, scale: tuple[float, float], jitter: tuple[float, ...],
                    jitter_p: float = 0.8, blur_p: float = 0.5, solarize_p: float = 0.0) -> tuple[v2.Compose, nn.Sequential]:
    """One view's recipe, per sample (torchvision, uint8 (C, H, W)) and batched (kornia, float (B, C, H, W)
    in [0, 1], parameters drawn per sample). Both return normalised float views of `size` px.

    Random resized crop (`scale`) + horizontal flip + colour jitter (brightness, contrast, saturation,
    hue) with p `jitter_p` + grayscale with p 0.2 + Gaussian blur (σ 0.1-2, kernel ~10% of the side)
    with p `blur_p` + solarisation (x ≥ 0.5 -> 1 - x) with p `solarize_p`. Blur is dropped below 64 px,
    as lightly and solo-learn do for CIFAR: at that size a kernel of 10% of the side erases most of the
    image. The colour steps follow views.bands.photometric: one-channel images get brightness/contrast jitter only
    (saturation, hue and grayscale need colour); multi-band images (views.eval.colour_kind 'bands') get band-wise
    brightness/contrast of the same strengths instead, and no solarisation.
    """
    blur, solarize = size >= 64 and blur_p > 0, solarize_p > 0 and solarizes(channels)
    before, after, batched_colour = photometric(channels, jitter, jitter_p)
    mean, std = normalization_for(channels)
    kernel = int(0.1 * size) // 2 * 2 + 1  # odd, ~10% of the side
    per_sample = v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        *before,
        *([v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p)] if blur else []),
        v2.ToDtype(torch.float32, scale=True),
        *after,
        *([v2.RandomSolarize(0.5, p=solarize_p)] if solarize else []),  # on [0, 1] floats
        v2.Normalize(mean, std),
    ])
    batched = nn.Sequential(
        K.RandomResizedCrop((size, size), scale=scale),
        K.RandomHorizontalFlip(),
        *batched_colour,
        *([K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=blur_p)] if blur else []),
        *([K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p)] if solarize else []),  # exactly 0.5
        K.Normalize(torch.tensor(mean), torch.tensor(std)),
    )
    return per_sample, batched


class SimCLRViews:
    """One uint8 image (C, H, W) -> `n_views` independently augmented float views (C, S, S);
    `batch` does the same for a whole uint8 batch (B, C, H, W) with per-sample parameters.

    `crop_and_colour` with crop scale `min_scale`..1, jitter of strength s with p 0.8, grayscale
    p 0.2, blur p 0.5 (from 64 px).
    """

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08,
                 jitter_strength: float = 1.0, n_views: int = 2):
        self.n_views = n_views
        self.transform, self.batch_transform = crop_and_colour(image_size, channels, (min_scale, 1.0),
                                                               simclr_jitter(jitter_strength))

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image) for _ in range(self.n_views)]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> `n_views` float batches (B, C, S, S)."""
        x = images.float() / 255
        return [self.batch_transform(x) for _ in range(self.n_views)]


class MoCoV1Views(SimCLRViews):
    """MoCo v1's recipe (He et al. 2020, sec. 4): crop scale `min_scale`-1, colour jitter 0.4 on all four
    properties, always applied, grayscale p 0.2, flip; no blur. The paper converts to grayscale before
    the jitter; here it comes after, as in every other recipe (the same thing for one-channel images)."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.2, n_views: int = 2):
        self.n_views = n_views
        self.transform, self.batch_transform = crop_and_colour(image_size, channels, (min_scale, 1.0),
                                                               (0.4, 0.4, 0.4, 0.4), jitter_p=1.0, blur_p=0.0)
