"""DINO: Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021 — self-distillation with no labels: a student matches an EMA teacher across multi-crops."""

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from selfsup.errors import SelfsupError
from selfsup.losses.dino import DINOLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, feature_map, frozen_copy
from selfsup.views.multicrop import MultiCropViews

N_GLOBAL = 2  # the teacher sees the two global crops only
# collapse_warning's thresholds, as shares of log K: each image's P_t this close to uniform, or the batch's mean P_t
# this concentrated (an entropy of 0.1 log K is ~2 prototypes used of K = 1024)
UNIFORM, ONE_PROTOTYPE = 0.98, 0.1


@dataclass
class DINOConfig(ImageMethodConfig):
    """Paper defaults (ViT-S/16, 100 epochs): AdamW lr 0.0005 x B/256, wd 0.04, linear warm-up over 10 of 100
    epochs then cosine; head: 3-layer MLP 2048 (GELU, no BN) -> 256 bottleneck -> L2 norm -> weight-normalised
    linear (norm fixed to 1) to K prototypes; τ_s 0.1; τ_t 0.04 -> 0.07 linearly over the first 30 of 100 epochs
    (a fraction 0.3 of the run), then 0.07; centre momentum m 0.9; teacher EMA λ 0.996 -> 1 (cosine); last layer
    frozen for the first epoch; 2 global crops, scale (0.4, 1), + 8 local crops of 96/224 of the side, scale
    (0.05, 0.4) (the authors' default count); colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, here SimCLR's jitter
    at strength 0.5: (0.4, 0.4, 0.4, 0.1).

    num_prototypes K is 4096 here, the paper's 65,536 being for ImageNet. Not here: the paper's gradient clipping at
    3.0 and its weight decay rising 0.04 -> 0.4 (cosine); the trainer has neither.
    A timm ViT (the paper's network) needs `dynamic_img_size` for the smaller local crops, e.g. `--backbone
    timm:vit_tiny_patch16_224 --set backbone_kwargs='{img_size: 28, patch_size: 4, dynamic_img_size: true}'`.
    """

    optimizer: str = "adamw"
    lr: float = 0.0005
    weight_decay: float = 0.04
    momentum: float = 0.9  # AdamW's β1
    warmup_fraction: float = 0.1
    proj_hidden_dim: int = 2048  # the head's 3-layer MLP
    proj_dim: int = 256  # its bottleneck
    head_bn: bool = False  # BN in the head's hidden layers (the paper's ViT head has none)
    num_prototypes: int = 4096  # K
    student_temperature: float = 0.1  # τ_s
    teacher_temperature: float = 0.07  # τ_t after its warm-up
    warmup_teacher_temperature: float = 0.04  # τ_t at the start
    teacher_temperature_warmup_fraction: float = 0.3  # share of the run over which τ_t rises
    center_momentum: float = 0.9  # m
    ema_base: float = 0.996  # λ at the start, cosine to 1
    freeze_prototypes_epochs: float = 1.0  # the weight-normalised last layer gets no update for this long
    n_local_crops: int = 8
    local_crop_size: int = 0  # 0: 96/224 of the image size (12 px at 28), at least 4 px
    global_min_scale: float = 0.4
    local_min_scale: float = 0.05
    local_max_scale: float = 0.4
    jitter_strength: float = 0.5


def teacher_temperature(step: int, max_steps: int, start: float, end: float, warmup_fraction: float) -> float:
    """τ_t at `step`: linear from `start` to `end` over the first `warmup_fraction` of `max_steps`, then `end`."""
    warmup = warmup_fraction * max_steps
    return end if step >= warmup else start + (end - start) * step / warmup


def dino_head(in_dim: int, hidden_dim: int, out_dim: int, bn: bool) -> nn.Sequential:
    """3-layer MLP (B, in_dim) -> (B, out_dim) with GELU after the hidden layers, and BN before each GELU when `bn`."""
    if bn:
        return ProjectionHead(in_dim, hidden_dim, out_dim, num_layers=3, activation=nn.GELU)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                         nn.Linear(hidden_dim, out_dim))


@register
class DINO(ImageMethod):
    """Crops -> backbone -> head -> unit z -> z Wᵀ against K unit rows W (weight-normalised) = g(x) (B, K). The
    student g_θs sees every crop, the EMA teacher g_θt the global ones; the loss is DINOLoss. `embed`, `encoder`
    and `dense_features` use the teacher's backbone, the encoder the paper evaluates."""

    name = "dino"
    paper = "Caron et al., Emerging Properties in Self-Supervised Vision Transformers (DINO), ICCV 2021"
    deviations = ("4096 prototypes instead of 65,536 (for 60k-image data sets, not ImageNet); a ResNet-18 by default "
                  "(paper: ViT-S/16; any timm ViT with dynamic_img_size works); no gradient clipping (paper 3.0) and a "
                  "fixed weight decay 0.04 (paper: cosine 0.04 -> 0.4), which the trainer does not offer; "
                  "SwAV's multi-crop views (SimCLR jitter of strength 0.5, blur p 0.5 on every crop and only from "
                  "64 px, no solarisation; paper: blur p 1.0 / 0.1 on the two global crops, solarisation p 0.2 on "
                  "the second); warm-ups given as fractions of the run (0.1 = 10 of 100 epochs for the lr, 0.3 = 30 "
                  "of 100 for τ_t, per step rather than per epoch); the lr decays to 0, not 1e-6")
    config_class = DINOConfig

    def __init__(self, config: DINOConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        for key in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
            if getattr(config, key) <= 0:
                raise SelfsupError(f"dino: {key} must be above 0, got {getattr(config, key)}")
        for key in ("center_momentum", "teacher_temperature_warmup_fraction"):
            if not 0 <= getattr(config, key) <= 1:
                raise SelfsupError(f"dino: {key} must lie in [0, 1], got {getattr(config, key)}")
        self.head = dino_head(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim, config.head_bn)
        self.prototypes = weight_norm(nn.Linear(config.proj_dim, config.num_prototypes, bias=False))  # W (K, 256)
        norm = self.prototypes.parametrizations.weight.original0  # (K, 1): each row's norm, fixed to 1
        with torch.no_grad():
            norm.fill_(1.0)
        norm.requires_grad_(False)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_head = frozen_copy(self.head)
        self.teacher_prototypes = frozen_copy(self.prototypes)
        self.criterion = DINOLoss(config.num_prototypes, config.student_temperature, config.center_momentum)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimiser steps taken, for resume
        self.register_buffer("tau_t", torch.tensor(config.warmup_teacher_temperature))  # this step's τ_t
        self.register_buffer("ema", torch.tensor(config.ema_base))  # the teacher's last EMA momentum λ, logged
        self.steps_per_epoch = 0  # set by prepare(); until then the last layer is never frozen

    def default_views(self, image_size: int, channels: int) -> MultiCropViews:
        c = self.config
        views = MultiCropViews(image_size, channels, c.n_local_crops, c.local_crop_size or None,
                               (c.global_min_scale, 1.0), (c.local_min_scale, c.local_max_scale), c.jitter_strength)
        fixed_size_vit = getattr(self.backbone, "dynamic_img_size", None) is False
        if c.n_local_crops and views.local_size != image_size and fixed_size_vit:
            raise SelfsupError(f"dino: the {views.local_size} px local crops do not fit a ViT built for one image "
                               "size; add dynamic_img_size: true to backbone_kwargs (a local_crop_size that is a "
                               "multiple of the patch size), or --set n_local_crops=0")
        return views

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch

    def prototypes_frozen(self) -> bool:
        return int(self.step) < round(self.config.freeze_prototypes_epochs * self.steps_per_epoch)

    @staticmethod
    def g(backbone: nn.Module, head: nn.Module, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, K): the unit bottleneck z = head(backbone(x)) / ||.|| scored against unit rows W."""
        return F.normalize(head(backbone(x)), dim=1) @ W.T

    def student(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every crop -> g_θs (B, K); crops of one size go through the networks as one batch."""
        W = self.prototypes.weight  # (K, bottleneck), unit rows
        if self.prototypes_frozen():
            # zero gradient (not none, which DDP would reject); the optimiser can only shrink v, and W = v / ||v||
            W = W.detach() + 0 * W
        out = []
        for _, group in itertools.groupby(crops, key=lambda v: v.shape[-2:]):
            group = list(group)
            out += self.g(self.backbone, self.head, W, torch.cat(group)).chunk(len(group))
        return out

    @torch.no_grad()
    def teacher(self, global_crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """The global crops -> g_θt (B, K) each, without gradient."""
        t = self.g(self.teacher_backbone, self.teacher_head, self.teacher_prototypes.weight, torch.cat(global_crops))
        return list(t.chunk(len(global_crops)))

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        s = self.student(views)  # crops x (B, K): the N_GLOBAL global crops first
        t = self.teacher(views[:N_GLOBAL])  # N_GLOBAL x (B, K)
        tau_t = float(self.tau_t)
        with torch.no_grad():  # H(P_t) per image: log K when uniform; H of the batch's mean P_t: 0 on one prototype
            p_t = self.criterion.teacher_probabilities(torch.cat(t), tau_t)  # (N_GLOBAL B, K)
            entropy = -(p_t * p_t.clamp_min(1e-12).log()).sum(dim=1).mean()
            p_bar = p_t.mean(0)  # (K,)
            marginal = -(p_bar * p_bar.clamp_min(1e-12).log()).sum()
        loss = self.criterion(s, t, tau_t)  # then the centre moves (training mode)
        return {"loss": loss, "teacher_entropy": entropy, "teacher_marginal_entropy": marginal, "tau_t": self.tau_t,
                "ema": self.ema}

    def collapse_warning(self, logged: dict[str, torch.Tensor]) -> str | None:
        """DINO's two collapses (Caron et al. 2021, sec. 5.3, Fig. 7), read off the teacher's entropy H(P_t): near
        log K, every image gets the uniform distribution (centring outweighs sharpening); the entropy of the batch's
        mean P_t near 0: every image gets the same prototype (no or too little centring)."""
        h, log_k = float(logged["teacher_entropy"]), math.log(self.config.num_prototypes)
        h_bar = float(logged["teacher_marginal_entropy"])
        if h > UNIFORM * log_k:
            return (f"the teacher's output is uniform (entropy {h:.3f} of log K = {log_k:.3f}): the centring "
                    "outweighs the sharpening; lower teacher_temperature (0.04), raise ema_base (0.996) or lower lr")
        if h_bar < ONE_PROTOTYPE * log_k:
            return (f"the teacher puts every image on the same prototypes (entropy of the batch's mean output "
                    f"{h_bar:.3f} of log K = {log_k:.3f}): too little centring; lower center_momentum (0.9)")
        return None

    def after_step(self, step: int, max_steps: int) -> None:
        c = self.config
        self.step.fill_(step)
        lam = cosine_momentum(c.ema_base, step, max_steps)  # λ: 0.996 -> 1
        for teacher, student in ((self.teacher_backbone, self.backbone), (self.teacher_head, self.head),
                                 (self.teacher_prototypes, self.prototypes)):
            ema_update(teacher, student, lam)  # θt <- λ θt + (1 - λ) θs
        self.ema.fill_(lam)
        self.tau_t.fill_(teacher_temperature(step, max_steps, c.warmup_teacher_temperature, c.teacher_temperature,
                                             c.teacher_temperature_warmup_fraction))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) teacher backbone features."""
        return self.teacher_backbone(images)

    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, h, w) of the teacher's backbone (a CNN's map, or a ViT's patch tokens)."""
        return feature_map(self.teacher_backbone, images)
