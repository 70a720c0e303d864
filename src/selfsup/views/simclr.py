"""SimCLR's augmentation recipe (Chen et al. 2020, appendix A), scaled for small images."""

import torch
from torchvision.transforms import v2

from selfsup.views.eval import normalization_for


class SimCLRViews:
    """One uint8 image (C, H, W) -> `n_views` independently augmented float views (C, S, S).

    Random resized crop (scale `min_scale`..1) + horizontal flip + colour jitter with p 0.8
    (strength s: brightness/contrast/saturation 0.8s, hue 0.2s) + grayscale with p 0.2 +
    Gaussian blur with p 0.5. Blur is dropped below 64 px as lightly and solo-learn do for
    CIFAR: at that size a kernel of 10% of the side erases most of the image. One-channel
    images get brightness/contrast jitter only (saturation, hue and grayscale need colour).
    """

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08,
                 jitter_strength: float = 1.0, n_views: int = 2):
        self.n_views = n_views
        s = jitter_strength
        colour = [v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                  v2.RandomGrayscale(p=0.2)]
        if channels == 1:
            colour = [v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s)], p=0.8)]
        blur = []
        if image_size >= 64:
            kernel = int(0.1 * image_size) // 2 * 2 + 1  # odd, ~10% of the side
            blur = [v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5)]
        mean, std = normalization_for(channels)
        self.transform = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            *colour,
            *blur,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image) for _ in range(self.n_views)]
