"""Exemplar-CNN's transformations (Dosovitskiy et al. 2014, section 2): every view of an image is the
whole image under a random composition of translation, scaling, rotation and colour changes."""

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from selfsup.views.bands import BandJitter, BatchBandJitter
from selfsup.views.eval import colour_kind, normalization_for


class ExemplarViews:
    """One uint8 image (C, H, W) -> `n_views` transformed float copies (C, S, S); `batch` does the
    same for a uint8 batch (B, C, H, W) with parameters drawn per sample (kornia).

    Every copy gets all transformations, with magnitudes drawn uniformly from the paper's ranges:
    translation up to 0.2 of the side in x and y, scale 0.7-1.4, rotation ±20°, contrast 0.5-2,
    brightness (value) 0.7-1.4 and, for colour images, saturation 0.7-1.4 and hue ±0.1 of the
    circle. One-channel images get contrast and brightness only, multi-band images (views.eval.colour_kind) the
    same ranges drawn per band (views.bands.band_jitter). The paper's contrast acts along
    the principal components of all pixels and raises S and V to a power 0.25-4; here contrast is
    torchvision's blend with the grey mean and there is no power. Areas moved in from outside are black.
    """

    def __init__(self, image_size: int, channels: int, n_views: int = 2, translation: float = 0.2,
                 scale: tuple[float, float] = (0.7, 1.4), rotation: float = 20.0,
                 contrast: tuple[float, float] = (0.5, 2.0), brightness: tuple[float, float] = (0.7, 1.4),
                 saturation: tuple[float, float] = (0.7, 1.4), hue: float = 0.1):
        self.image_size, self.n_views = image_size, n_views
        jitter = {"brightness": brightness, "contrast": contrast}
        kind = colour_kind(channels)
        if kind == "rgb":
            jitter.update(saturation=saturation, hue=(-hue, hue))
        mean, std = normalization_for(channels)
        affine = {"degrees": rotation, "translate": (translation, translation), "scale": scale}
        self.geometric = v2.RandomAffine(**affine, interpolation=InterpolationMode.BILINEAR)
        # multi-band images: the same brightness and contrast ranges, drawn per band (views.bands)
        self.photometric = BandJitter(brightness, contrast) if kind == "bands" else v2.ColorJitter(**jitter)
        self.transform = v2.Compose([
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            self.geometric,
            v2.ToDtype(torch.float32, scale=True),
            self.photometric,
            v2.Normalize(mean, std),
        ])
        self.batch_geometric = K.RandomAffine(**affine, p=1.0)
        self.batch_photometric = (BatchBandJitter(brightness, contrast) if kind == "bands" else
                                  K.ColorJitter(**jitter, p=1.0))
        self.batch_transform = nn.Sequential(self.batch_geometric, self.batch_photometric,
                                             K.Normalize(torch.tensor(mean), torch.tensor(std)))

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image) for _ in range(self.n_views)]

    def batch(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) on any device -> `n_views` float batches (B, C, S, S)."""
        x = images.float() / 255
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return [self.batch_transform(x) for _ in range(self.n_views)]
