"""MAE: He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022."""

from dataclasses import dataclass, field

import torch

from selfsup.errors import SelfsupError
from selfsup.losses.reconstruction import masked_mse, normalize_patches
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn.decoders import MAEDecoder
from selfsup.nn.vit import encode_visible, patch_grid, patch_size, patchify, unpatchify
from selfsup.views.crop_flip import CropFlipViews
from selfsup.views.masking import random_masking

# The default encoder: ViT-Tiny with 4 px patches on 28 px images (7 x 7 = 49 patches), which trains on a CPU.
VIT_TINY = "timm:vit_tiny_patch16_224"


def small_image_patches() -> dict:
    return {"img_size": 28, "patch_size": 4}


def small_image_patches_avg_pool() -> dict:
    """The encoder's feature is the mean of its patch tokens: MAE, SimMIM and GMML never train the class token
    (MAE and SimMIM fine-tune from the pooled tokens too)."""
    return {**small_image_patches(), "global_pool": "avg"}


@dataclass
class MAEConfig(ImageMethodConfig):
    """Paper defaults: 75% of patches masked at random; AdamW lr 1.5e-4 x B/256, wd 0.05, warm-up 40 of
    800 epochs (0.05); per-patch normalised targets; crops 0.2-1 + flip, no colour. The decoder is
    256-d x 4 blocks (paper: 512-d x 8, sized for ViT-L) to match the default ViT-Tiny.
    The backbone must be a timm ViT whose img_size is the training image size."""

    backbone: str = VIT_TINY
    backbone_kwargs: dict = field(default_factory=small_image_patches_avg_pool)
    optimizer: str = "adamw"
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    mask_ratio: float = 0.75
    decoder_dim: int = 256
    decoder_depth: int = 4
    decoder_heads: int = 8
    norm_pix_loss: bool = True
    crop_min_scale: float = 0.2


def check_image_size(vit, image_size: int, name: str) -> None:
    """A timm ViT's position embedding is built for one image size; say how to match it."""
    expected = vit.patch_embed.img_size[0]
    if image_size != expected:
        raise SelfsupError(f"{name}: the ViT is built for {expected} px images but the data is {image_size} px; "
                           f"pass --set backbone_kwargs='{{img_size: {image_size}, patch_size: "
                           f"{patch_size(vit)}}}' (a multiple of the patch size) or --image-size {expected}")


@register
class MAE(ImageMethod):
    """Mask 75% of the patches; the ViT encodes the visible ones only; a light decoder with mask tokens
    predicts the pixels of every patch; the loss is the MSE on the hidden patches."""

    name = "mae"
    paper = "He et al., Masked Autoencoders Are Scalable Vision Learners (MAE), CVPR 2022"
    deviations = ("defaults to ViT-Tiny with 4 px patches on 28 px images and a 256-d x 4-block decoder (paper: "
                  "ViT-B/L/H/16 at 224 px, decoder 512-d x 8); AdamW β2 0.999 (paper 0.95)")
    config_class = MAEConfig

    def __init__(self, config: MAEConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.patch, self.grid = patch_grid(self.backbone)
        self.decoder = MAEDecoder(self.backbone.embed_dim, self.grid, self.patch * self.patch * in_chans,
                                  config.decoder_dim, config.decoder_depth, config.decoder_heads,
                                  self.backbone.num_prefix_tokens)

    def default_views(self, image_size: int, channels: int) -> CropFlipViews:
        check_image_size(self.backbone, image_size, self.name)
        return CropFlipViews(image_size, channels, self.config.crop_min_scale)

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {pred (B, N, p·p·C), target (same), mask (B, N), 1 = hidden}."""
        keep, mask = random_masking(x.shape[0], self.grid[0] * self.grid[1], self.config.mask_ratio, generator,
                                    x.device)
        pred = self.decoder(encode_visible(self.backbone, x, keep), keep)
        target = patchify(x, self.patch)
        return {"pred": pred, "target": normalize_patches(target) if self.config.norm_pix_loss else target,
                "mask": mask}

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        (x,) = views  # (B, C, H, W)
        out = self.reconstruct(x)
        return {"loss": masked_mse(out["pred"], out["target"], out["mask"])}

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (masked, reconstructed) images for `selfsup plot reconstructions`: hidden patches
        shown at the data's mean (0), then filled with the predictions (de-normalised with the original
        patch's mean and variance when the targets were normalised), visible patches kept."""
        out = self.reconstruct(x, generator)
        return masked_and_filled(x, out["pred"], out["mask"], self.patch, self.grid,
                                 patchify(x, self.patch) if self.config.norm_pix_loss else None)


def masked_and_filled(x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, grid: tuple[int, int],
                      normalized_from: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with the hidden patches blanked, and with them replaced by `pred` (B, N, P); when the
    predictions are per-patch normalised, `normalized_from` (B, N, P) are the patches that set their scale."""
    patches, hidden = patchify(x, p), mask.unsqueeze(-1)  # (B, N, P), (B, N, 1)
    if normalized_from is not None:
        mean, var = normalized_from.mean(dim=-1, keepdim=True), normalized_from.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    return unpatchify(patches * (1 - hidden), p, grid), unpatchify(patches * (1 - hidden) + pred * hidden, p, grid)
