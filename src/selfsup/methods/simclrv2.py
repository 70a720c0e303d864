"""SimCLR v2: Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020.

Pretraining is SimCLR with a deeper projection head; the semi-supervised recipe then fine-tunes
from the head's first layer (`selfsup eval finetune`, which calls `finetune_encoder`) and distills
the fine-tuned network into a student on unlabeled images (`selfsup distill`).
"""

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.ntxent import NTXentLoss
from selfsup.methods.base import Method, MethodConfig
from selfsup.methods.registry import register
from selfsup.nn.heads import ProjectionHead
from selfsup.views.simclr import SimCLRViews


@dataclass
class SimCLRv2Config(MethodConfig):
    """Paper defaults: LARS, lr 6.4 at batch 4096 (0.4 per 256 here, scaled linearly), weight decay 1e-4,
    warm-up over 5% of the steps then cosine; NT-Xent with tau 0.1; a 3-layer head whose hidden layers
    are as wide as the backbone's output (2048 for ResNet-50), 128-d out, BN on every layer; SimCLR's
    augmentations. Fine-tuning keeps the head's first layer (finetune_layers 1).
    """

    lr: float = 0.4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    temperature: float = 0.1
    proj_layers: int = 3
    proj_hidden_dim: int | None = None  # None: the backbone's width, as in the paper
    proj_dim: int = 128
    finetune_layers: int = 1  # head layers (linear + BN + ReLU each) that fine-tuning starts from
    crop_min_scale: float = 0.08
    jitter_strength: float = 1.0


@register
class SimCLRv2(Method):
    """Two views -> backbone f -> 3-layer head g -> NT-Xent between the two projections of each image.

    `finetune_encoder()` is the module fine-tuning starts from: f followed by the first
    `finetune_layers` layers of g, (B, C, S, S) -> (B, hidden).
    """

    name = "simclrv2"
    paper = "Chen et al., Big Self-Supervised Models are Strong Semi-Supervised Learners (SimCLR v2), NeurIPS 2020"
    deviations = ("no MoCo-style memory of negatives (the paper's optional extra, ~1% top-1 at ImageNet scale); "
                  "the learning rate scales linearly with the batch (0.4 per 256) where the paper uses "
                  "0.1*sqrt(batch), the same at its batch of 4096")
    config_class = SimCLRv2Config

    def __init__(self, config: SimCLRv2Config, in_chans: int = 3):
        super().__init__(config, in_chans)
        if config.proj_layers < 1 or not 0 <= config.finetune_layers <= config.proj_layers:
            raise SelfsupError(f"simclrv2 needs proj_layers >= 1 and 0 <= finetune_layers <= proj_layers, got "
                               f"{config.proj_layers} and {config.finetune_layers}")
        width = self.backbone.num_features
        self.projection_head = ProjectionHead(width, config.proj_hidden_dim or width, config.proj_dim,
                                              num_layers=config.proj_layers, last_bn=True)
        self.criterion = NTXentLoss(config.temperature)

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2 = views  # (B, C, S, S) each
        z1 = self.projection_head(self.backbone(x1))  # (B, proj_dim)
        z2 = self.projection_head(self.backbone(x2))
        return {"loss": self.criterion(z1, z2)}

    def finetune_encoder(self) -> nn.Module:
        """The backbone and the head's first `finetune_layers` layers (the same modules, not copies):
        SimCLR v2 fine-tunes from the first layer of the head rather than from the backbone's output."""
        kept = list(self.projection_head)[: 3 * self.config.finetune_layers]  # each hidden layer: Linear, BN, ReLU
        return nn.Sequential(self.backbone, *kept)
