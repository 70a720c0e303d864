"""Remote-sensing multitask SSL: Li, Chen, Shi, "Semantic Segmentation of Remote Sensing Images With Self-Supervised
Multitask Representation Learning", IEEE JSTARS 2021 (a "triple siamese" network: one backbone, three pretext tasks)."""

from dataclasses import dataclass
from itertools import pairwise

import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.rs_multitask import RSMultitaskLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, stage_features
from selfsup.views.rs_multitask import TRANSFORMS, RSMultitaskViews

DENSE_BLOCK = 3  # dense_features: the output of the decoder's 3rd block, at the stride of the backbone's first stage


@dataclass
class RSMultitaskConfig(ImageMethodConfig):
    """Paper defaults: a corrupted square of 20-33 % of the side (colour jitter, flip or rotation inside it), weighted
    L1 inpainting through a UNet-like decoder, 6 transformations (flips, rotations by 0/90/180/270°) after shortcut
    breakers (crop 0.7-0.95, jitter, grayscale), NT-Xent τ 1, L = 20·L_inp + 1·L_tr + 1·L_inst. Not in METHODS.md,
    chosen here: a ResNet-18 backbone, smp's U-Net decoder widths, AdamW 1e-3 per 256 images, 512-wide heads, a
    128-d instance projection, the first crop of the tile at scale 0.25-1."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 1.0  # τ of the instance-discrimination NT-Xent
    inpaint_weight: float = 20.0  # L = inpaint_weight·L_inp + transform_weight·L_tr + instance_weight·L_inst
    transform_weight: float = 1.0
    instance_weight: float = 1.0
    square_min: float = 0.2  # corrupted square's side / the view's side
    square_max: float = 0.33
    breaker_min_scale: float = 0.7  # shortcut breakers' crop: area share of x, before T
    breaker_max_scale: float = 0.95
    crop_min_scale: float = 0.25  # x: a random resized crop of the tile
    decoder_channels: str = "256,128,64,32,16"  # the 5 U-Net decoder blocks' widths, deepest first (smp's default)
    proj_hidden_dim: int = 512
    proj_dim: int = 128


def widths(text: str) -> tuple[int, ...]:
    """'256,128,64,32,16' -> (256, 128, 64, 32, 16): the 5 decoder blocks' widths. SelfsupError for anything else."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 5 or min(values) < 1:
        raise SelfsupError(f"decoder_channels takes five positive integers, got {text!r}; pass e.g. "
                           "--set decoder_channels=256,128,64,32,16")
    return values


def check(config: RSMultitaskConfig) -> None:
    """SelfsupError, one line, for ranges the options must keep."""
    if not 0 < config.square_min <= config.square_max < 1:
        raise SelfsupError(f"rs-multitask needs 0 < square_min <= square_max < 1, got {config.square_min:g} and "
                           f"{config.square_max:g}; pass e.g. --set square_min=0.2 --set square_max=0.33")
    if not 0 < config.breaker_min_scale <= config.breaker_max_scale <= 1:
        raise SelfsupError(f"rs-multitask needs 0 < breaker_min_scale <= breaker_max_scale <= 1, got "
                           f"{config.breaker_min_scale:g} and {config.breaker_max_scale:g}; pass e.g. "
                           "--set breaker_min_scale=0.7 --set breaker_max_scale=0.95")


@register
class RSMultitask(ImageMethod):
    """One backbone f, three heads, three inputs per image (views.rs_multitask):

    - inpainting: x_tilde (x with a corrupted square) -> f's 4 stage maps -> smp's U-Net decoder (skip connections
      from the stages at strides 16, 8, 4, then two upsampling blocks without skips) -> 3x3 conv to the C bands ->
      x_hat (B, C, S, S); L_inp = mean(|x − x_tilde| · |x − x_hat|) (losses.rs_multitask);
    - transformation recognition: pooled f(x) and f(T(b(x))) (B, D) each, concatenated (B, 2D) -> MLP -> 6 logits;
      cross-entropy with T's label;
    - instance discrimination: the same pooled features -> MLP -> NT-Xent (τ 1) between x and T(b(x)).

    L = 20·L_inp + L_tr + L_inst. `embed` pools the backbone's last map (B, D); `encoder()` is the backbone, which
    export writes; `dense_features` is the decoder's 3rd block's output (B, 64, S/4, S/4) over the backbone's stages,
    so `eval segment --finetune` and `eval change` train the pretrained decoder with the backbone, as the paper
    fine-tunes its pretrained encoder-decoder for segmentation.
    """

    name = "rs-multitask"
    paper = ("Li, Chen, Shi, Semantic Segmentation of Remote Sensing Images With Self-Supervised Multitask "
             "Representation Learning, IEEE JSTARS 2021")
    deviations = ("ResNet-18 backbone, smp's U-Net decoder (widths 256-16, nearest upsampling, no skip at stride 2), "
                  "AdamW 1e-3, 512-wide heads and a 128-d instance projection (not in METHODS.md); the inpainting "
                  "weights |x − x_tilde| are taken on normalised pixels, unnormalised, no epsilon (unchanged pixels "
                  "weigh 0); the square's colour jitter is BYOL's strengths at p 1 (band-wise brightness/contrast "
                  "for non-RGB bands); the breakers' crop 0.7-0.95 is read as the area share (torchvision's scale); "
                  "x itself is a random crop of the tile at scale 0.25-1, so large tiles are cut, not resized")
    config_class = RSMultitaskConfig

    def __init__(self, config: RSMultitaskConfig, in_chans: int = 3):
        check(config)
        super().__init__(config, in_chans)
        channels = self.stage_channels(in_chans)
        # smp's encoder_channels: [input, stride 2 (none here: 0 channels), stage 1..4]; the first is never a skip
        W = widths(config.decoder_channels)
        self.decoder = UnetDecoder([in_chans, 0, *channels], W, n_blocks=5)
        self.restore = nn.Conv2d(W[-1], in_chans, 3, padding=1)  # the last block's map -> pixels
        D = self.backbone.num_features
        self.transform_head = ProjectionHead(2 * D, config.proj_hidden_dim, len(TRANSFORMS))  # [f(x), f(T(x))] -> 6
        self.instance_head = ProjectionHead(D, config.proj_hidden_dim, config.proj_dim)
        self.criterion = RSMultitaskLoss(config.temperature, config.inpaint_weight, config.transform_weight,
                                         config.instance_weight)

    def stage_channels(self, in_chans: int) -> list[int]:
        """The backbone's 4 stage widths, read from a 64 px probe; SelfsupError unless each stage halves the last
        one's resolution (a CNN with 4 stages, as the U-Net's skips need)."""
        with torch.no_grad():
            was_training = self.backbone.training
            maps = stage_features(self.backbone.eval(), torch.zeros(1, in_chans, 64, 64))
            self.backbone.train(was_training)
        sizes = [m.shape[-1] for m in maps]
        if any(a != 2 * b for a, b in pairwise(sizes)):
            raise SelfsupError(f"rs-multitask's U-Net decoder needs a CNN whose 4 stages halve the resolution one "
                               f"after another (a ResNet), and {self.config.backbone} gives {sizes} px at 64 px; "
                               "pass --backbone resnet18")
        return [m.shape[1] for m in maps]

    def default_views(self, image_size: int, channels: int) -> RSMultitaskViews:
        c = self.config
        return RSMultitaskViews(image_size, channels, c.crop_min_scale, (c.square_min, c.square_max),
                                (c.breaker_min_scale, c.breaker_max_scale))

    def unet(self, x: torch.Tensor, blocks: int = 5) -> torch.Tensor:
        """(B, C, S, S) -> the output of the decoder's first `blocks` blocks: block 1-3 at the strides of stages 3, 2,
        1 (with their skips), block 4 at twice stage 1's resolution, block 5 at S (no skips). smp's UnetDecoder
        forward, stopped early."""
        c = stage_features(self.backbone, x)  # [(B, C_s, h_s, w_s)] strides 4, 8, 16, 32 for a ResNet
        skips = [c[2], c[1], c[0], None, None]
        sizes = [c[2].shape[-2:], c[1].shape[-2:], c[0].shape[-2:], tuple(2 * n for n in c[0].shape[-2:]),
                 x.shape[-2:]]
        y = self.decoder.center(c[3])  # (B, C_4, h_4, w_4)
        for block, skip, (h, w) in list(zip(self.decoder.blocks, skips, sizes))[:blocks]:
            y = block(y, h, w, skip_connection=skip)  # upsample to (h, w), concatenate the skip, two 3x3 convs
        return y

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x, x_tilde, t, k, _ = views  # (B, C, S, S) x 3, (B,) labels of T, (B, 4) squares
        x_hat = self.restore(self.unet(x_tilde))  # F(x_tilde): (B, C, S, S)
        h, h_t = self.backbone(x), self.backbone(t)  # (B, D) pooled
        logits = self.transform_head(torch.cat([h, h_t], dim=1))  # (B, 6)
        z1, z2 = self.instance_head(h), self.instance_head(h_t)  # (B, proj_dim)
        loss, loss_inp, loss_tr, loss_inst = self.criterion(x, x_tilde, x_hat, logits, k, z1, z2)
        accuracy = (logits.argmax(1) == k).float().mean()
        return {"loss": loss, "inpaint_loss": loss_inp.detach(), "transform_loss": loss_tr.detach(),
                "instance_loss": loss_inst.detach(), "transform_accuracy": accuracy.detach()}

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, 64, S/4, S/4) for a ResNet: the pretrained decoder's 3rd block over the backbone."""
        return self.unet(images, DENSE_BLOCK)

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The corrupted views with their square: id 0 inside it, -1 elsewhere."""
        _, x_tilde, _, _, boxes = batch
        S = x_tilde.shape[-1]
        rows, cols = torch.arange(S, device=boxes.device)[:, None], torch.arange(S, device=boxes.device)[None]
        y0, x0, y1, x1 = (boxes[:, i, None, None] for i in range(4))  # (B, 1, 1) each
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (B, S, S)
        return [("corrupted square", x_tilde, inside.long() - 1)]
