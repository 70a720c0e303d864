"""Multi-crop (Caron et al., SwAV, NeurIPS 2020, section 3.2; also DINO): two global crops at the
image size and several small local crops of the same image, each with the SimCLR colour recipe."""

import torch

from selfsup.views.simclr import crop_and_colour, simclr_jitter

LOCAL_FRACTION = 96 / 224  # the paper's 96 px local crops of 224 px images
MIN_LOCAL_SIZE = 4  # any ResNet still reduces this to a 1x1 map; 8 px digits get 4 px local crops


def local_crop_size(image_size: int) -> int:
    """96/224 of the side, rounded (12 px at 28, 14 at 32, 96 at 224), at least 4 px and at most the image."""
    return min(image_size, max(MIN_LOCAL_SIZE, round(image_size * LOCAL_FRACTION)))


class MultiCropViews:
    """One uint8 image (C, H, W) -> `n_global` crops (C, S, S) then `n_local` crops (C, s, s), all cut
    from the same decoded image; `batch` does the same for uint8 (B, C, H, W) with per-sample parameters.

    Paper defaults (SwAV): 2 global crops of 224 px with scale (0.14, 1) and 6 local crops of 96 px
    with scale (0.05, 0.14). Here S is the image size and s = local_crop_size(S) unless given.
    """

    def __init__(self, image_size: int, channels: int, n_local: int = 6, local_size: int | None = None,
                 global_scale: tuple[float, float] = (0.14, 1.0), local_scale: tuple[float, float] = (0.05, 0.14),
                 jitter_strength: float = 1.0, n_global: int = 2):
        self.n_global, self.n_local = n_global, n_local
        self.global_size, self.local_size = image_size, local_size or local_crop_size(image_size)
        jitter = simclr_jitter(jitter_strength)
        self.global_transform, self.global_batch = crop_and_colour(image_size, channels, global_scale, jitter)
        self.local_transform, self.local_batch = crop_and_colour(self.local_size, channels, local_scale, jitter)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return ([self.global_transform(image) for _ in range(self.n_global)]
                + [self.local_transform(image) for _ in range(self.n_local)])

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> n_global batches (B, C, S, S), then n_local (B, C, s, s)."""
        x = images.float() / 255
        return [self.global_batch(x) for _ in range(self.n_global)] + [self.local_batch(x) for _ in range(self.n_local)]
