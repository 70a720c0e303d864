"""CAE: Chen, Ding, Wang, Xin, Mo, Wang, Han, Luo, Zeng, Wang, "Context Autoencoder for Self-Supervised
Representation Learning", IJCV 2023."""

from dataclasses import dataclass, field

import torch

from selfsup.errors import SelfsupError
from selfsup.losses.cae import CAELoss
from selfsup.losses.reconstruction import normalize_patches
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.mae import VIT_TINY, check_image_size, masked_and_filled, small_image_patches
from selfsup.methods.registry import register
from selfsup.nn.regressor import LatentRegressor, MaskedPatchDecoder, gather_tokens
from selfsup.nn.vit import encode_visible, patch_grid, patchify
from selfsup.views.block_masking import block_masking
from selfsup.views.crop_flip import CropFlipViews


def small_image_patches_normed_mean() -> dict:
    """ViT-Tiny on 28 px images with 4 px patches; layer scale 0.1 (the paper's); the feature is the mean patch
    token, every token through the final LayerNorm first (fc_norm off), so that the latents the regressor reads
    and the alignment targets are the normalised encoder outputs, as in the paper."""
    return {**small_image_patches(), "global_pool": "avg", "fc_norm": False, "init_values": 0.1}


@dataclass
class CAEConfig(ImageMethodConfig):
    """Paper defaults (ViT-B/16 at 224 px, the authors' 800-epoch recipe): block-wise masking of 50% (98 of 196
    patches) with blocks of at least 16 of 196 patches (mask_min_block, a share of the grid) and aspect ratio
    0.3-1/0.3; latent regressor 4 cross-attention blocks, decoder 4 self-attention blocks, both at the encoder's
    width and heads, layer scale 0.1; L = L_decoder + 2·L_align; AdamW lr 1.5e-3 at batch 2048 (1.875e-4 x B/256),
    wd 0.05, warm-up 20 of 800 epochs (0.025); random resized crops 0.08-1 + flip, no colour jitter; per-patch
    normalised pixel targets (norm_pix_loss) instead of DALL-E tokens.
    The backbone must be a timm ViT whose img_size is the training image size."""

    backbone: str = VIT_TINY
    backbone_kwargs: dict = field(default_factory=small_image_patches_normed_mean)
    optimizer: str = "adamw"
    lr: float = 1.875e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.025
    mask_ratio: float = 0.5
    mask_min_block: float = 0.0816  # 16 / 196 of the patches (BEiT's 16 on a 14 x 14 grid)
    mask_min_aspect: float = 0.3
    regressor_depth: int = 4
    decoder_depth: int = 4
    layer_scale: float = 0.1  # regressor and decoder; 0: none
    align_weight: float = 2.0
    norm_pix_loss: bool = True
    crop_min_scale: float = 0.08


@register
class CAE(ImageMethod):
    """Block-mask half of the patches; the ViT encoder F sees the visible ones only (Z_v); the latent regressor H
    predicts the masked patches' latents Z_m from Z_v with mask queries; they are aligned with sg[F(masked
    patches)] and decoded (G) to the masked patches' normalised pixels: L = L_decoder + 2·L_align."""

    name = "cae"
    paper = "Chen et al., Context Autoencoder for Self-Supervised Representation Learning (CAE), IJCV 2023"
    deviations = ("the decoder predicts per-patch normalised pixels with MSE (paper: DALL-E tokens with "
                  "cross-entropy; the DALL-E tokenizer's weights cannot be installed offline); defaults to ViT-Tiny "
                  "with 4 px patches on 28 px images (paper: ViT-S/B/L/16 at 224 px), regressor and decoder at its "
                  "width; the smallest mask block scaled with the grid (16 of 196 patches = 4 of 49); the encoder "
                  "keeps timm's learned positions (paper: sin-cos), the regressor and decoder use fixed sin-cos; no "
                  "drop path (paper 0.1) and no gradient clipping (paper 3.0); the class token is among the "
                  "regressor's keys and values; features are the mean patch token")
    config_class = CAEConfig

    def __init__(self, config: CAEConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        if config.regressor_depth < 1:
            raise SelfsupError(f"{self.name}: regressor_depth {config.regressor_depth} leaves no regressor to predict "
                               "the masked latents; pass regressor_depth=1 or more (paper: 4)")
        if not 0 < config.mask_min_aspect <= 1:
            raise SelfsupError(f"{self.name}: mask_min_aspect {config.mask_min_aspect} must be in (0, 1]; the "
                               "aspect ratio is drawn between it and its inverse (paper: 0.3)")
        self.patch, self.grid = patch_grid(self.backbone)
        dim, heads = self.backbone.embed_dim, self.backbone.blocks[0].attn.num_heads
        scale = config.layer_scale or None
        self.regressor = LatentRegressor(dim, self.grid, config.regressor_depth, heads,
                                         self.backbone.num_prefix_tokens, scale)
        self.decoder = MaskedPatchDecoder(dim, self.grid, self.patch * self.patch * in_chans, config.decoder_depth,
                                          heads, scale)
        self.criterion = CAELoss(config.align_weight)

    def default_views(self, image_size: int, channels: int) -> CropFlipViews:
        check_image_size(self.backbone, image_size, self.name)
        return CropFlipViews(image_size, channels, self.config.crop_min_scale)

    def sample_masks(self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block-wise masks -> keep (B, n) and masked (B, m) grid positions, each in increasing order, and
        mask (B, N), 1 = hidden."""
        c, N = self.config, self.grid[0] * self.grid[1]
        mask = block_masking(batch, self.grid, c.mask_ratio, max(1, round(c.mask_min_block * N)), c.mask_min_aspect,
                             generator, device)  # (B, N): every row hides the same m patches
        order = mask.argsort(dim=1, stable=True)  # (B, N): visible positions, then masked ones
        n = N - int(mask[0].sum())
        return order[:, :n], order[:, n:], mask

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {pixels (B, m, p·p·C) G's predictions for the masked patches, pixel_targets (same),
        latents (B, m, D) Z_m, latent_targets (B, m, D) sg[Z̄_m], masked (B, m) their grid positions,
        mask (B, N), 1 = hidden}."""
        keep, masked, mask = self.sample_masks(x.shape[0], generator, x.device)
        z_visible = encode_visible(self.backbone, x, keep)  # (B, prefix + n, D): Z_v = F(X_v)
        latents = self.regressor(z_visible, keep, masked)  # (B, m, D): Z_m = H(Z_v, P_v, P_m)
        with torch.no_grad():  # the same encoder on the masked patches alone: Z̄_m = sg[F(X_m)]
            latent_targets = encode_visible(self.backbone, x, masked)[:, self.backbone.num_prefix_tokens:]
        pixel_targets = gather_tokens(patchify(x, self.patch), masked)  # (B, m, p·p·C)
        if self.config.norm_pix_loss:
            pixel_targets = normalize_patches(pixel_targets)
        return {"pixels": self.decoder(latents, masked), "pixel_targets": pixel_targets, "latents": latents,
                "latent_targets": latent_targets, "masked": masked, "mask": mask}

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        (x,) = views  # (B, C, H, W)
        out = self.reconstruct(x)
        loss, decoder, align = self.criterion(out["pixels"], out["pixel_targets"], out["latents"],
                                              out["latent_targets"])
        return {"loss": loss, "decoder": decoder.detach(), "align": align.detach()}

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (masked, reconstructed) images for `selfsup plot reconstructions`: hidden patches at the
        data's mean (0), then filled with G's predictions (de-normalised with each patch's own mean and variance
        when the targets were normalised), visible patches kept."""
        out = self.reconstruct(x, generator)
        patches = patchify(x, self.patch)  # (B, N, P)
        where = out["masked"].unsqueeze(-1).expand(-1, -1, patches.shape[-1])  # (B, m, P)
        pred = patches.new_zeros(patches.shape).scatter(1, where, out["pixels"])  # (B, N, P), zero where visible
        return masked_and_filled(x, pred, out["mask"], self.patch, self.grid,
                                 patches if self.config.norm_pix_loss else None)
