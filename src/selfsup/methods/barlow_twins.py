"""Barlow Twins: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021."""

from dataclasses import dataclass

import torch

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead
from selfsup.views import SimCLRViews


@dataclass
class BarlowTwinsConfig(ImageMethodConfig):
    """Paper defaults: LARS, lr 0.2 x B/256 for weights, wd 1.5e-6, 10 of 1000 epochs warm-up,
    projector 3 linear layers of 8192 (BN + ReLU between), λ 0.0051.

    The 8192-wide projector has ~140M parameters on a ResNet-18 and dominates a CPU step on
    small images; proj_hidden_dim=proj_dim=2048 is ~10x cheaper (the paper's figure 4: a few
    points lower on ImageNet). λ was tuned for D = 8192; the paper finds it insensitive.
    """

    optimizer: str = "lars"
    lr: float = 0.2
    weight_decay: float = 1.5e-6
    warmup_fraction: float = 0.01
    lambd: float = 0.0051
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    crop_min_scale: float = 0.08
    jitter_strength: float = 0.5  # brightness/contrast 0.4, hue 0.1 as the paper (saturation 0.4, paper 0.2)


@register
class BarlowTwins(ImageMethod):
    """Two views -> backbone -> projector -> cross-correlation of the two batches pushed to identity."""

    name = "barlowtwins"
    paper = "Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021"
    deviations = ("views: SimCLR's symmetric recipe (blur p 0.5 on both views from 64 px, no solarisation, "
                  "saturation 0.4) instead of the BYOL-style asymmetric one; biases and BN parameters use the "
                  "weights' lr (paper 0.0048), without LARS adaptation or weight decay as in the paper")
    config_class = BarlowTwinsConfig

    def __init__(self, config: BarlowTwinsConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.projector = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim,
                                        num_layers=config.proj_layers)
        self.criterion = BarlowTwinsLoss(config.lambd)

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        y1, y2 = views  # (B, C, S, S) each
        z1 = self.projector(self.backbone(y1))  # (B, proj_dim)
        z2 = self.projector(self.backbone(y2))
        return {"loss": self.criterion(z1, z2)}
