"""SwAV: Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features
by Contrasting Cluster Assignments", NeurIPS 2020."""

import itertools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.swav import SwAVLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, gather_with_grad, rank, world_size
from selfsup.views.multicrop import MultiCropViews

N_GLOBAL = 2  # codes are computed from the two global crops only


@dataclass
class SwAVConfig(ImageMethodConfig):
    """Paper defaults: LARS, lr 4.8 at batch 4096 (0.3 x B/256; the authors use 0.6 at batch 256), cosine
    decay (to 0 here, to lr/1000 in the paper), wd 1e-6; head 2048 -> 128; tau 0.1,
    eps 0.05, 3 Sinkhorn iterations; prototypes frozen for the first epoch; 2 global crops, scale
    (0.14, 1), + 6 local crops of 96/224 of the side, scale (0.05, 0.14).

    num_prototypes is 300 here, the paper's 3000 being for ImageNet (1.28M images, 1000 classes); it must
    exceed proj_dim, or the projections can score all prototypes alike (loss stuck at log K).
    queue_length (0 = off): past projections of each global crop, over all devices; the paper uses
    3840 for batches of 256 and starts the queue at epoch 15.
    """

    lr: float = 0.3
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    num_prototypes: int = 300
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    freeze_prototypes_epochs: float = 1.0
    queue_length: int = 0
    epoch_queue_starts: int = 15
    n_local_crops: int = 6
    local_crop_size: int = 0  # 0: 96/224 of the image size (12 px at 28), at least 4 px
    global_min_scale: float = 0.14
    local_min_scale: float = 0.05
    local_max_scale: float = 0.14
    jitter_strength: float = 1.0


@register
class SwAV(ImageMethod):
    """Crops -> backbone -> head -> unit z -> scores z C^T against unit prototypes C -> swapped prediction
    of the global crops' Sinkhorn codes from every other crop."""

    name = "swav"
    paper = ("Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (SwAV), "
             "NeurIPS 2020")
    deviations = ("300 prototypes instead of 3000 (for 60k-image data sets, not ImageNet); local crops are 96/224 of "
                  "the image side (12 px at 28 px, at least 4 px) and blurred only from 64 px, like SimCLRViews")
    config_class = SwAVConfig

    def __init__(self, config: SwAVConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        if config.num_prototypes <= config.proj_dim:  # then some z is orthogonal to every c_k - c_1
            warnings.warn(f"swav: {config.num_prototypes} prototypes for {config.proj_dim}-d projections let z "
                          "give every prototype the same score, a collapse where the loss stays at log K; "
                          "use more prototypes than proj_dim", stacklevel=2)
        self.projection_head = ProjectionHead(self.backbone.num_features, config.proj_hidden_dim, config.proj_dim)
        self.prototypes = nn.Linear(config.proj_dim, config.num_prototypes, bias=False)  # C: (K, D)
        self.criterion = SwAVLoss(config.temperature, config.epsilon, config.sinkhorn_iterations)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimiser steps taken, for resume
        self.register_buffer("queue", torch.zeros(N_GLOBAL, config.queue_length, config.proj_dim))  # newest first
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # valid rows in the queue
        self.steps_per_epoch = 0  # set by prepare(); until then nothing is frozen and the queue starts at once
        self.normalize_prototypes()

    def default_views(self, image_size: int, channels: int) -> MultiCropViews:
        c = self.config
        return MultiCropViews(image_size, channels, c.n_local_crops, c.local_crop_size or None,
                              (c.global_min_scale, 1.0), (c.local_min_scale, c.local_max_scale), c.jitter_strength)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """C <- C / ||C|| row-wise, outside autograd (the paper does it before every forward)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def prototypes_frozen(self) -> bool:
        return int(self.step) < round(self.config.freeze_prototypes_epochs * self.steps_per_epoch)

    def project(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Crops -> unit projections z (B, D) each; crops of one size go through the backbone as one batch."""
        z = []
        for _, group in itertools.groupby(views, key=lambda v: v.shape[-2:]):
            group = list(group)
            z += F.normalize(self.projection_head(self.backbone(torch.cat(group))), dim=1).chunk(len(group))
        return z

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.normalize_prototypes()
        C = self.prototypes.weight  # (K, D)
        if self.prototypes_frozen():
            # zero gradient (not none, which DDP would reject): the optimiser can only decay C, a
            # rescaling that the next normalisation undoes, so C stays put for the first epoch
            C = C.detach() + 0 * C
        z = self.project(views)  # crops x (B, D): the N_GLOBAL global crops first
        scores = [z_v @ C.T for z_v in z]  # (B, K) each
        queue_scores = self.queue_scores(C.detach())
        loss = self.criterion(scores[:N_GLOBAL], scores[N_GLOBAL:], queue_scores)
        self.enqueue(z[:N_GLOBAL])
        return {"loss": loss}

    def queue_scores(self, C: torch.Tensor) -> list[torch.Tensor] | None:
        """Scores (L/W, K) of this device's share of the queued projections of each global crop, once the
        queue is full. Every device holds the same global queue; Sinkhorn sums over devices, so each
        contributes a disjoint slice and every queued sample counts once."""
        L = self.config.queue_length
        if L == 0 or int(self.queue_filled) < L:
            return None
        return [torch.tensor_split(q, world_size())[rank()] @ C.T for q in self.queue]

    @torch.no_grad()
    def enqueue(self, z_global: list[torch.Tensor]) -> None:
        """FIFO: the global batch's projections go in front, the oldest fall off (from epoch_queue_starts).
        All devices enqueue the same gathered batch, so their queues stay equal (DDP broadcasts buffers)."""
        L = self.config.queue_length
        if L == 0 or int(self.step) < self.config.epoch_queue_starts * self.steps_per_epoch:
            return
        new = torch.stack([gather_with_grad(z.detach()) for z in z_global])[:, :L]  # (N_GLOBAL, <=L, D)
        n = new.shape[1]
        self.queue[:, n:] = self.queue[:, : L - n].clone()
        self.queue[:, :n] = new
        self.queue_filled.fill_(min(L, int(self.queue_filled) + n))

    def after_step(self, step: int, max_steps: int) -> None:
        self.step.fill_(step)
        self.normalize_prototypes()
