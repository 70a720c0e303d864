"""What every method shares: its config's common fields and the small contract the trainer uses."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.nn import create_backbone


@dataclass
class MethodConfig:
    """Fields every method has; each method subclasses it with its paper's defaults."""

    backbone: str = "resnet18"
    small_stem: bool = False  # 3x3 stride-1 stem, no max-pool (CIFAR-style) for ResNets
    backbone_kwargs: dict = field(default_factory=dict)  # to timm/torchvision, e.g. {patch_size: 4}
    optimizer: str = "lars"  # lars | sgd | adamw
    lr: float = 0.3  # base learning rate for a batch of 256; scaled linearly with the batch
    weight_decay: float = 1e-6  # never applied to biases and norm layers
    momentum: float = 0.9  # SGD/LARS momentum, or AdamW's beta1
    warmup_fraction: float = 0.1  # linear warm-up over this share of all steps, then cosine


class Method(nn.Module):
    """A self-supervised method: backbone + heads + loss, and one training step.

    Subclasses set `name`, `paper`, `config_class`, build their networks in __init__ and
    implement `default_views` and `training_step`.
    """

    name: ClassVar[str]
    paper: ClassVar[str]  # "Authors, Title, Venue Year" in one short line
    deviations: ClassVar[str] = ""  # where the defaults differ from the paper and why; `selfsup methods` shows it
    config_class: ClassVar[type[MethodConfig]]

    def __init__(self, config: MethodConfig, in_chans: int = 3):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone, in_chans=in_chans, small_stem=config.small_stem,
                                        **config.backbone_kwargs)

    def default_views(self, image_size: int, channels: int) -> Any:
        """The augmentation recipe: a callable uint8 (C, H, W) -> list of float views."""
        raise NotImplementedError

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        """Told the data's size before training (and before a resume loads the state): memory
        banks and surrogate classes size themselves here, epoch-based schedules convert to steps."""

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """views: list of (B, C, S, S) batches; indices: (B,) the images' positions in the data set
        (for memory banks and surrogate classes) -> {"loss": scalar, other scalars to log}."""
        raise NotImplementedError

    def after_step(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step (EMA, queues, schedules). Nothing by default."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) backbone features, what evaluation and export use."""
        return self.backbone(images)


@dataclass
class SequenceMethodConfig:
    """Fields every text or audio method has (the optimiser's; no image backbone)."""

    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-4  # for a batch of 256 sequences; scaled linearly with the batch
    weight_decay: float = 0.01  # never applied to biases and norm layers
    momentum: float = 0.9  # AdamW's beta1
    warmup_fraction: float = 0.01  # linear warm-up over this share of all steps, then cosine


class SequenceMethod(nn.Module):
    """A self-supervised method on token or audio sequences (BERT, ALBERT, wav2vec 2.0).

    Unlike an image method it opens its own data, because its network depends on it (a tokenizer trained on the
    corpus fixes the vocabulary): `open_data` returns the training examples and `data_meta`, the JSON-able facts
    the network is built from; the trainer stores `data_meta` in every checkpoint, so `cls(config, data_meta)`
    rebuilds the method anywhere. The trainer's loop, checkpoints, resume and logs are the image methods'.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    deviations: ClassVar[str] = ""
    modality: ClassVar[str]  # "text" | "audio"
    config_class: ClassVar[type[SequenceMethodConfig]]
    run_defaults: ClassVar[dict[str, Any]] = {}  # run options whose default differs for this method (data, batch)

    def __init__(self, config: SequenceMethodConfig, data_meta: dict[str, Any]):
        super().__init__()
        self.config, self.data_meta = config, data_meta

    @classmethod
    def open_data(cls, config: SequenceMethodConfig, data: str, seed: int,
                  data_meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """(examples: a Dataset whose items are tuples, data_meta). `data_meta` from a checkpoint (a resumed run)
        is reused, so the network the checkpoint holds fits the data."""
        raise NotImplementedError

    def collate(self, examples: list[tuple]) -> dict[str, torch.Tensor]:
        """A list of dataset items -> one batch (a dict of tensors) for `training_step`."""
        raise NotImplementedError

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        """As Method.prepare."""

    def training_step(self, batch: dict[str, torch.Tensor],
                      indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """batch from `collate` -> {"loss": scalar, other scalars to log}."""
        raise NotImplementedError

    def after_step(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step (schedules). Nothing by default."""
