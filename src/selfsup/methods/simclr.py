"""SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020."""

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.losses import NTXentLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead
from selfsup.views import SimCLRViews


@dataclass
class SimCLRConfig(ImageMethodConfig):
    """Paper defaults: LARS, lr 0.3 x B/256, wd 1e-6, 10/100 epochs warm-up, 2-layer head to 128-d.

    temperature 0.5 is the paper's choice for its 100-epoch runs at batch 256-4096 (table 5
    sweeps 0.05-1.0); 0.1-0.2 tends to work better for short runs on small images.
    """

    temperature: float = 0.5
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    crop_min_scale: float = 0.08
    jitter_strength: float = 1.0  # the paper's s; 0.5 on CIFAR-10


@register
class SimCLR(ImageMethod):
    """Two views -> backbone f -> head g -> NT-Xent between the two projections of each image."""

    name = "simclr"
    paper = "Chen et al., A Simple Framework for Contrastive Learning (SimCLR), ICML 2020"
    config_class = SimCLRConfig

    def __init__(self, config: SimCLRConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.projection_head = self.projection(self.backbone.num_features)
        self.criterion = NTXentLoss(config.temperature)

    def projection(self, width: int) -> nn.Module:
        """g(·): the head from the backbone's `width` features to the space where NT-Xent is taken."""
        return ProjectionHead(width, self.config.proj_hidden_dim, self.config.proj_dim)

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2 = views  # (B, C, S, S) each
        z1 = self.projection_head(self.backbone(x1))  # (B, proj_dim)
        z2 = self.projection_head(self.backbone(x2))
        return {"loss": self.criterion(z1, z2)}
