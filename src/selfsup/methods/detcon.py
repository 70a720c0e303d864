"""DetCon: Hénaff, Koppula, Alayrac, van den Oord, Vinyals, Carreira, "Efficient Visual Pretraining with Contrastive
Detection", ICCV 2021. DetCon-S (SimCLR heads) and DetCon-B (BYOL heads with an EMA target)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from selfsup.data.segments import MaskRecipe, SegmentedImages
from selfsup.losses.detcon import DetConLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, cosine_momentum, ema_update, feature_map, frozen_copy
from selfsup.views.detcon import WHOLE_VIEW, DetConViews


@dataclass
class DetConConfig(ImageMethodConfig):
    """Paper defaults: LARS, lr 0.2 x B/256 (scaled linearly), wd 1.5e-6, τ 0.1, 16 masks per image from
    Felzenszwalb–Huttenlocher (scale 1000, min size 1000), BYOL's augmentations."""

    optimizer: str = "lars"
    lr: float = 0.2
    weight_decay: float = 1.5e-6
    warmup_fraction: float = 0.01
    temperature: float = 0.1  # τ
    n_masks: int = 16  # masks sampled per image among those present in both views
    mask_source: str = "fh"  # fh | slic | grid
    fh_scale: float = 1000.0  # at 224 px; both FH settings are scaled with the image's area
    fh_min_size: int = 1000
    slic_segments: int = 16
    grid: int = 4  # a grid x grid partition for mask_source=grid
    crop_min_scale: float = 0.08
    proj_hidden_dim: int = 2048
    proj_dim: int = 128


class DetCon(ImageMethod):
    """Backbone features at stride 32 averaged inside each mask m (h_m = Σ_ij m_ij f_ij / Σ_ij m_ij), projected, and
    contrasted: the same mask in the other view is the positive, every other mask of the global batch a negative."""

    paper = "Hénaff et al., Efficient Visual Pretraining with Contrastive Detection (DetCon), ICCV 2021"
    deviations = ("FH's scale and min size (1000 and 1000 px at 224 px) are scaled with the image's area; masks are "
                  "computed on the training images as given (the paper: full-size ImageNet images); BYOL's views "
                  "without blur below 64 px; warm-up as a fraction of the run")
    config_class = DetConConfig

    def __init__(self, config: DetConConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.projector = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim)  # g
        self.criterion = DetConLoss(config.temperature)

    def training_images(self, images: Dataset) -> Dataset:
        """Each image with its segment map, computed once and cached (data/segments.py)."""
        c = self.config
        return SegmentedImages(images, MaskRecipe(c.mask_source, c.fh_scale, c.fh_min_size, c.slic_segments, c.grid))

    def default_views(self, image_size: int, channels: int) -> DetConViews:
        return DetConViews(image_size, channels, self.config.crop_min_scale, self.config.n_masks)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        """A warning when the backbone's last map is too coarse for masks to differ (every mask then pools the same
        few cells): e.g. a ResNet's stride 32 on 28 px images gives 1x1."""
        size = self.data_meta["image_size"]
        with torch.no_grad():
            was_training = self.backbone.training
            h, w = feature_map(self.backbone.eval(), torch.zeros(1, self.in_chans, size, size)).shape[-2:]
            self.backbone.train(was_training)
        if h * w >= 16:
            return None
        return (f"{self.name}: the backbone's last feature map is {h}x{w} at {size} px, too coarse for "
                f"{self.config.n_masks} masks to pool different features; pass --set small_stem=true (ResNets) or a "
                "larger --image-size")

    def mask_vectors(self, backbone, x: torch.Tensor, segments: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Views (B, C, S, S), segment maps (B, S, S), ids (B, M) -> mask-pooled features h (B, M, D)."""
        f = feature_map(backbone, x)  # (B, D, h, w)
        masks = (segments[:, None] == ids[:, :, None, None]) | (ids[:, :, None, None] == WHOLE_VIEW)  # (B, M, S, S)
        m = F.adaptive_avg_pool2d(masks.float(), f.shape[-2:])  # (B, M, h, w): each cell's share of the mask
        return torch.einsum("bmhw,bdhw->bmd", m, f) / m.sum((2, 3)).clamp_min(1e-6)[..., None]

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The two views with the sampled masks (their segment ids; -1 elsewhere): the same id is the same mask."""
        x1, x2, seg1, seg2, ids = batch
        used = [(seg[:, None] == ids[:, :, None, None]).any(1) | (ids == WHOLE_VIEW).any(1)[:, None, None]
                for seg in (seg1, seg2)]  # (B, S, S) each
        return [(f"view {v + 1}", x, seg.where(u, -1)) for v, (x, seg, u) in enumerate(zip((x1, x2), (seg1, seg2),
                                                                                          used))]

    def project(self, head, h: torch.Tensor) -> torch.Tensor:
        """(B, M, D) -> (B, M, proj_dim): the head applied to every mask vector."""
        B, M, D = h.shape
        return head(h.reshape(B * M, D)).reshape(B, M, -1)


@register
class DetConS(DetCon):
    """DetCon-S: SimCLR's projection head on both views, the loss's targets are the projections themselves."""

    name = "detcon-s"

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2, seg1, seg2, ids = views  # (B, C, S, S) x 2, (B, S, S) x 2, (B, M)
        z1 = self.project(self.projector, self.mask_vectors(self.backbone, x1, seg1, ids))  # (B, M, proj_dim)
        z2 = self.project(self.projector, self.mask_vectors(self.backbone, x2, seg2, ids))
        return {"loss": self.criterion(z1, z2, z1, z2, ids)}


@dataclass
class DetConBConfig(DetConConfig):
    """BYOL's heads: projector and predictor 4096 -> 256, target EMA τ_base 0.996 -> 1."""

    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    ema_base: float = 0.996


@register
class DetConB(DetCon):
    """DetCon-B: online f_θ -> g_θ -> q_θ predicts the EMA target's g_ξ(f_ξ) mask vectors, under DetCon's contrastive
    loss (not BYOL's cosine). ξ ← τ·ξ + (1 − τ)·θ after every step, τ rising to 1 by a cosine."""

    name = "detcon-b"
    config_class = DetConBConfig

    def __init__(self, config: DetConBConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim)  # q_θ
        self.target_backbone = frozen_copy(self.backbone)  # f_ξ
        self.target_projector = frozen_copy(self.projector)  # g_ξ
        self.register_buffer("tau", torch.tensor(config.ema_base))

    def online(self, x: torch.Tensor, segments: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """q_θ(g_θ(h_θ)), (B, M, proj_dim)."""
        return self.project(self.predictor, self.project(self.projector, self.mask_vectors(self.backbone, x, segments,
                                                                                            ids)))

    @torch.no_grad()
    def target(self, x: torch.Tensor, segments: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """g_ξ(h_ξ), (B, M, proj_dim), without gradient."""
        return self.project(self.target_projector, self.mask_vectors(self.target_backbone, x, segments, ids))

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2, seg1, seg2, ids = views
        q1, q2 = self.online(x1, seg1, ids), self.online(x2, seg2, ids)
        k1, k2 = self.target(x1, seg1, ids), self.target(x2, seg2, ids)
        return {"loss": self.criterion(q1, q2, k1, k2, ids), "tau": self.tau}

    def after_step(self, step: int, max_steps: int) -> None:
        tau = cosine_momentum(self.config.ema_base, step, max_steps)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
        self.tau.fill_(tau)
