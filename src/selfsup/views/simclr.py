"""SimCLR's augmentation recipe (Chen et al. 2020, appendix A), scaled for small images."""

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.views.eval import normalization_for


class SimCLRViews:
    """One uint8 image (C, H, W) -> `n_views` independently augmented float views (C, S, S);
    `batch` does the same for a whole uint8 batch (B, C, H, W) with per-sample parameters.

    Random resized crop (scale `min_scale`..1) + horizontal flip + colour jitter with p 0.8
    (strength s: brightness/contrast/saturation 0.8s, hue 0.2s) + grayscale with p 0.2 +
    Gaussian blur with p 0.5. Blur is dropped below 64 px as lightly and solo-learn do for
    CIFAR: at that size a kernel of 10% of the side erases most of the image. One-channel
    images get brightness/contrast jitter only (saturation, hue and grayscale need colour).
    The per-sample path uses torchvision; the batched one the same operations from kornia.
    """

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08,
                 jitter_strength: float = 1.0, n_views: int = 2):
        self.n_views = n_views
        s = jitter_strength
        jitter = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s) if channels == 3 else (0.8 * s, 0.8 * s)
        mean, std = normalization_for(channels)
        kernel = int(0.1 * image_size) // 2 * 2 + 1  # odd, ~10% of the side
        blur = image_size >= 64
        self.transform = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(*jitter)], p=0.8),
            *([v2.RandomGrayscale(p=0.2)] if channels == 3 else []),
            *([v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5)] if blur else []),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])
        self.batch_transform = nn.Sequential(
            K.RandomResizedCrop((image_size, image_size), scale=(min_scale, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(*jitter, p=0.8),
            *([K.RandomGrayscale(p=0.2)] if channels == 3 else []),
            *([K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5)] if blur else []),
            K.Normalize(torch.tensor(mean), torch.tensor(std)),
        )

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image) for _ in range(self.n_views)]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> `n_views` float batches (B, C, S, S)."""
        x = images.float() / 255
        return [self.batch_transform(x) for _ in range(self.n_views)]
