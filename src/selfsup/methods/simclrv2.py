"""SimCLR v2: Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020.

Pretraining is SimCLR with a deeper projection head; the semi-supervised recipe then fine-tunes
from the head's first layer (`selfsup eval finetune`, which calls `finetune_encoder`) and distills
the fine-tuned network into a student on unlabeled images (`selfsup distill`).
"""

from dataclasses import dataclass

from torch import nn

from selfsup.errors import SelfsupError
from selfsup.methods.base import ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.methods.simclr import SimCLR
from selfsup.nn.heads import ProjectionHead


@dataclass
class SimCLRv2Config(ImageMethodConfig):
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
class SimCLRv2(SimCLR):
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

    def projection(self, width: int) -> nn.Module:
        c = self.config
        if c.proj_layers < 1 or not 0 <= c.finetune_layers <= c.proj_layers:
            raise SelfsupError(f"simclrv2 needs proj_layers >= 1 and 0 <= finetune_layers <= proj_layers, got "
                               f"{c.proj_layers} and {c.finetune_layers}")
        return ProjectionHead(width, c.proj_hidden_dim or width, c.proj_dim, num_layers=c.proj_layers, last_bn=True)

    def finetune_encoder(self) -> nn.Module:
        """The backbone and the head's first `finetune_layers` layers (the same modules, not copies):
        SimCLR v2 fine-tunes from the first layer of the head rather than from the backbone's output."""
        kept = list(self.projection_head)[: 3 * self.config.finetune_layers]  # each hidden layer: Linear, BN, ReLU
        return nn.Sequential(self.backbone, *kept)
