"""SimMIM: Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu, "SimMIM: A Simple Framework for Masked Image Modeling",
CVPR 2022."""

from dataclasses import dataclass, field

import torch
from torch import nn

from selfsup.losses.reconstruction import masked_l1
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.mae import VIT_TINY, check_image_size, masked_and_filled, small_image_patches_avg_pool
from selfsup.methods.registry import register
from selfsup.nn.vit import encode_with_mask_token, patch_grid, patchify
from selfsup.views.crop_flip import CropFlipViews
from selfsup.views.masking import grid_masking


@dataclass
class SimMIMConfig(ImageMethodConfig):
    """Paper defaults (ViT-B): 60% masked in squares of 32 px = 2 x 2 patches of 16 px (mask_unit, in
    patches); AdamW lr 8e-4 at batch 2048 (1e-4 x B/256), wd 0.05, warm-up 10 of 800 epochs; crops 0.67-1."""

    backbone: str = VIT_TINY
    backbone_kwargs: dict = field(default_factory=small_image_patches_avg_pool)
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.0125
    mask_ratio: float = 0.6
    mask_unit: int = 2
    crop_min_scale: float = 0.67


@register
class SimMIM(ImageMethod):
    """Masked patches' embeddings become a learned mask token; the ViT encodes all tokens; a linear layer
    per token predicts its patch's pixels (= 1x1 conv + pixel shuffle); L1 on the hidden patches."""

    name = "simmim"
    paper = "Xie et al., SimMIM: A Simple Framework for Masked Image Modeling, CVPR 2022"
    deviations = ("defaults to ViT-Tiny with 4 px patches on 28 px images (paper: ViT-B/16 at 224 px, Swin); "
                  "mask squares of 2 x 2 patches cut at the image edge when the grid is odd")
    config_class = SimMIMConfig

    def __init__(self, config: SimMIMConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.patch, self.grid = patch_grid(self.backbone)
        self.mask_token = nn.Parameter(torch.zeros(self.backbone.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(self.backbone.embed_dim, self.patch * self.patch * in_chans)

    def default_views(self, image_size: int, channels: int) -> CropFlipViews:
        check_image_size(self.backbone, image_size, self.name)
        return CropFlipViews(image_size, channels, self.config.crop_min_scale)

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {pred (B, N, p·p·C), target (same), mask (B, N), 1 = hidden}."""
        mask = grid_masking(x.shape[0], self.grid, self.config.mask_unit, self.config.mask_ratio, generator, x.device)
        pred = self.decoder(encode_with_mask_token(self.backbone, x, mask, self.mask_token))
        return {"pred": pred, "target": patchify(x, self.patch), "mask": mask}

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        (x,) = views  # (B, C, H, W)
        out = self.reconstruct(x)
        return {"loss": masked_l1(out["pred"], out["target"], out["mask"])}

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (masked, reconstructed) images for `selfsup plot reconstructions`."""
        out = self.reconstruct(x, generator)
        return masked_and_filled(x, out["pred"], out["mask"], self.patch, self.grid)
