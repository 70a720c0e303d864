"""BYOL: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020."""

from dataclasses import dataclass

import torch

from selfsup.losses.negative_cosine import BYOLLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, frozen_copy
from selfsup.views.byol import BYOLViews


@dataclass
class BYOLConfig(ImageMethodConfig):
    """Paper defaults: LARS, lr 0.2 x B/256, wd 1.5e-6 (not on biases and BN), 10 warm-up epochs
    of 1000 (a fraction of 0.01), projector and predictor 4096 -> 256, τ_base 0.996 -> 1."""

    optimizer: str = "lars"
    lr: float = 0.2
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    warmup_fraction: float = 0.01
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    ema_base: float = 0.996  # τ_base of the target network's EMA
    crop_min_scale: float = 0.08


@register
class BYOL(ImageMethod):
    """Online f_θ -> g_θ -> q_θ predicts the EMA target's f_ξ -> g_ξ projection of the other view.

    After every optimiser step ξ ← τ·ξ + (1 − τ)·θ, with τ rising from τ_base to 1 by a cosine
    over the run. The target gets no gradient; `embed` uses the online backbone f_θ.
    """

    name = "byol"
    paper = "Grill et al., Bootstrap Your Own Latent (BYOL), NeurIPS 2020"
    deviations = ("blur dropped below 64 px and colour-only jitter skipped on one-channel images (as SimCLRViews); "
                  "warm-up given as a fraction of the run (0.01 = the paper's 10 of 1000 epochs)")
    config_class = BYOLConfig

    def __init__(self, config: BYOLConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.projector = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim)  # g_θ
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim)  # q_θ
        self.target_backbone = frozen_copy(self.backbone)  # f_ξ
        self.target_projector = frozen_copy(self.projector)  # g_ξ
        self.register_buffer("tau", torch.tensor(config.ema_base))  # current EMA momentum, logged
        self.criterion = BYOLLoss()

    def default_views(self, image_size: int, channels: int) -> BYOLViews:
        return BYOLViews(image_size, channels, self.config.crop_min_scale)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> q_θ(g_θ(f_θ(x))), (B, proj_dim)."""
        return self.predictor(self.projector(self.backbone(x)))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> z' = g_ξ(f_ξ(x)), (B, proj_dim), without gradient."""
        return self.target_projector(self.target_backbone(x))

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        v1, v2 = views  # (B, C, S, S) each
        loss = self.criterion(self.online(v1), self.online(v2), self.target(v1), self.target(v2))
        return {"loss": loss, "tau": self.tau}

    def after_step(self, step: int, max_steps: int) -> None:
        tau = cosine_momentum(self.config.ema_base, step, max_steps)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
        self.tau.fill_(tau)
