"""Deterministic preprocessing for evaluation, and the per-channel normalisation shared with training."""

import torch
from torchvision.transforms import v2

# ImageNet statistics for RGB (what timm/torchvision users expect); mid-grey for one channel.
_RGB_MEAN, _RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalization_for(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel used by every view recipe and by evaluation."""
    if channels == 3:
        return _RGB_MEAN, _RGB_STD
    return (0.5,) * channels, (0.5,) * channels


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (channels, H, W): a grayscale encoder sees an RGB image as its channel mean, an RGB one
    sees grey repeated."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return image.float().mean(dim=0, keepdim=True).round().to(torch.uint8)
    return image.expand(channels, -1, -1)


class EvalTransform:
    """uint8 (C, H, W) of any channel count -> float (channels, S, S): match the channels, resize the shorter side
    to S, centre crop, normalise."""

    def __init__(self, image_size: int, channels: int):
        self.channels = channels
        mean, std = normalization_for(channels)
        self.transform = v2.Compose([
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(match_channels(image, self.channels))
