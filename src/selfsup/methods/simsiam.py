"""SimSiam: Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.losses.negative_cosine import SimSiamLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead
from selfsup.views.simclr import SimCLRViews


@dataclass
class SimSiamConfig(ImageMethodConfig):
    """Paper defaults: SGD, lr 0.05 x B/256, wd 1e-4, momentum 0.9, cosine decay without warm-up;
    projector 3 layers of 2048 with BN on every output (the last without affine); predictor
    2048 -> 512 -> 2048 (BN + ReLU in its hidden layer only); MoCo v2 augmentations: crop
    0.2-1, jitter (0.4, 0.4, 0.4, 0.1) = SimCLRViews' strength 0.5, grayscale 0.2, blur 0.5."""

    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.0
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_hidden_dim: int = 512  # the bottleneck
    crop_min_scale: float = 0.2
    jitter_strength: float = 0.5


@register
class SimSiam(ImageMethod):
    """Two views -> encoder f = projector(backbone) -> z; predictor h -> p;
    L = −½[cos(p1, sg z2) + cos(p2, sg z1)]. No negatives, no momentum encoder: the stop-gradient
    on z is what keeps it from collapsing."""

    name = "simsiam"
    paper = "Chen & He, Exploring Simple Siamese Representation Learning (SimSiam), CVPR 2021"
    deviations = ("the predictor's lr follows the cosine schedule like the rest (the paper keeps it fixed; the trainer "
                  "has one schedule for all groups); no weight decay on biases and BN (the paper decays all); "
                  "blur dropped below 64 px and colour-only jitter skipped on one-channel images (as SimCLRViews)")
    config_class = SimSiamConfig

    def __init__(self, config: SimSiamConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.projector = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim,
                                        num_layers=3, last_bn=True, last_bn_affine=False)
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim)  # h
        self.criterion = SimSiamLoss()

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2 = views  # (B, C, S, S) each
        z1 = self.projector(self.backbone(x1))  # (B, proj_dim)
        z2 = self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, proj_dim)
        loss = self.criterion(p1, p2, z1, z2)
        # std of the normalised z per dimension: ~1/sqrt(D) while learning, -> 0 when the outputs collapse
        z_std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss, "z_std": z_std}
