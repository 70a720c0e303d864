"""The one contract every method has, whatever its modality, and the image methods' shared part.

Training, evaluation, fine-tuning, export and plots talk to a method only through `Method`: they never branch
on its class, read a state-dict key prefix or probe it with `hasattr` (docs/architecture.md).
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone, feature_map
from selfsup.views import EvalTransform, channels_of


@dataclass
class MethodConfig:
    """The optimiser's fields, which every method has; each method subclasses it with its paper's defaults."""

    optimizer: str = "lars"  # lars | sgd | adamw
    lr: float = 0.3  # base learning rate for a batch of 256; scaled linearly with the batch
    weight_decay: float = 1e-6  # never applied to biases and norm layers
    momentum: float = 0.9  # SGD/LARS momentum, or AdamW's beta1 (EMA rates are named ema_* or tau)
    warmup_fraction: float = 0.1  # linear warm-up over this share of all steps, then cosine


class Method(nn.Module):
    """A self-supervised method of any modality: networks + loss, one training step, and what it gives evaluation.

    Subclasses set `name`, `paper`, `modality`, `config_class` and implement `open_data` (image methods inherit
    the shared image openers), `training_step` and `embed`. `cls.build(config, data_meta)` rebuilds the method
    anywhere: `data_meta` holds the JSON-able facts about the data the network was built from (image channels and
    size, a tokenizer), and every checkpoint stores it.
    """

    name: ClassVar[str]
    paper: ClassVar[str]  # "Authors, Title, Venue Year" in one short line
    deviations: ClassVar[str] = ""  # where the defaults differ from the paper and why; `selfsup methods` shows it
    modality: ClassVar[str]  # image | text | audio (video, document to come)
    config_class: ClassVar[type[MethodConfig]]
    run_defaults: ClassVar[dict[str, Any]] = {}  # run options whose default differs for this method (data, batch)

    def __init__(self, config: MethodConfig, data_meta: dict[str, Any]):
        super().__init__()
        self.config, self.data_meta = config, dict(data_meta)

    @classmethod
    def build(cls, config: MethodConfig, data_meta: dict[str, Any]) -> "Method":
        """The method for data described by `data_meta` (from `open_data`, or a checkpoint)."""
        return cls(config, data_meta)

    @classmethod
    def as_saved(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The flat options a user passes, as the method's config holds them once built (a resumed run compares
        the two): unchanged, unless the method derives some fields from others."""
        return options

    @classmethod
    def open_data(cls, config: MethodConfig, data: str, seed: int,
                  data_meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """(training examples: a Dataset whose items are tuples, data_meta). `data_meta` from a checkpoint (a
        resumed run) is reused, so the network the checkpoint holds fits the data."""
        raise NotImplementedError

    def collate(self, examples: list[tuple]) -> Any:
        """A list of dataset items -> one training batch for `training_step`."""
        raise NotImplementedError

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        """Told the data's size before training (and before a checkpoint's state is loaded): memory banks and
        surrogate classes size themselves here, epoch-based schedules convert to steps. Returns a warning for the
        user when the data makes an option harmful (the trainer prints it), else None."""

    def training_step(self, batch: Any, indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """A batch (image methods: the list of (B, C, S, S) views), indices (B,) of its examples in the data set
        (for memory banks and surrogate classes) -> {"loss": scalar, other scalars to log}."""
        raise NotImplementedError

    def after_step(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step (EMA, queues, schedules). Nothing by default."""

    def collapse_warning(self, logged: dict[str, torch.Tensor]) -> str | None:
        """The method's own sign of collapse in what its `training_step` returned (a DINO teacher's output entropy
        at 0 or log K), checked with the collapse monitors (train/monitor.py): one line for the user, else None."""
        return None

    def eval_batch(self, inputs: list) -> Any:
        """Labelled examples' inputs (uint8 images (C, H, W), texts, waveforms (T,)) -> the batch `embed` takes."""
        raise NotImplementedError

    def embed(self, batch: Any) -> torch.Tensor:
        """A batch from `eval_batch` -> (B, D) frozen features: what kNN, linear probes and plots use."""
        raise NotImplementedError

    def monitor_batch(self, batch: Any) -> Any:
        """A training batch -> the batch `embed` takes, for the collapse monitors (train/monitor.py): the batch
        itself where `embed` reads a training batch as it is (text, audio)."""
        return batch

    def encoder(self) -> nn.Module:
        """The network export keeps: the backbone, or a teacher where that is the better encoder."""
        return self.backbone

    def finetune_encoder(self) -> nn.Module:
        """The module end-to-end fine-tuning starts from, (eval batch) -> (B, D): `encoder()` unless the paper
        fine-tunes from elsewhere (SimCLR v2: from the head's first layer). The same modules, not copies."""
        return self.encoder()

    def dense_features(self, batch: Any) -> torch.Tensor:
        """A batch from `eval_batch` -> (B, D, h, w) per-location features for the dense evaluators."""
        raise SelfsupError(f"{self.name} gives no per-location features")

    def network_name(self) -> str:
        """The network in a few words, for the one-line summaries."""
        return type(self.encoder()).__name__


@dataclass
class ImageMethodConfig(MethodConfig):
    """Fields every image method has; each subclasses it with its paper's defaults."""

    backbone: str = "resnet18"
    small_stem: bool = False  # 3x3 stride-1 stem, no max-pool (CIFAR-style) for ResNets
    backbone_kwargs: dict = field(default_factory=dict)  # to timm/torchvision, e.g. {patch_size: 4}


class ImageMethod(Method):
    """An image method: a timm/torchvision backbone + heads + loss. Subclasses implement `default_views` and
    `training_step`; the trainer opens the data with the shared image openers (data/) and makes the views."""

    modality = "image"

    def __init__(self, config: ImageMethodConfig, in_chans: int = 3):
        super().__init__(config, {"in_chans": in_chans})
        self.backbone = create_backbone(config.backbone, in_chans=in_chans, small_stem=config.small_stem,
                                        **config.backbone_kwargs)

    @classmethod
    def build(cls, config: ImageMethodConfig, data_meta: dict[str, Any]) -> "ImageMethod":
        method = cls(config, in_chans=data_meta["in_chans"])
        method.data_meta = dict(data_meta)
        return method

    def default_views(self, image_size: int, channels: int) -> Any:
        """The augmentation recipe: a callable uint8 (C, H, W) -> list of float views, with a `batch` method for
        uint8 (B, C, H, W) on the device, or `batch = None` when it runs per sample only."""
        raise NotImplementedError

    def training_images(self, images: Any) -> Any:
        """The training images as the views take them: (image, label) items as given, or with what rides along
        (DetCon: each image's segment map)."""
        return images

    @property
    def in_chans(self) -> int:
        return self.data_meta["in_chans"]

    @property
    def image_size(self) -> int:
        return self.data_meta["image_size"]

    def eval_batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """uint8 images (C, H, W) of any channel count -> (B, in_chans, S, S): resized, centre-cropped and
        normalised as in training; a grayscale encoder sees an RGB image as its channel mean, a TIFF run's encoder
        its bands with their statistics (views.channels_of)."""
        transform = EvalTransform(self.image_size, channels_of(self.data_meta))
        return torch.stack([transform(image) for image in inputs])

    def monitor_batch(self, batch: Any) -> torch.Tensor:
        """The first (B, C, S, S) view of a training batch (views, or (view, masks) pairs)."""
        while not isinstance(batch, torch.Tensor):
            batch = batch[0]
        return batch

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) backbone features."""
        return self.backbone(images)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, h, w): a CNN's last-stage map, or a ViT's patch tokens laid out as their grid."""
        return feature_map(self.backbone, images)

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """A training batch from `default_views` -> [(name, views (B, C, S, S), mask ids (B, S, S) int64)] of the
        masks the loss uses, -1 where no used mask is, for `selfsup plot masks`; a SelfsupError for a method whose
        views carry no masks."""
        raise SelfsupError(f"{self.name}'s views carry no masks; mask figures need an object-level method "
                           "(detcon-s, detcon-b, r2o)")

    def visualize(self, images: torch.Tensor, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> (corrupted or masked input, reconstruction), both (B, C, S, S), for a masked image model;
        a SelfsupError for every other method."""
        raise SelfsupError(f"{self.name} does not reconstruct images; reconstructions need a masked image model "
                           "(sit, gmml, mae, simmim, cae, spark)")

    def network_name(self) -> str:
        return self.config.backbone

