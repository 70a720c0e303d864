"""The light recipe of masked image modelling and fine-tuning: random resized crop + flip, no colour."""

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.views.eval import normalization_for


def crop_flip(image_size: int, channels: int, min_scale: float) -> tuple[v2.Compose, nn.Sequential]:
    """Random resized crop (scale min_scale..1) + horizontal flip + normalisation, per sample (torchvision,
    uint8 (C, H, W)) and batched (kornia, float (B, C, H, W) in [0, 1], parameters drawn per sample)."""
    mean, std = normalization_for(channels)
    per_sample = v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])
    batched = nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=(min_scale, 1.0)), K.RandomHorizontalFlip(),
        K.Normalize(torch.tensor(mean), torch.tensor(std)),
    )
    return per_sample, batched


class CropFlipViews:
    """One uint8 image (C, H, W) -> [one cropped, flipped, normalised float view (C, S, S)]; `batch`
    does the same for uint8 (B, C, H, W). MAE uses scale 0.2-1, SimMIM 0.67-1: the masking is the
    task, so the views need no colour distortion."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.2):
        self.transform, self.batch_transform = crop_flip(image_size, channels, min_scale)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image)]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> [float (B, C, S, S)]."""
        return [self.batch_transform(images.float() / 255)]
