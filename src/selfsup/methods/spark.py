"""SparK: Tian, Jiang, Diao, Lin, Wang, Yuan, "Designing BERT for Convolutional Networks: Sparse and Hierarchical
Masked Modeling", ICLR 2023."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import stage_features
from selfsup.nn.sparse import SparseMask, check_sparse_support, mask_at, sparse_forward
from selfsup.nn.sparse_decoder import SparKDecoder
from selfsup.views.crop_flip import CropFlipViews
from selfsup.views.masking import random_masking

PROBE_SIDE = 64  # the side of the one blank image that finds each stage's stride when the method is built


@dataclass
class SparKConfig(ImageMethodConfig):
    """Paper defaults: 60% of the cells of the final (stride-32) grid masked; LAMB lr 2e-4 x B/512 (= 1e-4 x B/256),
    β (0.9, 0.95), wd 0.04 rising to 0.2, warm-up 40 of 1600 epochs (0.025); decoder 512 wide at the deepest scale
    for ResNet-50's 2048 channels (a quarter), halved at each step up; per-patch normalised targets; crops 0.67-1 + flip. Defaults to ResNet-18 with the CIFAR
    stem (stride 8: a 4 x 4 grid at 28 px), see `deviations`."""

    backbone: str = "resnet18"
    small_stem: bool = True
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.04
    momentum: float = 0.9
    warmup_fraction: float = 0.025
    mask_ratio: float = 0.6
    decoder_width: int | None = None  # at the deepest scale; None: a quarter of the last stage's
    norm_pix_loss: bool = True
    crop_min_scale: float = 0.67


def level_sizes(H: int, W: int, n: int) -> list[tuple[int, int]]:
    """The side at stride 2^k for k = 0..n: halved with ceil, as 'same'-padded stride-2 convs do."""
    return [(-(-H // 2**k), -(-W // 2**k)) for k in range(n + 1)]


def cell_sums(t: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, h, w): the sum over the channels and pixels of each cell x cell square (edge cells cut)."""
    return F.avg_pool2d(t.sum(1, keepdim=True), cell, cell, ceil_mode=True, divisor_override=1)[:, 0]


def cell_normalized(x: torch.Tensor, cell: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SparK's (MAE's) per-patch normalised target, with the cells as patches: (B, C, H, W) -> (each pixel minus
    its cell's mean over sqrt(the cell's unbiased variance + eps), mean (B, 1, H, W), std (same)), as
    losses.reconstruction.normalize_patches on patches of the cell's pixels and channels."""
    count = cell_sums(torch.ones_like(x[:1]), cell)  # (1, h, w) values per cell
    mean = mask_at((cell_sums(x, cell) / count).unsqueeze(1), x.shape[-2:])  # (B, 1, H, W)
    var = cell_sums((x - mean) ** 2, cell) / (count - 1).clamp(min=1)  # (B, h, w), unbiased
    std = mask_at((var + eps).sqrt().unsqueeze(1), x.shape[-2:])
    return (x - mean) / std, mean, std


def masked_cell_mse(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor, cell: int) -> torch.Tensor:
    """pred, target (B, C, H, W), hidden (B, h, w), 1 = masked -> the mean over masked cells of each cell's mean
    squared error (losses.reconstruction.masked_mse with the cells as patches)."""
    count = cell_sums(torch.ones_like(pred[:1]), cell)  # (1, h, w)
    per_cell = cell_sums((pred - target) ** 2, cell) / count  # (B, h, w)
    return (per_cell * hidden).sum() / hidden.sum().clamp(min=1)


@register
class SparK(ImageMethod):
    """Mask 60% of the cells of the convnet's final grid; the unchanged convnet encodes the masked image sparsely
    (nn.sparse: every layer's output re-masked, BN over visible positions); each stage's map is densified with a
    per-scale mask token and a light UNet (nn.sparse_decoder) predicts the pixels; MSE on the masked cells'
    per-cell normalised pixels. `encoder()` is the plain backbone."""

    name = "spark"
    paper = "Tian et al., Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling, ICLR 2023"
    deviations = ("defaults to ResNet-18 with the CIFAR stem (final stride 8: a 4 x 4 grid of 8 px cells at 28 px, "
                  "the last row and column cut to 4 px) (paper: ResNet-50, stride 32, 7 x 7 at 224 px); the grid is "
                  "the backbone's final map at the data's size; AdamW β2 0.999 and a fixed wd 0.04 (paper: LAMB, β2 "
                  "0.95, wd 0.04 -> 0.2); decoder width a quarter of the last stage's channels (the paper's 512 for "
                  "ResNet-50's 2048), blocks of one 2x2 transposed conv + one 3x3 conv (paper: two 3x3); BN "
                  "statistics over visible positions are per device (no SyncBN)")
    config_class = SparKConfig

    def __init__(self, config: SparKConfig, in_chans: int = 3):
        try:
            super().__init__(config, in_chans)
        except SelfsupError as e:
            if "small_stem" not in str(e):
                raise
            raise SelfsupError(f"spark: {e}; spark defaults to a ResNet's CIFAR stem: pass --set small_stem=false for "
                               "other convnets (ConvNeXt ...), and use mae or simmim for vision transformers") from None
        problem = check_sparse_support(self.backbone)
        if problem is not None or hasattr(self.backbone, "patch_embed"):
            raise SelfsupError(f"spark needs a convnet (ResNet, ConvNeXt ...); {config.backbone} cannot be masked "
                               f"sparsely: {problem or 'it is a vision transformer'}; use mae or simmim for ViTs")
        channels, self.levels = self.stage_geometry(in_chans)
        # None: a quarter of the last stage (the paper's 512 for ResNet-50's 2048), at least 1 channel at the pixels
        width = config.decoder_width or max(channels[-1] // 4, 2 ** max(self.levels))
        if width < 2 ** max(self.levels):
            raise SelfsupError(f"spark: decoder_width {width} is halved {max(self.levels)} times on the way to the "
                               f"pixels; pass at least {2 ** max(self.levels)} (--set decoder_width=N)")
        self.decoder = SparKDecoder(channels, self.levels, in_chans, width)

    def stage_geometry(self, in_chans: int) -> tuple[list[int], list[int]]:
        """(channels C_i, log2 of the stride of each of the backbone's 4 stages), from one blank image."""
        training = {m: m.training for m in self.backbone.modules()}
        try:
            with torch.no_grad():
                maps = stage_features(self.backbone.eval(), torch.zeros(1, in_chans, PROBE_SIDE, PROBE_SIDE))
        finally:
            for module, mode in training.items():
                module.train(mode)
        strides = [PROBE_SIDE // f.shape[-1] for f in maps]
        if any(s & (s - 1) or PROBE_SIDE % s for s in strides):
            raise SelfsupError(f"spark: the stages of {self.config.backbone} have strides {strides}, not powers of 2")
        return [f.shape[1] for f in maps], [s.bit_length() - 1 for s in strides]

    def grid(self, image_size: int) -> tuple[int, int]:
        """The mask's grid (h, w) for square images of this side: the final stage's map."""
        return level_sizes(image_size, image_size, max(self.levels))[-1]

    def default_views(self, image_size: int, channels: int) -> CropFlipViews:
        h, w = self.grid(image_size)
        hidden = round(self.config.mask_ratio * h * w)
        if not 0 < hidden < h * w:
            raise SelfsupError(f"spark: at {image_size} px the final grid of {self.config.backbone} (stride "
                               f"{2 ** max(self.levels)}) is {h} x {w}, where mask_ratio {self.config.mask_ratio} "
                               "hides no cell or every cell; use larger images (--image-size) or the CIFAR stem "
                               "(--small-stem)")
        return CropFlipViews(image_size, channels, self.config.crop_min_scale)

    def sample_visible(self, batch: int, grid: tuple[int, int], generator: torch.Generator | None,
                       device: torch.device) -> torch.Tensor:
        """(B, 1, h, w), 1 = visible: round(mask_ratio · h·w) cells hidden per image, uniformly at random."""
        _, hidden = random_masking(batch, grid[0] * grid[1], self.config.mask_ratio, generator, device)
        return (1 - hidden).view(batch, 1, *grid)

    def encode(self, x: torch.Tensor, masks: SparseMask) -> list[torch.Tensor]:
        """(B, C, H, W) -> the 4 stages' sparse maps [(B, C_i, h_i, w_i)], zero at masked cells; the masked pixels
        never enter (the input is masked first)."""
        with sparse_forward(self.backbone, masks):
            features = stage_features(self.backbone, x * masks.at(x.shape[-2:]))
        sizes = level_sizes(*x.shape[-2:], max(self.levels))
        if [tuple(f.shape[-2:]) for f in features] != [sizes[k] for k in self.levels]:
            raise SelfsupError(f"spark: at {tuple(x.shape[-2:])} px the stages of {self.config.backbone} are "
                               f"{[tuple(f.shape[-2:]) for f in features]}, not the sides halved with ceil; use an "
                               f"image size that is a multiple of {2 ** max(self.levels)}")
        return features

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {pred (B, C, H, W), target (same), hidden (B, h, w) 1 = masked, mean and std (B, 1, H, W)
        of the target's normalisation (0 and 1 without norm_pix_loss)}."""
        sizes = level_sizes(*x.shape[-2:], max(self.levels))
        masks = SparseMask(self.sample_visible(x.shape[0], sizes[-1], generator, x.device).to(x.dtype))
        pred = self.decoder(self.encode(x, masks), masks, sizes)  # (B, C, H, W)
        if self.config.norm_pix_loss:
            target, mean, std = cell_normalized(x, self.cell)
        else:
            target, mean, std = x, torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])
        return {"pred": pred, "target": target, "hidden": 1 - masks.visible[:, 0], "mean": mean, "std": std}

    @property
    def cell(self) -> int:
        """The side of a grid cell in input pixels, 2^n (the last row and column may be cut by the image's edge)."""
        return 2 ** max(self.levels)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        (x,) = views  # (B, C, H, W)
        out = self.reconstruct(x)
        return {"loss": masked_cell_mse(out["pred"], out["target"], out["hidden"], self.cell)}

    @torch.no_grad()
    def visualize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (masked, reconstructed) images for `selfsup plot reconstructions`: masked cells shown at
        the data's mean (0), then filled with the predictions de-normalised with the cell's own mean and std."""
        out = self.reconstruct(x, generator)
        visible = mask_at(1 - out["hidden"].unsqueeze(1), x.shape[-2:])  # (B, 1, H, W)
        filled = out["pred"] * out["std"] + out["mean"]
        return x * visible, x * visible + filled * (1 - visible)
