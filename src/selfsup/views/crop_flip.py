"""The light recipe of masked image modelling and fine-tuning: random resized crop + flip, no colour."""

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from selfsup.views.eval import Bands, channel_mismatch, match_channels, normalization_for


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


class CropFlip:
    """Light augmentation: random resized crop (scale min_scale..1) + horizontal flip + normalisation; uint8
    (C, H, W) of any channel count -> float (channels, S, S) per image (torchvision), or `.batch` on uint8
    (B, C, H, W) (kornia, per-sample parameters). Fine-tuning and distillation use it as it is."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.5):
        self.channels = channels
        self.transform, self.batch_transform = crop_flip(image_size, channels, min_scale)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(match_channels(image, self.channels))

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device -> float (B, channels, S, S)."""
        x = images.float() / 255  # (B, C, H, W)
        if isinstance(self.channels, Bands) and x.shape[1] != self.channels:  # as match_channels: picked bands
            if x.shape[1] != self.channels.count:
                raise channel_mismatch(self.channels, x.shape[1])
            x = x[:, list(self.channels.index)]
        if x.shape[1] != self.channels:  # as match_channels: grey mean, or grey repeated
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        return self.batch_transform(x)


class CropFlipViews(CropFlip):
    """CropFlip as a view recipe: one view in a list. MAE uses scale 0.2-1, SimMIM 0.67-1: the masking is the
    task, so the views need no colour distortion."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.2):
        super().__init__(image_size, channels, min_scale)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [super().__call__(image)]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> [float (B, C, S, S)]."""
        return [super().batch(images)]
