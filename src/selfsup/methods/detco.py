"""DetCo: Xie, Ding, Wang, Zhan, Xu, Sun, Li, Luo, "DetCo: Unsupervised Contrastive Learning for Object Detection",
ICCV 2021. MoCo v2 with heads and queues on all four ResNet stages, and contrast between global views and jigsaw
patches. The authors released no pretraining code: this follows the paper."""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from selfsup.losses.detco import DetCoLoss
from selfsup.methods.base import ImageMethod
from selfsup.methods.moco import QUEUE_NOTE, MoCoV2Config, check_queue
from selfsup.methods.registry import register
from selfsup.nn import KeyQueue, ema_update, frozen_copy, gather_with_grad, rank, stage_features, world_size
from selfsup.views.detco import GRID, DetCoViews

Keys = tuple[list[torch.Tensor], list[torch.Tensor]]  # per stage: global vectors (B, D), local vectors (B, D)


@dataclass
class DetCoConfig(MoCoV2Config):
    """MoCo v2's defaults (SGD lr 0.03 x B/256, wd 1e-4, τ 0.2, m 0.999, 128-d keys, 2-layer MLP heads with 2048
    hidden, crops 0.2-1, jitter 0.5, Shuffle-BN groups of 32; queue_size 4096, see `deviations`) plus DetCo's stage
    weights w_s and its jigsaw patches (64 px at 224 px: patch_fraction = 64/224 of the image side)."""

    stage_weight_2: float = 0.1  # w_s of res2 (after the first stage) ... res5 (the last)
    stage_weight_3: float = 0.4
    stage_weight_4: float = 0.7
    stage_weight_5: float = 1.0
    patch_fraction: float = 64 / 224  # patch side / image side


@register
class DetCo(ImageMethod):
    """Query encoder f_q (backbone + per stage s a global head g_s and a local head l_s), EMA key encoder f_k.

    Per stage s the map is average-pooled: q^g_s = g_s(pool(f_s(x))) for the global view x, q^l_s =
    l_s([pool(f_s(p_1)), ..., pool(f_s(p_9))]) for its 9 jigsaw patches (their vectors concatenated in grid order).
    The keys k^g_s, k^l_s come from the other augmented copy through f_k. Loss: DetCoLoss, Σ_s w_s (L_gg + L_ll +
    L_gl) against one queue per stage and kind; after each step f_k ← m·f_k + (1−m)·f_q and the keys are enqueued.
    """

    name = "detco"
    paper = "Xie et al., DetCo: Unsupervised Contrastive Learning for Object Detection, ICCV 2021"
    deviations = (QUEUE_NOTE + " The 8 queues (4 stages x global/local) each hold queue_size keys. Patches are "
                  "round(S x 64/224) px (8 px at 28 px) from one random resized crop (scale 0.2-1, flipped) of "
                  "3x3 patches' size, cut exactly into the 3x3 grid (no gaps between patches), each patch "
                  "colour-augmented on its own; their vectors are concatenated in grid order (no shuffling). "
                  "Head hidden width 2048 on every stage. Gaussian blur is skipped below 64 px, as in SimCLRViews.")
    config_class = DetCoConfig

    def __init__(self, config: DetCoConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        widths = self.stage_widths()
        self.global_heads = nn.ModuleList(self._head(c) for c in widths)  # g_s
        self.local_heads = nn.ModuleList(self._head(GRID * GRID * c) for c in widths)  # l_s on 9 concatenated vectors
        self.key_backbone = frozen_copy(self.backbone)  # f_k, no gradient
        self.key_global_heads, self.key_local_heads = frozen_copy(self.global_heads), frozen_copy(self.local_heads)
        self.global_queues = nn.ModuleList(KeyQueue(config.queue_size, config.proj_dim) for _ in widths)
        self.local_queues = nn.ModuleList(KeyQueue(config.queue_size, config.proj_dim) for _ in widths)
        weights = (config.stage_weight_2, config.stage_weight_3, config.stage_weight_4, config.stage_weight_5)
        self.criterion = DetCoLoss(config.temperature, weights)
        self._new_keys: Keys | None = None  # this step's keys, enqueued in after_step

    def _head(self, in_dim: int) -> nn.Module:
        hidden = self.config.proj_hidden_dim  # MoCo v2's MLP: Linear, ReLU, Linear (no BN)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.config.proj_dim))

    @torch.no_grad()
    def stage_widths(self) -> list[int]:
        """The channels C_s of the 4 stage maps, from one forward pass in eval mode."""
        was_training = self.backbone.training
        maps = stage_features(self.backbone.eval(), torch.zeros(1, self.in_chans, 64, 64))
        self.backbone.train(was_training)
        return [m.shape[1] for m in maps]

    def default_views(self, image_size: int, channels: int) -> DetCoViews:
        c = self.config
        patch = max(1, round(image_size * c.patch_fraction))
        return DetCoViews(image_size, channels, c.crop_min_scale, c.jitter_strength, patch)

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        """As MoCo: refuse a queue shorter than a global batch, warn when it holds more keys than the data."""
        return check_queue(self.config.queue_size, num_samples, steps_per_epoch, "the queues")

    def encode(self, backbone: nn.Module, global_heads: nn.ModuleList, local_heads: nn.ModuleList,
               x: torch.Tensor, patches: torch.Tensor) -> Keys:
        """Global views (B, C, S, S) and their patches (B, 9, C, p, p) -> per stage [g_s(h^g_s)], [l_s(h^l_s)], each
        (B, proj_dim); h^g_s = pool(f_s(x)) (B, C_s), h^l_s = the 9 patches' pooled maps concatenated (B, 9·C_s)."""
        B = x.shape[0]
        h_g = [f.mean((2, 3)) for f in stage_features(backbone, x)]  # 4 x (B, C_s)
        h_l = [f.mean((2, 3)).reshape(B, -1) for f in stage_features(backbone, patches.flatten(0, 1))]  # (B, 9C_s)
        return [head(h) for head, h in zip(global_heads, h_g)], [head(h) for head, h in zip(local_heads, h_l)]

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x_q, x_k, p_q, p_k = views  # (B, C, S, S) x 2, (B, 9, C, p, p) x 2
        q_g, q_l = self._split_bn(self.backbone, self.global_heads, self.local_heads, x_q, p_q)
        with torch.no_grad():
            k_g, k_l = self._shuffled_keys(x_k, p_k)
        queues_g, queues_l = [q.keys for q in self.global_queues], [q.keys for q in self.local_queues]
        terms = self.criterion.terms(q_g, q_l, k_g, k_l, queues_g, queues_l)  # the queues change in after_step
        self._new_keys = (k_g, k_l)
        return {"loss": sum(terms.values()), **{f"loss_{kind}": value for kind, value in terms.items()}}

    def after_step(self, step: int, max_steps: int) -> None:
        m = self.config.ema_rate
        ema_update(self.key_backbone, self.backbone, m)  # θ_k ← m·θ_k + (1−m)·θ_q
        ema_update(self.key_global_heads, self.global_heads, m)
        ema_update(self.key_local_heads, self.local_heads, m)
        if self._new_keys is not None:
            k_g, k_l = self._new_keys
            for queue, keys in zip([*self.global_queues, *self.local_queues], [*k_g, *k_l]):
                queue.enqueue(keys)  # gathers every device's keys first
            self._new_keys = None

    def _split_bn(self, backbone: nn.Module, global_heads: nn.ModuleList, local_heads: nn.ModuleList,
                  x: torch.Tensor, patches: torch.Tensor) -> Keys:
        """`encode` in groups of ~bn_group_size images (global views and their patches), each group with its own BN
        statistics, as MoCo's split BN."""
        size = self.config.bn_group_size
        groups = max(1, x.shape[0] // size) if size > 0 else 1
        outs = [self.encode(backbone, global_heads, local_heads, xs, ps)
                for xs, ps in zip(x.tensor_split(groups), patches.tensor_split(groups))]
        return ([torch.cat(stage) for stage in zip(*[g for g, _ in outs])],
                [torch.cat(stage) for stage in zip(*[loc for _, loc in outs])])

    @torch.no_grad()
    def _shuffled_keys(self, x_k: torch.Tensor, p_k: torch.Tensor) -> Keys:
        """MoCo's Shuffle-BN (see moco.py): the global batch's key images (and their patches) are shuffled by one
        permutation shared by all devices, each device encodes its shard in split-BN groups, the keys are gathered
        back and unshuffled. (B, C, S, S), (B, 9, C, p, p) -> per stage (B, proj_dim) global and local keys."""
        B, W = x_k.shape[0], world_size()
        x_all, p_all = gather_with_grad(x_k), gather_with_grad(p_k)  # (WB, ...), rank order
        perm = torch.randperm(W * B, device=x_k.device)
        if W > 1:
            dist.broadcast(perm, src=0)
        shard = perm.view(W, B)[rank()]
        k_g, k_l = self._split_bn(self.key_backbone, self.key_global_heads, self.key_local_heads, x_all[shard],
                                  p_all[shard])
        back = torch.argsort(perm)

        def unshuffle(k: torch.Tensor) -> torch.Tensor:  # (B, D) of the shard -> (B, D) of this device's images
            return gather_with_grad(k)[back].view(W, B, -1)[rank()]

        return [unshuffle(k) for k in k_g], [unshuffle(k) for k in k_l]
