"""Photometric steps of the view recipes, chosen by one rule (views.eval.colour_kind): colour jitter and grayscale
for RGB images, brightness/contrast jitter for one channel, and for any other band count (multi-spectral tiles)
band-wise brightness and contrast, which never mixes bands."""

from typing import Any

import kornia.augmentation as K
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.views.eval import colour_kind


def band_jitter(x: torch.Tensor, brightness: tuple[float, float], contrast: tuple[float, float],
                p: float) -> torch.Tensor:
    """Band-wise brightness and contrast of float images x (B, C, H, W) in [0, 1]: with probability p per image, band
    c gets its own contrast factor k_c ~ U(contrast) about its mean m_c over the image, then its own brightness
    factor b_c ~ U(brightness): x_c <- clamp(b_c · (m_c + k_c · (x_c − m_c)), 0, 1). Each output band depends on its
    input band only. Returns (B, C, H, W)."""
    B, C = x.shape[:2]
    k = torch.empty(B, C, 1, 1, device=x.device).uniform_(*contrast)  # (B, C, 1, 1)
    b = torch.empty(B, C, 1, 1, device=x.device).uniform_(*brightness)  # (B, C, 1, 1)
    m = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    jittered = (b * (m + k * (x - m))).clamp(0, 1)  # (B, C, H, W)
    applied = torch.rand(B, 1, 1, 1, device=x.device) < p  # (B, 1, 1, 1)
    return torch.where(applied, jittered, x)


def factor_range(strength: float) -> tuple[float, float]:
    """torchvision's factor range of a jitter strength s: (max(0, 1 − s), 1 + s)."""
    return max(0.0, 1.0 - strength), 1.0 + strength


class BandJitter(v2.Transform):
    """`band_jitter` of one float image (C, H, W) in [0, 1] inside a torchvision v2 pipeline; masks and boxes that
    ride along (DetCon's segment maps) pass unchanged. brightness, contrast: factor ranges (lo, hi)."""

    def __init__(self, brightness: tuple[float, float], contrast: tuple[float, float], p: float = 1.0):
        super().__init__()
        self.brightness, self.contrast, self.p = tuple(brightness), tuple(contrast), p

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.Mask, tv_tensors.BoundingBoxes)) or not isinstance(inpt, torch.Tensor):
            return inpt
        out = band_jitter(inpt.as_subclass(torch.Tensor)[None], self.brightness, self.contrast, self.p)[0]
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class BatchBandJitter(nn.Module):
    """`band_jitter` of a float batch (B, C, H, W) in [0, 1], factors drawn per image and band."""

    def __init__(self, brightness: tuple[float, float], contrast: tuple[float, float], p: float = 1.0):
        super().__init__()
        self.brightness, self.contrast, self.p = tuple(brightness), tuple(contrast), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return band_jitter(x, self.brightness, self.contrast, self.p)


def photometric(channels: int, jitter: tuple[float, ...], jitter_p: float,
                grayscale_p: float = 0.2) -> tuple[list[Any], list[Any], list[nn.Module]]:
    """The colour steps of a crop + colour recipe for images of `channels` (views.eval.colour_kind decides):
    (steps on uint8 before the float conversion, steps on float [0, 1] after it — both per sample, torchvision —,
    batched kornia/torch modules on float (B, C, H, W)).

    jitter: strengths (brightness, contrast, saturation, hue) as torchvision's ColorJitter takes them.
    rgb: ColorJitter(*jitter) with p `jitter_p`, then grayscale with p `grayscale_p`. grey (1 channel): ColorJitter
    of brightness and contrast with p `jitter_p`. bands: `band_jitter` with p `jitter_p`, factor ranges
    (1 − s, 1 + s) of the brightness and contrast strengths s — no saturation, hue or grayscale, which mix bands."""
    kind = colour_kind(channels)
    if kind == "bands":
        ranges = factor_range(jitter[0]), factor_range(jitter[1])
        return [], [BandJitter(*ranges, p=jitter_p)], [BatchBandJitter(*ranges, p=jitter_p)]
    jitter = tuple(jitter) if kind == "rgb" else tuple(jitter[:2])
    grey = kind == "rgb" and grayscale_p > 0
    before = [v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p), *([v2.RandomGrayscale(p=grayscale_p)] * grey)]
    batched = [K.ColorJitter(*jitter, p=jitter_p), *([K.RandomGrayscale(p=grayscale_p)] * grey)]
    return before, [], batched


def solarizes(channels: int) -> bool:
    """Whether solarisation (x ≥ 0.5 -> 1 − x, an intensity fold for display-range images) may apply: RGB and one
    channel, not multi-band tiles, whose [0, 1] values are stretched reflectances."""
    return colour_kind(channels) != "bands"
