"""The encoders evaluation compares, for every modality, and their frozen features of a labelled set.

An encoder is a pretraining checkpoint's method (its `eval_batch` and `embed`), the same network at random init
(its twin), or a modality's no-pretraining baseline: raw pixels or an untrained image backbone, MFCCs for audio.
"""

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.checkpoints import load_method, modality_of, read_meta
from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone, feature_map
from selfsup.views import EvalTransform

# --checkpoint NAME: a modality's reference without pretraining (text's tfidf is a classifier: eval/run.py)
FEATURE_BASELINES = {"random": "image", "pixels": "image", "mfcc": "audio"}


@dataclass
class FrozenEncoder:
    """`batch` turns labelled inputs (uint8 images, texts, waveforms) into what `embed` maps to (B, D) features, and
    `dense` (image encoders) to (B, D, h, w) per-location features for the dense evaluators."""

    modality: str
    description: str
    batch: Callable[[list], Any]
    embed: Callable[[Any], torch.Tensor]
    module: nn.Module | None = None  # put in eval mode while features are extracted
    image_size: int | None = None
    dense: Callable[[Any], torch.Tensor] | None = None


def checkpoint_modality(checkpoint: str) -> str:
    """The modality of a checkpoint file or of a baseline name, read without loading the weights."""
    if checkpoint in FEATURE_BASELINES:
        return FEATURE_BASELINES[checkpoint]
    if checkpoint == "tfidf":
        return "text"
    return modality_of(read_meta(checkpoint))


def frozen_encoder(checkpoint: str, random_init: bool = False, method_options: dict[str, Any] | None = None,
                   channels: int = 3, native_size: int | None = None, backbone: str = "resnet18",
                   small_stem: bool = False, image_size: int | None = None,
                   backbone_kwargs: dict | None = None) -> FrozenEncoder:
    """The encoder named by `checkpoint`: a .ckpt file (random_init: its network with fresh weights), or a feature
    baseline. method_options change fields of the checkpoint's method config that only evaluation reads (e.g.
    pooling); the image options size 'random' and 'pixels' and may resize a checkpoint's input. Dense features:
    the method's `dense_features`, the random backbone's last-stage map, the normalised pixels themselves."""
    if checkpoint == "pixels":
        size = image_size or native_size or 224
        return FrozenEncoder("image", "raw pixels", EvalBatch(size, channels), nn.Flatten(), image_size=size,
                             dense=nn.Identity())
    if checkpoint == "random":
        size = image_size or native_size or 224
        model = create_backbone(backbone, in_chans=channels, small_stem=small_stem, **(backbone_kwargs or {}))
        return FrozenEncoder("image", f"random-init {backbone}", EvalBatch(size, channels), model, model, size,
                             partial(feature_map, model))
    if checkpoint == "mfcc":
        from selfsup.audio import SAMPLE_RATE, mfcc_features

        return FrozenEncoder("audio", "MFCC", list, lambda waves: torch.stack([mfcc_features(w, SAMPLE_RATE)
                                                                              for w in waves]))
    method, meta = load_method(checkpoint, weights=not random_init)
    for key, value in (method_options or {}).items():
        setattr(method.config, key, value)
    if image_size and "image_size" in method.data_meta:
        method.data_meta["image_size"] = image_size
    twin = " at random init" if random_init else ""
    return FrozenEncoder(method.modality, f"{meta['method']} {method.network_name()}{twin}", method.eval_batch,
                         method.embed, method, method.data_meta.get("image_size"), method.dense_features)


class EvalBatch:
    """uint8 images -> (B, channels, S, S) evaluation inputs (a picklable collate step for DataLoader workers)."""

    def __init__(self, image_size: int, channels: int):
        self.transform = EvalTransform(image_size, channels)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])


class _Labelled:
    """collate_fn: [(input, label), ...] -> (encoder's batch, labels (B,))."""

    def __init__(self, batch: Callable[[list], Any]):
        self.batch = batch

    def __call__(self, items: list[tuple]) -> tuple[Any, torch.Tensor]:
        return self.batch([item[0] for item in items]), torch.tensor([int(item[1]) for item in items])


@torch.no_grad()
def extract_features(encoder: FrozenEncoder, examples: Dataset, batch_size: int = 256, num_workers: int = 0,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, labels (N,)) of every (input, label) example, in order, with the
    encoder in eval mode (its mode is restored)."""
    if len(examples) == 0:
        raise SelfsupError(f"no examples to evaluate in {getattr(examples, 'name', 'the data set')}")
    was_training = encoder.module.training if encoder.module is not None else False
    if encoder.module is not None:
        encoder.module.eval()
    loader = labelled_loader(examples, encoder.batch, batch_size, num_workers)
    features, labels = [], []
    for batch, label in tqdm(loader, desc=desc, leave=False, disable=None):
        features.append(encoder.embed(batch).float().cpu())
        labels.append(label)
    if encoder.module is not None:
        encoder.module.train(was_training)
    return torch.cat(features), torch.cat(labels)


class Encoder(nn.Module):
    """An encoder to fine-tune or distil with its input recipe: `batch` turns labelled inputs (uint8 images, texts,
    waveforms) into what forward maps to (B, D). Images also carry in_chans and image_size."""

    def __init__(self, backbone: nn.Module, batch: Callable[[list], Any], description: str,
                 in_chans: int | None = None, image_size: int | None = None):
        super().__init__()
        self.backbone, self.batch, self.description = backbone, batch, description
        self.in_chans, self.image_size = in_chans, image_size

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.backbone(inputs)


def image_encoder(backbone: nn.Module, image_size: int, in_chans: int, description: str) -> Encoder:
    """An image backbone (B, in_chans, S, S) -> (B, D) with the evaluation preprocessing of its input."""
    return Encoder(backbone, EvalBatch(image_size, in_chans), description, in_chans, image_size)


def labelled_loader(examples: Dataset, batch: Callable[[list], Any], batch_size: int, num_workers: int = 0,
                    **loader_options: Any) -> DataLoader:
    """Batches (encoder's batch, labels (B,)) of (input, label) examples."""
    return DataLoader(examples, batch_size=batch_size, num_workers=num_workers, collate_fn=_Labelled(batch),
                      **loader_options)
