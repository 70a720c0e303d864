"""MoCo v1: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020. MoCo v2: Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020."""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.losses.infonce import InfoNCELoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ema_update, frozen_copy, gather_with_grad, rank, world_size
from selfsup.nn.queue import KeyQueue
from selfsup.views.simclr import MoCoV1Views, SimCLRViews

QUEUE_NOTE = ("queue_size 4096 instead of 65536: the paper's queue is 5% of ImageNet, 65536 would exceed "
              "Fashion-MNIST's 60k images (old keys of the query's own image would become negatives); 4096 is ~7%.")


def check_queue(queue_size: int, num_samples: int, steps_per_epoch: int, where: str) -> str | None:
    """A queue shorter than one global batch: a SelfsupError; one holding more keys than the data minus a batch (an
    image's own earlier key then sits in `where` as its negative): the warning for `prepare` to return."""
    # steps_per_epoch = num_samples // global_batch, hence global_batch > num_samples / (steps_per_epoch + 1)
    smallest_batch = num_samples // (steps_per_epoch + 1) + 1
    if queue_size < smallest_batch:
        raise SelfsupError(f"queue_size {queue_size} is shorter than one global batch (at least "
                           f"{smallest_batch} keys per step); pass --set queue_size={smallest_batch} or more, "
                           "or a smaller --batch-size")
    if queue_size > num_samples - smallest_batch:  # see QUEUE_NOTE
        fits = max(smallest_batch, num_samples - smallest_batch)
        return (f"queue_size {queue_size} keeps more keys than the {num_samples} images minus a "
                f"batch: an image's own key from an earlier step stays in {where} as one of its negatives; "
                f"pass --set queue_size={fits} or less")
    return None


@dataclass
class MoCoV1Config(ImageMethodConfig):
    """Paper defaults: SGD lr 0.03 x B/256, wd 1e-4, momentum 0.9, no warm-up; 128-d keys, τ 0.07,
    key-encoder momentum m 0.999, crops of scale 0.2-1. queue_size 4096 (paper 65536, see `deviations`);
    it must hold at least one global batch. bn_group_size: images per BatchNorm group for Shuffle-BN,
    32 like the paper's 8 GPUs x 32 images (0: one group per device)."""

    optimizer: str = "sgd"
    lr: float = 0.03
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.0
    temperature: float = 0.07
    proj_dim: int = 128
    queue_size: int = 4096
    ema_rate: float = 0.999
    bn_group_size: int = 32
    crop_min_scale: float = 0.2


@dataclass
class MoCoV2Config(MoCoV1Config):
    """MoCo v2: v1 + a 2-layer MLP head (2048 hidden, ReLU, no BN) + SimCLR's views with blur
    (jitter strength 0.5: brightness/contrast/saturation 0.4, hue 0.1) + cosine lr; τ 0.2."""

    temperature: float = 0.2
    proj_hidden_dim: int = 2048
    jitter_strength: float = 0.5


@register
class MoCoV1(ImageMethod):
    """Query q = f_q(x_q), key k = f_k(x_k) from the EMA key encoder; InfoNCE of q against its key
    and the queue of earlier keys (τ); after each step f_k ← m·f_k + (1−m)·f_q and k is enqueued."""

    name = "mocov1"
    paper = "He et al., Momentum Contrast for Unsupervised Visual Representation Learning (MoCo), CVPR 2020"
    deviations = (QUEUE_NOTE + " The lr follows the trainer's cosine schedule, not the paper's x0.1 steps at "
                  "epochs 120 and 160.")
    config_class = MoCoV1Config

    def __init__(self, config: MoCoV1Config, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.head = self._head(self.backbone.num_features)
        self.key_encoder = nn.Sequential(frozen_copy(self.backbone), frozen_copy(self.head))  # f_k, no gradient
        self.queue = KeyQueue(config.queue_size, config.proj_dim)
        self.criterion = InfoNCELoss(config.temperature)
        self._new_keys: torch.Tensor | None = None  # this step's keys, enqueued in after_step

    def _head(self, in_dim: int) -> nn.Module:
        return nn.Linear(in_dim, self.config.proj_dim)  # v1: the ResNet's fc layer with 128 outputs

    def default_views(self, image_size: int, channels: int) -> MoCoV1Views:
        return MoCoV1Views(image_size, channels, self.config.crop_min_scale)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        return check_queue(self.config.queue_size, num_samples, steps_per_epoch, "the queue")

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x_q, x_k = views  # (B, C, S, S) each
        q = self._split_bn(self.backbone, self.head, x_q)  # (B, proj_dim)
        with torch.no_grad():
            k = self._shuffled_keys(x_k)  # (B, proj_dim)
        loss = self.criterion(q, k, self.queue.keys)  # the queue changes only in after_step, after backward
        self._new_keys = k
        return {"loss": loss}

    def after_step(self, step: int, max_steps: int) -> None:
        ema_update(self.key_encoder[0], self.backbone, self.config.ema_rate)  # θ_k ← m·θ_k + (1−m)·θ_q
        ema_update(self.key_encoder[1], self.head, self.config.ema_rate)
        if self._new_keys is not None:
            self.queue.enqueue(self._new_keys)  # gathers every device's keys first
            self._new_keys = None

    def _split_bn(self, backbone: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Encode x in groups of ~bn_group_size images, each group with its own BN statistics,
        as on the paper's GPUs (32 images each). (B, C, S, S) -> (B, proj_dim)."""
        size = self.config.bn_group_size
        groups = max(1, x.shape[0] // size) if size > 0 else 1
        return torch.cat([head(backbone(chunk)) for chunk in x.tensor_split(groups)])

    @torch.no_grad()
    def _shuffled_keys(self, x_k: torch.Tensor) -> torch.Tensor:
        """Shuffle-BN (paper sec. 3.3). With BN, a query and its positive key encoded in the same batch
        share batch statistics, a signal the model can use to find the positive without learning
        features. So the key images of the global batch are gathered, shuffled with one permutation
        shared by all devices, each device encodes its shard of the shuffled batch, and the keys are
        gathered back and unshuffled. On one device the same holds through split BN: queries are
        encoded in consecutive groups, keys in groups of the shuffled batch, so a query and its key
        see the statistics of different image sets. (B, C, S, S) -> (B, proj_dim)."""
        B, W = x_k.shape[0], world_size()
        x_all = gather_with_grad(x_k)  # (WB, C, S, S), rank order; itself on one device
        perm = torch.randperm(W * B, device=x_k.device)
        if W > 1:
            dist.broadcast(perm, src=0)  # one permutation for every device
        k_shard = self._split_bn(self.key_encoder[0], self.key_encoder[1], x_all[perm.view(W, B)[rank()]])  # (B, D)
        k_all = gather_with_grad(k_shard)  # (WB, D): k_all[j] is the key of image perm[j]
        return k_all[torch.argsort(perm)].view(W, B, -1)[rank()]  # unshuffled; this device's rows


@register
class MoCoV2(MoCoV1):
    """MoCo v1 with a 2-layer MLP head, SimCLR's augmentation (with blur) and τ 0.2 (cosine lr)."""

    name = "mocov2"
    paper = "Chen et al., Improved Baselines with Momentum Contrastive Learning (MoCo v2), arXiv 2020"
    deviations = QUEUE_NOTE + " Gaussian blur is skipped below 64 px, as in SimCLRViews."
    config_class = MoCoV2Config

    def _head(self, in_dim: int) -> nn.Module:
        hidden = self.config.proj_hidden_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.config.proj_dim))

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels, self.config.crop_min_scale, self.config.jitter_strength)
