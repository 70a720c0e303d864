"""Deterministic preprocessing for evaluation, and the per-channel normalisation shared with training."""

import torch
from torchvision.transforms import v2

from selfsup.errors import SelfsupError

# ImageNet statistics for RGB (what timm/torchvision users expect); mid-grey for one channel.
_RGB_MEAN, _RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Bands(int):
    """A channel count that also carries what a multi-band (TIFF) run measured about its bands: Bands(n) == n.

    mean, std: per band, in [0, 1] units of the uint8 pixels (data.tiff.band_stats); rgb: whether the bands are an RGB
    image (colour operations apply); index: the 0-based bands picked from each file (--bands), count: the bands each
    file holds. A view recipe or EvalTransform given Bands instead of an int normalises with these numbers and
    applies colour operations only when rgb (see colour_kind). Made from a run's data_meta by `channels_of`.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    rgb: bool
    index: tuple[int, ...]
    count: int

    def __new__(cls, n: int, mean: tuple[float, ...] = (), std: tuple[float, ...] = (), rgb: bool = False,
                index: tuple[int, ...] = (), count: int = 0) -> "Bands":
        bands = super().__new__(cls, n)
        bands.mean, bands.std, bands.rgb = tuple(mean), tuple(std), bool(rgb)
        bands.index, bands.count = tuple(index) or tuple(range(n)), count or n
        return bands


def channels_of(data_meta: dict) -> int:
    """data_meta["in_chans"], as Bands when the run recorded band statistics (data_meta["bands"], a TIFF run)."""
    bands = data_meta.get("bands")
    if not bands:
        return data_meta["in_chans"]
    return Bands(data_meta["in_chans"], bands["mean"], bands["std"], bands["rgb"], bands["index"], bands["count"])


def colour_kind(channels: int) -> str:
    """The one rule of which photometric operations a view recipe may apply to images of `channels`:
    'rgb' (3 channels that are an RGB image): colour jitter (brightness, contrast, saturation, hue), grayscale,
    solarisation; 'grey' (1 channel): brightness/contrast jitter and solarisation; 'bands' (any other count, or 3
    bands that are not RGB, e.g. --bands 4,5,6 of a Landsat tile): band-wise brightness/contrast only (views.bands)."""
    if channels == 1:
        return "grey"
    if channels == 3 and (not isinstance(channels, Bands) or channels.rgb):
        return "rgb"
    return "bands"


def normalization_for(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel used by every view recipe and by evaluation: a multi-band run's own (Bands),
    ImageNet's for RGB, 0.5 for any other count."""
    if isinstance(channels, Bands) and channels.mean:
        return channels.mean, channels.std
    if channels == 3:
        return _RGB_MEAN, _RGB_STD
    return (0.5,) * channels, (0.5,) * channels


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (channels, H, W): a grayscale encoder sees an RGB image as its channel mean, an RGB one
    sees grey repeated; a multi-band encoder (Bands) picks its bands from images with the bands of its training
    files. SelfsupError for any other pair of counts."""
    if isinstance(channels, Bands) and image.shape[0] == channels.count:
        return image if channels.index == tuple(range(channels.count)) else image[list(channels.index)]
    if image.shape[0] == channels:
        return image
    if isinstance(channels, Bands):  # a multi-band encoder: no grey mean, no grey repeated into its bands
        raise channel_mismatch(channels, image.shape[0])
    if channels == 1:
        return image.float().mean(dim=0, keepdim=True).round().to(torch.uint8)
    if image.shape[0] == 1:
        return image.expand(channels, -1, -1)
    raise channel_mismatch(channels, image.shape[0])


def channel_mismatch(channels: int, got: int) -> SelfsupError:
    """The one line for images of `got` channels given to an encoder of `channels` (int or Bands)."""
    held = (f" (bands {', '.join(str(i + 1) for i in channels.index)} of {channels.count}-band files)"
            if isinstance(channels, Bands) and channels.count != channels else "")
    return SelfsupError(f"the encoder takes {int(channels)}-channel images{held} and these have {got}: pass images "
                        "with the bands it was trained on")


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
