"""SiT: Atito, Awais, Kittler, "SiT: Self-supervised vIsion Transformer", 2021 — a ViT trained to restore
GMML-corrupted images, together with a momentum-contrastive objective on its class token."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.ntxent import NTXentLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.mae import VIT_TINY, check_image_size, small_image_patches, small_image_patches_avg_pool
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, frozen_copy
from selfsup.nn.decoders import PatchPixelHead
from selfsup.nn.vit import patch_grid
from selfsup.views.byol import BYOLViews
from selfsup.views.gmml import GMMLCorruption


@dataclass
class SiTConfig(ImageMethodConfig):
    """Paper defaults: Adam(W) lr 5e-4 at batch 64 (2e-3 x B/256), wd 0.05; GMML with noise+replace fills,
    corruption ratio 0.5 (replace 0.3), rectangle sides 5-25% of the image side, not aligned to patches;
    reconstruction head 2 x 2048 + transposed conv, L1 on the corrupted pixels (recon_all_pixels: on all);
    contrastive head 3 layers 4096 -> 256 with BN + GELU, τ 0.2, EMA teacher 0.996 -> 1 on clean views;
    L = contrastive_weight · L_contrastive + recon_weight · L_recons with recon_weight α 5 (small data sets).
    fills: comma-separated, one picked per image from noise, zeros, replace, zeros+replace, noise+replace.
    Ablations: recon_weight=0 is contrastive alone (clean views), contrastive_weight=0 is GMML alone."""

    backbone: str = VIT_TINY
    backbone_kwargs: dict = field(default_factory=small_image_patches)
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    recon_weight: float = 5.0
    contrastive_weight: float = 1.0
    temperature: float = 0.2
    ema_base: float = 0.996
    recon_hidden_dim: int = 2048
    recon_all_pixels: bool = False
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    corrupt_ratio: float = 0.5
    replace_ratio: float = 0.3
    side_min: float = 0.05
    side_max: float = 0.25
    align_to_patches: bool = False
    fills: str = "noise+replace"
    crop_min_scale: float = 0.08


@dataclass
class GMMLConfig(SiTConfig):
    """SiT without the contrastive part: group masked model learning alone (the paper's ablation). With no
    contrastive head the class token is never trained, so features are the mean patch token."""

    backbone_kwargs: dict = field(default_factory=small_image_patches_avg_pool)
    contrastive_weight: float = 0.0


@register
class SiT(ImageMethod):
    """Two views; the student ViT sees them GMML-corrupted and (a) restores the clean pixels from its patch
    tokens, (b) matches its class-token projection of each corrupted view with the EMA teacher's projection
    of the other, clean, view (NT-Xent over the 2B views, τ 0.2)."""

    name = "sit"
    paper = "Atito, Awais & Kittler, SiT: Self-supervised vIsion Transformer, arXiv 2021"
    deviations = ("defaults to ViT-Tiny with 4 px patches on 28 px images (paper: ViT-S/16 at 224 px); the class "
                  "token serves as the contrastive token; BYOL's views, with blur dropped below 64 px")
    config_class = SiTConfig

    def __init__(self, config: SiTConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        if config.recon_weight <= 0 and config.contrastive_weight <= 0:
            raise SelfsupError(f"{self.name}: recon_weight and contrastive_weight are both 0, nothing to learn; "
                               "set one of them above 0")
        self.patch, self.grid = patch_grid(self.backbone)
        dim = self.backbone.embed_dim
        self.corruption = GMMLCorruption(config.corrupt_ratio, config.replace_ratio, (config.side_min, config.side_max),
                                         self.patch if config.align_to_patches else 1,
                                         tuple(f.strip() for f in config.fills.split(",")))
        if config.recon_weight > 0:
            self.reconstruction = PatchPixelHead(dim, config.recon_hidden_dim, self.patch, in_chans, self.grid)
        if config.contrastive_weight > 0:
            self.projector = ProjectionHead(dim, config.proj_hidden_dim, config.proj_dim, num_layers=3,
                                            activation=nn.GELU)
            self.teacher = nn.Sequential(frozen_copy(self.backbone), frozen_copy(self.projector))
            self.criterion = NTXentLoss(config.temperature)

    def default_views(self, image_size: int, channels: int) -> BYOLViews:
        check_image_size(self.backbone, image_size, self.name)
        return BYOLViews(image_size, channels, self.config.crop_min_scale)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = torch.cat(views)  # (2B, C, H, W): view 1 then view 2
        c = self.config
        corrupted, mask = self.corruption(x) if c.recon_weight > 0 else (x, None)
        tokens = self.backbone.forward_features(corrupted)  # (2B, prefix + N, D)
        out: dict[str, torch.Tensor] = {}
        loss = x.new_zeros(())
        if c.recon_weight > 0:
            out["recons"] = self.recons_loss(self.restore(tokens), x, mask)
            loss = loss + c.recon_weight * out["recons"]
        if c.contrastive_weight > 0:
            out["contrastive"] = self.contrastive_loss(tokens, views)
            loss = loss + c.contrastive_weight * out["contrastive"]
        return {"loss": loss, **out}

    def restore(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, prefix + N, D) -> restored images (B, C, H, W)."""
        return self.reconstruction(tokens[:, self.backbone.num_prefix_tokens:])

    def recons_loss(self, restored: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1 between the clean views and their restorations, on the corrupted pixels (or all of them)."""
        error = F.l1_loss(restored, x, reduction="none")  # (2B, C, H, W)
        if self.config.recon_all_pixels:
            return error.mean()
        weight = mask.expand_as(error)
        return (error * weight).sum() / weight.sum().clamp(min=1)

    def contrastive_loss(self, tokens: torch.Tensor, views: list[torch.Tensor]) -> torch.Tensor:
        """Student (corrupted view v) against teacher (clean view 3 − v), crossed, NT-Xent with the other
        2B − 2 views as negatives; the teacher's side carries no gradient."""
        s1, s2 = self.projector(self.backbone.forward_head(tokens, pre_logits=True)).chunk(2)  # (B, proj_dim)
        with torch.no_grad():
            t1, t2 = (self.teacher(v) for v in views)  # clean views, EMA encoder
        return 0.5 * (self.criterion(s1, t2) + self.criterion(s2, t1))

    def after_step(self, step: int, max_steps: int) -> None:
        if self.config.contrastive_weight > 0:
            m = cosine_momentum(self.config.ema_base, step, max_steps)
            ema_update(self.teacher[0], self.backbone, m)
            ema_update(self.teacher[1], self.projector, m)

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (corrupted, restored) images, for `selfsup plot reconstructions`."""
        if self.config.recon_weight <= 0:
            raise SelfsupError(f"this {self.name} run trained no reconstruction head (recon_weight 0)")
        corrupted, _ = self.corruption(x, generator)
        return corrupted, self.restore(self.backbone.forward_features(corrupted))


@register
class GMML(SiT):
    """SiT's reconstruction objective alone: restore GMML-corrupted images, no contrastive part."""

    name = "gmml"
    paper = SiT.paper + " (GMML: group masked model learning)"
    deviations = SiT.deviations
    config_class = GMMLConfig
