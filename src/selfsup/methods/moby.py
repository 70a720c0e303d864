"""MoBY: Xie, Lin, Yao, Zhang, Dai, Cao, Hu, "Self-Supervised Learning with Swin Transformers", arXiv 2105.04553,
2021 — MoCo v2's key queues and contrastive loss with BYOL's predictor, EMA schedule and views, on a Swin."""

from dataclasses import dataclass, field

import torch
from timm.layers import DropPath
from timm.models.swin_transformer import SwinTransformer

from selfsup.errors import SelfsupError
from selfsup.losses.moby import MoBYLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.moco import check_queue
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, feature_map, frozen_copy
from selfsup.nn.queue import KeyQueue
from selfsup.views.byol import BYOLViews

SWIN_T = "timm:swin_tiny_patch4_window7_224"  # the paper's backbone; timm builds it at any size, without weights
WINDOWS = range(4, 9)  # tokens per window side in the small layouts below (Swin-T: 7)


def swin_layout(image_size: int) -> dict:
    """Patch and window sizes for a 2-stage Swin on `image_size` px images: the smallest patch p >= 2 whose token
    grid g = S/p is even with g/2 a window side w of 4-8 tokens. Stage 1 (g x g tokens) then holds 2 x 2 windows,
    shifted by w/2 in every second block; the patch merging halves the grid to w x w, one window. So the window
    divides the grid at both stages: 16 px -> patch 2, window 4; 28 px -> 2, 7 (14 x 14, then 7 x 7 tokens);
    32 px -> 2, 8 (16, 8); 48 px -> 3, 8; 56 px -> 4, 7; 64 px -> 4, 8. A SelfsupError for a side S that is not
    2 x p x w (odd sides, 34 px ...)."""
    for p in range(2, image_size // 2 + 1):
        if image_size % (2 * p) == 0 and image_size // (2 * p) in WINDOWS:
            return {"img_size": image_size, "patch_size": p, "window_size": image_size // (2 * p)}
    raise SelfsupError(f"moby: no Swin layout of patches and windows fits {image_size} px images; pass an "
                       "--image-size of 2 x patch x window (window 4-8 tokens), e.g. --image-size 28 or 32")


def small_swin() -> dict:
    """Swin-T's design at CPU size for 28 px (Fashion-MNIST): 2 stages of 2 blocks, 48-d then 96-d, 3 and 6 heads
    (Swin-T: 4 stages of 2, 2, 6, 2 blocks from 96-d, 224 px, patch 4, window 7), 0.3M parameters; drop path 0.2
    on the online network (the target's is 0, see MoBY)."""
    return {**swin_layout(28), "embed_dim": 48, "depths": [2, 2], "num_heads": [3, 6], "drop_path_rate": 0.2}


@dataclass
class MoBYConfig(ImageMethodConfig):
    """Paper defaults: AdamW lr 1e-3 at batch 512 (5e-4 x B/256), wd 0.05, 5 warm-up epochs of 100 (0.05); projector
    and predictor 2-layer MLPs with BN, EMA momentum 0.99 -> 1 (cosine), τ 0.2, two queues of 4096 keys, BYOL's
    views, drop path 0.2 online and 0 on the target. CPU sizes (see `deviations`): a 2-stage Swin for 28 px and
    heads 512 -> 128 (paper 4096 -> 256). Another image size needs its own layout, e.g. 32 px:
    `--set backbone_kwargs='{img_size: 32, patch_size: 2, window_size: 8, embed_dim: 48, depths: [2, 2],
    num_heads: [3, 6], drop_path_rate: 0.2}'` (see `swin_layout`)."""

    backbone: str = SWIN_T
    backbone_kwargs: dict = field(default_factory=small_swin)
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.05
    momentum: float = 0.9  # AdamW's β1
    warmup_fraction: float = 0.05
    temperature: float = 0.2
    queue_size: int = 4096
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    pred_hidden_dim: int = 512
    ema_base: float = 0.99  # the target's momentum at step 0; it rises to 1 by a cosine
    crop_min_scale: float = 0.08


@register
class MoBY(ImageMethod):
    """Online f_θ -> projector g_θ -> predictor q_θ; target f_ξ -> g_ξ, an EMA of the online network.

    L = InfoNCE(q₁, k₂, Q₂) + InfoNCE(q₂, k₁, Q₁) (`MoBYLoss`): the prediction of view 1 against the target
    projection of view 2 and the queue Q₂ of earlier view-2 keys, and symmetrically. After every optimiser step
    ξ ← m·ξ + (1 − m)·θ with m from 0.99 to 1 (cosine), then k₁ joins Q₁ and k₂ joins Q₂ (from every device). The
    target gets no gradient and no drop path. `embed` and `encoder()` are the online backbone, as the paper evaluates.
    """

    name = "moby"
    paper = "Xie et al., Self-Supervised Learning with Swin Transformers (MoBY), arXiv 2021"
    deviations = ("CPU-sized defaults: a 2-stage Swin for 28 px images (patch 2, window 7, 48-d, 2 + 2 blocks; "
                  "paper: Swin-T, 224 px, patch 4, window 7, 96-d, 2-2-6-2 blocks) and heads 512 -> 128 (paper "
                  "4096 -> 256); other sizes take `swin_layout`'s patch and window; Gaussian blur dropped below "
                  "64 px (as BYOLViews); the warm-up is a fraction of the run (0.05 = 5 of 100 epochs).")
    config_class = MoBYConfig

    def __init__(self, config: MoBYConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        features = self.backbone.num_features
        self.projector = ProjectionHead(features, config.proj_hidden_dim, config.proj_dim)  # g_θ
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim)  # q_θ
        self.target_backbone = frozen_copy(self.backbone)  # f_ξ
        self.target_projector = frozen_copy(self.projector)  # g_ξ
        for module in self.target_backbone.modules():  # the paper's asymmetric drop path: none on the target
            if isinstance(module, DropPath):
                module.drop_prob = 0.0
        self.queue1 = KeyQueue(config.queue_size, config.proj_dim)  # Q₁: target keys of view 1
        self.queue2 = KeyQueue(config.queue_size, config.proj_dim)  # Q₂: of view 2
        self.register_buffer("ema_momentum", torch.tensor(config.ema_base))  # m now, logged (τ is the temperature)
        self.criterion = MoBYLoss(config.temperature)
        self._new_keys: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's (k₁, k₂), for after_step

    def default_views(self, image_size: int, channels: int) -> BYOLViews:
        """BYOL's two asymmetric views of side `image_size`; a SelfsupError naming the backbone_kwargs that fit when
        the Swin is built for another size."""
        self._check_image_size(image_size)
        return BYOLViews(image_size, channels, self.config.crop_min_scale)  # the paper uses BYOL's augmentation

    def _check_image_size(self, image_size: int) -> None:
        """A timm Swin (or ViT) is built for one input size: say which backbone_kwargs fit `image_size`."""
        embed = getattr(self.backbone, "patch_embed", None)
        if embed is None or not embed.strict_img_size:  # a CNN, or a timm model built for any size
            return
        built, patch = embed.img_size[0], embed.patch_size[0]
        if built == image_size and image_size % patch == 0:
            return
        fitting = {**self.config.backbone_kwargs, "img_size": image_size}
        if isinstance(self.backbone, SwinTransformer):
            fitting.update(swin_layout(image_size))
        options = ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in fitting.items())
        reason = (f"the backbone is built for {built} px images but the data is {image_size} px" if built != image_size
                  else f"{image_size} px images do not split into the backbone's {patch} px patches")
        other = f" or --image-size {built}" if built != image_size else ""
        raise SelfsupError(f"moby: {reason}; pass --set backbone_kwargs='{{{options}}}'{other}")

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        return check_queue(self.config.queue_size, num_samples, steps_per_epoch, "each queue")

    def online(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> q = q_θ(g_θ(f_θ(x))), (B, proj_dim)."""
        return self.predictor(self.projector(self.backbone(x)))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> k = g_ξ(f_ξ(x)), (B, proj_dim), without gradient."""
        return self.target_projector(self.target_backbone(x))

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2 = views  # (B, C, S, S) each
        q1, q2 = self.online(x1), self.online(x2)  # (B, proj_dim)
        k1, k2 = self.target(x1), self.target(x2)  # (B, proj_dim), constants
        loss = self.criterion(q1, q2, k1, k2, self.queue1.keys, self.queue2.keys)  # queues change after backward
        self._new_keys = (k1, k2)
        return {"loss": loss, "ema_momentum": self.ema_momentum}

    def after_step(self, step: int, max_steps: int) -> None:
        m = cosine_momentum(self.config.ema_base, step, max_steps)  # 0.99 -> 1
        ema_update(self.target_backbone, self.backbone, m)  # ξ ← m·ξ + (1 − m)·θ
        ema_update(self.target_projector, self.projector, m)
        self.ema_momentum.fill_(m)
        if self._new_keys is not None:
            k1, k2 = self._new_keys
            self.queue1.enqueue(k1)  # each gathers every device's keys first
            self.queue2.enqueue(k2)
            self._new_keys = None

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, h, w): the online Swin's last-stage tokens."""
        return feature_map(self.backbone, images)
