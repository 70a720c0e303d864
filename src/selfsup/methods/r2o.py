"""R2O: Gokul, Rawat, Saha, Kira, "Refine and Represent: Region-to-Object Representation Learning", 2022."""

import math
from dataclasses import dataclass

import torch

from selfsup.errors import SelfsupError
from selfsup.losses.r2o import RegionBYOLLoss
from selfsup.methods.detcon import DetConB, DetConBConfig
from selfsup.methods.registry import register
from selfsup.nn.kmeans import batched_kmeans
from selfsup.views.detcon import R2OViews


@dataclass
class R2OConfig(DetConBConfig):
    """Paper defaults: BYOL base (EMA 0.99 -> 1, MLPs 4096 -> 256), 100 SLIC superpixels per image, K regions from
    k-means on the target's superpixel features, K = 128 for the first 40/300 of training, then a cosine to 4."""

    ema_base: float = 0.99
    mask_source: str = "slic"
    slic_segments: int = 100
    k_start: int = 128  # K while the curriculum holds it
    k_end: int = 4  # K at the end of training
    k_hold_fraction: float = 40 / 300  # share of the run at k_start (the paper: 40 of 300 epochs)
    kmeans_iterations: int = 10


def region_count(step: int, max_steps: int, k_start: int, k_end: int, hold: float) -> int:
    """K at `step`: k_start for the first `hold` share of the run, then a cosine from k_start down to k_end."""
    progress = min(max(step / max(max_steps, 1) - hold, 0.0) / max(1.0 - hold, 1e-9), 1.0)
    return round(k_end + (k_start - k_end) * (1 + math.cos(math.pi * progress)) / 2)


@register
class R2O(DetConB):
    """Superpixels -> regions -> objects: the target network's features pooled in each SLIC superpixel of the whole
    image are grouped by k-means into K regions, each region's mask follows the two views, and the online network
    predicts the target's mask-pooled projection of the same region in the other view (a region-level BYOL loss).
    K shrinks over training (128 -> 4), so regions grow from parts towards objects."""

    name = "r2o"
    paper = "Gokul et al., Refine and Represent: Region-to-Object Representation Learning (R2O), 2022"
    deviations = ("the region masks follow the views through the same geometric transforms (nearest resampling) "
                  "instead of being ROI-aligned into each view at 7x7; superpixels are computed on the training "
                  "images as given and cached; the K curriculum is scaled to the run's steps; BYOL's views without "
                  "blur below 64 px")
    config_class = R2OConfig

    def __init__(self, config: R2OConfig, in_chans: int = 3):
        if config.n_masks != R2OConfig.n_masks:  # inherited from DetCon's config; R2O pools every region instead
            raise SelfsupError(f"r2o pools every one of the K regions k-means finds, so n_masks={config.n_masks} "
                               "would be ignored: drop it and set K with --set k_start=N / k_end=N")
        super().__init__(config, in_chans)
        self.criterion = RegionBYOLLoss()
        self.register_buffer("k", torch.tensor(config.k_start))  # current K of the curriculum, logged

    def default_views(self, image_size: int, channels: int) -> R2OViews:
        return R2OViews(image_size, channels, self.config.crop_min_scale)

    @torch.no_grad()
    def regions(self, whole: torch.Tensor, superpixels: torch.Tensor) -> torch.Tensor:
        """Whole images (B, C, S, S), superpixel ids (B, S, S) -> each superpixel's region (B, P), P = max id + 1:
        k-means with K = self.k over the target's features pooled in each superpixel."""
        P = int(superpixels.max()) + 1
        ids = torch.arange(P, device=whole.device).expand(len(whole), P)  # (B, P)
        h = self.mask_vectors(self.target_backbone, whole, superpixels, ids)  # (B, P, D)
        present = (superpixels.flatten(1)[:, None] == ids[..., None]).any(-1)  # (B, P)
        return batched_kmeans(h, present, int(self.k), self.config.kmeans_iterations)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2, whole, sp1, sp2, sp_whole = views  # (B, C, S, S) x 3, (B, S, S) x 3
        cluster = self.regions(whole, sp_whole)  # (B, P)
        r1, r2 = (cluster.gather(1, sp.flatten(1)).view_as(sp) for sp in (sp1, sp2))  # (B, S, S) region ids
        K = int(cluster.max()) + 1
        ids = torch.arange(K, device=x1.device).expand(len(x1), K)  # (B, K)
        valid = torch.stack([(r.flatten(1)[:, None] == ids[..., None]).any(-1) for r in (r1, r2)]).all(0)  # (B, K)
        q1, q2 = self.online(x1, r1, ids), self.online(x2, r2, ids)  # (B, K, proj_dim)
        z1, z2 = self.target(x1, r1, ids), self.target(x2, r2, ids)
        loss = self.criterion(q1, q2, z1, z2, valid)
        return {"loss": loss, "tau": self.tau, "k": self.k.float(), "regions": valid.sum(1).float().mean()}

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The whole image and both views with the current K regions (k-means on the target's features)."""
        x1, x2, whole, sp1, sp2, sp_whole = batch
        cluster = self.regions(whole, sp_whole)  # (B, P)
        return [(name, x, cluster.gather(1, sp.flatten(1)).view_as(sp))
                for name, x, sp in (("whole image", whole, sp_whole), ("view 1", x1, sp1), ("view 2", x2, sp2))]

    def after_step(self, step: int, max_steps: int) -> None:
        super().after_step(step, max_steps)
        c = self.config
        self.k.fill_(region_count(step, max_steps, c.k_start, c.k_end, c.k_hold_fraction))
