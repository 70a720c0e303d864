"""Frozen features of a labeled image set, and the encoders evaluation compares."""

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.checkpoints import backbone_from_checkpoint
from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone
from selfsup.views import EvalTransform, TransformedImages


class Encoder(nn.Module):
    """A frozen backbone with its input recipe: `transform` turns one uint8 image (C, H, W) into
    the float input (in_chans, S, S) it was trained on; forward maps (B, in_chans, S, S) -> (B, D)."""

    def __init__(self, backbone: nn.Module, image_size: int, in_chans: int, description: str):
        super().__init__()
        self.backbone, self.image_size, self.in_chans = backbone, image_size, in_chans
        self.description = description
        self.preprocess = EvalTransform(image_size, in_chans)

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        return self.preprocess(_match_channels(image, self.in_chans))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def _match_channels(image: torch.Tensor, in_chans: int) -> torch.Tensor:
    # A grayscale-trained encoder sees an RGB image as its channel mean; an RGB one sees grey repeated.
    if image.shape[0] == in_chans:
        return image
    if in_chans == 1:
        return image.float().mean(dim=0, keepdim=True).round().to(torch.uint8)
    return image.expand(in_chans, -1, -1)


def load_encoder(checkpoint: str, channels: int, native_size: int | None, backbone: str = "resnet18",
                 small_stem: bool = False, image_size: int | None = None,
                 backbone_kwargs: dict | None = None) -> Encoder:
    """The encoder to evaluate: a checkpoint's backbone, 'random' (an untrained `backbone`), or
    'pixels' (the preprocessed image, flattened). Channels and size come from the data unless
    the checkpoint fixes them."""
    size = image_size or native_size or 224
    if checkpoint == "pixels":
        return Encoder(nn.Flatten(), size, channels, "raw pixels")
    if checkpoint == "random":
        model = create_backbone(backbone, in_chans=channels, small_stem=small_stem, **(backbone_kwargs or {}))
        return Encoder(model, size, channels, f"random-init {backbone}")
    model, meta = backbone_from_checkpoint(checkpoint)
    description = f"{meta['method']} {meta['method_config']['backbone']}"
    return Encoder(model, image_size or meta["image_size"], meta["in_chans"], description)


@torch.no_grad()
def extract_features(encoder: Encoder, images: Dataset, batch_size: int = 256, num_workers: int = 0,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), labels (N,)) of every image, in order, with the encoder in eval mode."""
    if len(images) == 0:
        raise SelfsupError(f"no images to evaluate in {getattr(images, 'name', 'the data set')}")
    encoder.eval()
    loader = DataLoader(TransformedImages(images, encoder.transform), batch_size=batch_size, num_workers=num_workers)
    features, labels = [], []
    for batch, label in tqdm(loader, desc=desc, leave=False, disable=None):
        features.append(encoder(batch).float())
        labels.append(label)
    return torch.cat(features), torch.cat(labels)
