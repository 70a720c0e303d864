"""GLCNet: Li, Li, Zhang, Liu, Huang, Zhu, Tao, "Global and Local Contrastive Self-Supervised Learning for Semantic
Segmentation of HR Remote Sensing Images", IEEE TGRS 2022 (G-RSIM in METHODS.md)."""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

from selfsup.errors import SelfsupError
from selfsup.losses.glcnet import GLCNetLoss, patch_vectors, style_vector
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, stage_features
from selfsup.views.glcnet import PATCH_FRACTION, GLCNetViews


@dataclass
class GLCNetConfig(ImageMethodConfig):
    """Paper defaults: τ 0.5 for both contrasts, L = 0.5·L_g + 0.5·L_l, 4 matched patches of up to 48 px in a 256 px
    view, crops of scale 0.4-1 with flips, rot90 and colour. DeepLabv3+'s own settings (Chen et al. 2018): output
    stride 16, ASPP rates 6/12/18, 256 channels, dropout 0.5. Not in METHODS.md, chosen here: a ResNet-18 backbone
    (CPU-sized), AdamW 1e-3 per 256 images, heads 512 -> 128."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.5  # τ of both NT-Xent losses
    global_weight: float = 0.5  # L = global_weight·L_g + local_weight·L_l
    local_weight: float = 0.5
    n_patches: int = 4  # P matched local patches per image
    patch_fraction: float = PATCH_FRACTION  # patch side / the smaller crop's side (48 / 256)
    crop_min_scale: float = 0.4
    output_stride: int = 16  # of the backbone's last map (its last stages dilated): 8 or 16, as DeepLabv3+
    decoder_channels: int = 256  # ASPP and decoder width
    atrous_rates: str = "6,12,18"  # ASPP's dilation rates at output stride 16 (double them at 8), comma-separated
    aspp_dropout: float = 0.5
    proj_hidden_dim: int = 512
    proj_dim: int = 128


def rates(text: str) -> tuple[int, ...]:
    """'12,24,36' -> (12, 24, 36): ASPP's three dilation rates. SelfsupError for anything else."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise SelfsupError(f"atrous_rates takes three positive integers, got {text!r}; pass e.g. "
                           "--set atrous_rates=6,12,18")
    return values


@register
class GLCNet(ImageMethod):
    """DeepLabv3+ (a timm backbone dilated to output stride 16, smp's ASPP and decoder) trained with two contrasts:

    - global style: the ASPP features a (B, D, S/16, S/16) of each view -> style vector [μ_c, σ_c] (B, 2D) -> MLP g_g
      -> NT-Xent (τ) between the two views of each image;
    - local matching: the decoder output y (B, D, S/4, S/4) averaged inside P patches that cover the same source
      pixels in both views (views.glcnet: an index map tracks every pixel through crop, flips and rotations) ->
      MLP g_l -> NT-Xent (τ) over the B·P patches of the batch.

    L = 0.5·L_g + 0.5·L_l. `embed` pools the backbone's last map (B, D_backbone); `encoder()` is the backbone, which
    export writes; `dense_features` is the decoder output, so `eval segment --finetune` trains the pretrained
    decoder with the backbone, as the paper fine-tunes the whole DeepLabv3+.
    """

    name = "glcnet"
    paper = ("Li et al., Global and Local Contrastive Self-Supervised Learning for Semantic Segmentation of HR Remote "
             "Sensing Images (GLCNet), IEEE TGRS 2022")
    deviations = ("ResNet-18 backbone, AdamW 1e-3 and 512 -> 128 heads (not in METHODS.md); the style vector holds "
                  "σ = sqrt(var + 1e-5) rather than the variance; patches are squares in the tile's pixels, so their "
                  "side in a view scales with its crop; colour jitter strengths are BYOL's; the decoder's upsampling "
                  "goes to the stride-4 map's size, so any input size works; the ASPP features are smp's ASPP block "
                  "(the five branches projected, then its 3x3 separable conv, BN, ReLU)")
    config_class = GLCNetConfig

    def __init__(self, config: GLCNetConfig, in_chans: int = 3):
        config = dataclasses.replace(config, backbone_kwargs=self.dilated(config))
        if config.n_patches < 1 or not 0 < config.patch_fraction <= 1:
            raise SelfsupError(f"glcnet needs n_patches >= 1 and patch_fraction in (0, 1], got {config.n_patches} "
                               f"and {config.patch_fraction:g}; pass e.g. --set n_patches=4 --set patch_fraction=0.2")
        if not 0 <= config.aspp_dropout < 1:
            raise SelfsupError(f"aspp_dropout must lie in [0, 1), got {config.aspp_dropout:g}; pass e.g. "
                               "--set aspp_dropout=0.5")
        super().__init__(config, in_chans)
        with torch.no_grad():
            was_training = self.backbone.training
            channels = [f.shape[1] for f in stage_features(self.backbone.eval(), torch.zeros(1, in_chans, 64, 64))]
            self.backbone.train(was_training)
        D = config.decoder_channels
        # smp's DeepLabv3+ decoder reads features[2] (stride 4) and features[-1] (the ASPP input): [c1, c2, c3, c4, c5]
        self.decoder = DeepLabV3PlusDecoder([in_chans, in_chans, *channels], encoder_depth=5, out_channels=D,
                                            atrous_rates=rates(config.atrous_rates), output_stride=config.output_stride,
                                            aspp_separable=True, aspp_dropout=config.aspp_dropout)
        self.global_head = ProjectionHead(2 * D, config.proj_hidden_dim, config.proj_dim)  # g_g on [μ, σ]
        self.local_head = ProjectionHead(D, config.proj_hidden_dim, config.proj_dim)  # g_l on pooled patches
        self.criterion = GLCNetLoss(config.temperature, config.global_weight, config.local_weight)

    @classmethod
    def as_saved(cls, options: dict) -> dict:
        """backbone_kwargs given on the command line get the output_stride the built config holds (`dilated`), so
        that a resume with the same options as the first run is not refused for it."""
        if not isinstance(options.get("backbone_kwargs"), dict):
            return options
        given = {k: options[k] for k in ("backbone_kwargs", "output_stride") if k in options}
        return {**options, "backbone_kwargs": cls.dilated(GLCNetConfig(**given))}

    @staticmethod
    def dilated(config: GLCNetConfig) -> dict:
        """backbone_kwargs with timm's output_stride set (it dilates the last stages), so an exported backbone is
        rebuilt dilated too. SelfsupError for a stride DeepLabv3+ does not take, or one that disagrees."""
        kwargs = dict(config.backbone_kwargs)
        if config.output_stride not in (8, 16):
            raise SelfsupError(f"glcnet's DeepLabv3+ takes output_stride 8 or 16, got {config.output_stride}; "
                               "pass --set output_stride=16")
        if kwargs.get("output_stride", config.output_stride) != config.output_stride:
            raise SelfsupError(f"backbone_kwargs sets output_stride {kwargs['output_stride']} and glcnet's "
                               f"output_stride is {config.output_stride}; set it once, with --set output_stride=N")
        return {**kwargs, "output_stride": config.output_stride}

    def default_views(self, image_size: int, channels: int) -> GLCNetViews:
        c = self.config
        return GLCNetViews(image_size, channels, c.crop_min_scale, c.n_patches, c.patch_fraction)

    def deeplab(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DeepLabv3+ on (B, C, S, S) -> (ASPP features a (B, D, S/os, S/os), decoder output y (B, D, S/4, S/4)):
        smp's decoder, its ASPP output taken on the way (smp upsamples by a fixed factor; here to c2's size)."""
        c2, _, _, c5 = stage_features(self.backbone, x)  # res2 (stride 4) ... res5 (stride os)
        a = self.decoder.aspp(c5)  # (B, D, S/os, S/os)
        up = F.interpolate(a, size=c2.shape[-2:], mode="bilinear", align_corners=True)  # (B, D, S/4, S/4)
        y = self.decoder.block2(torch.cat([up, self.decoder.block1(c2)], dim=1))  # (B, D, S/4, S/4)
        return a, y

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2, masks1, masks2 = views  # (B, C, S, S) x 2, (B, P, S, S) bool x 2
        (a1, y1), (a2, y2) = self.deeplab(x1), self.deeplab(x2)
        g1, g2 = self.global_head(style_vector(a1)), self.global_head(style_vector(a2))  # (B, proj_dim)
        l1, l2 = (self.project_patches(y, m) for y, m in ((y1, masks1), (y2, masks2)))  # (B, P, proj_dim)
        loss, loss_g, loss_l = self.criterion(g1, g2, l1, l2)
        return {"loss": loss, "global_loss": loss_g.detach(), "local_loss": loss_l.detach()}

    def project_patches(self, y: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, D, h, w), patch masks (B, P, S, S) -> g_l of each patch's mean feature (B, P, proj_dim)."""
        v = patch_vectors(y, masks)  # (B, P, D)
        return self.local_head(v.flatten(0, 1)).view(*v.shape[:2], -1)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, S/4, S/4): the pretrained DeepLabv3+ decoder's output."""
        return self.deeplab(images)[1]

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The two views with their patches: id p where patch p covers a pixel (the highest where patches overlap),
        -1 elsewhere; the same id is the same source pixels in both views."""
        x1, x2, masks1, masks2 = batch
        ids = torch.arange(1, masks1.shape[1] + 1, device=masks1.device)[:, None, None]  # (P, 1, 1)
        return [(f"view {v + 1}", x, (m * ids).amax(1) - 1) for v, (x, m) in enumerate(((x1, masks1), (x2, masks2)))]
