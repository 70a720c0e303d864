"""MoCo v3: Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021."""

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.infonce import InfoNCELoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, frozen_copy
from selfsup.views.byol import BYOLViews


@dataclass
class MoCoV3Config(ImageMethodConfig):
    """ResNet defaults (the authors' 100-epoch ResNet-50 recipe): LARS, lr 0.6 x B/256, wd 1e-6,
    10 of 100 epochs warm-up, τ 1.0, momentum m 0.99 -> 1 (cosine, per step), projector 3 layers
    4096 -> 256 with a last BN without affine, predictor 2 layers 4096 -> 256, BN in all hidden layers.

    ViT (paper): AdamW lr 1.5e-4 x B/256, wd 0.1, 40 of 300 epochs warm-up, τ 0.2, the random patch
    projection frozen — e.g. `--set optimizer=adamw --set lr=1.5e-4 --set weight_decay=0.1
    --set temperature=0.2 --set warmup_fraction=0.13 --backbone timm:vit_small_patch16_224`.
    freeze_patch_embed: None = freeze when the backbone has a `patch_embed` (timm ViTs).
    """

    lr: float = 0.6
    weight_decay: float = 1e-6
    temperature: float = 1.0
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    proj_layers: int = 3
    pred_hidden_dim: int = 4096
    ema_base: float = 0.99
    freeze_patch_embed: bool | None = None
    crop_min_scale: float = 0.08


@register
class MoCoV3(ImageMethod):
    """q = predictor(projector(backbone(x))), k = momentum encoder (backbone + projector, EMA) of
    the other view; L = ctr(q1, k2) + ctr(q2, k1) with ctr = 2τ · InfoNCE over the global batch's keys."""

    name = "mocov3"
    paper = "Chen, Xie, He, An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), ICCV 2021"
    deviations = ("BYOL's views with blur dropped below 64 px (as BYOLViews); ViTs keep timm's learned position "
                  "embedding instead of the paper's fixed 2-D sin-cos one.")
    config_class = MoCoV3Config

    def __init__(self, config: MoCoV3Config, in_chans: int = 3):
        super().__init__(config, in_chans)
        self._freeze_patch_embed(config.freeze_patch_embed)
        self.projector = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim,
                                        num_layers=config.proj_layers, last_bn=True, last_bn_affine=False)
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim, num_layers=2)
        self.momentum_encoder = nn.Sequential(frozen_copy(self.backbone), frozen_copy(self.projector))
        self.criterion = InfoNCELoss(config.temperature)

    def _freeze_patch_embed(self, freeze: bool | None) -> None:
        """The paper's fix for ViT instability: a random patch projection that is never trained."""
        has_patches = hasattr(self.backbone, "patch_embed")
        if freeze and not has_patches:
            raise SelfsupError(f"freeze_patch_embed needs a ViT-style backbone with a patch_embed, not "
                               f"'{self.config.backbone}'; drop --set freeze_patch_embed=true")
        if has_patches and freeze is not False:
            self.backbone.patch_embed.requires_grad_(False)

    def default_views(self, image_size: int, channels: int) -> BYOLViews:
        return BYOLViews(image_size, channels, self.config.crop_min_scale)  # the paper uses BYOL's augmentation

    def ctr(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """CrossEntropy(q·kᵀ/τ, positives) x 2τ; the 2τ factor makes the loss less sensitive to τ."""
        return 2 * self.config.temperature * self.criterion(q, k)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2 = views  # (B, C, S, S) each
        q1 = self.predictor(self.projector(self.backbone(x1)))  # (B, proj_dim)
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1, k2 = self.momentum_encoder(x1), self.momentum_encoder(x2)  # (B, proj_dim), no gradient
        return {"loss": self.ctr(q1, k2) + self.ctr(q2, k1)}

    def after_step(self, step: int, max_steps: int) -> None:
        m = cosine_momentum(self.config.ema_base, step, max_steps)  # 0.99 -> 1
        ema_update(self.momentum_encoder[0], self.backbone, m)  # ξ ← m·ξ + (1−m)·θ
        ema_update(self.momentum_encoder[1], self.projector, m)
