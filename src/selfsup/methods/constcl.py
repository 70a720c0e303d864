"""ConST-CL: Yuan et al., "Contextualized Spatio-Temporal Contrastive Learning with Self-Supervision", CVPR 2022.

Two clips x, x' of one video far apart in time -> a video ResNet f -> dense maps F, F' (B, D, T', H', W').
- Global: g(mean of F) against g(mean of F'), InfoNCE with in-batch negatives, τ 0.1; g a 3-layer MLP to 128-d.
- Local: K random boxes per pair of clips (the same boxes in both: one spatial crop, see video/views.py); region
  features h_k = RoIAlign(time-mean of F, box k), projected to 128; the instance reconstructor (a transformer
  decoder) takes view 1's regions as queries and view 2's context (every location of F', projected) as keys and
  values and predicts view 2's regions: z_k, matched to h'_k under InfoNCE over all regions of the batch, τ 0.2;
  and the same from view 2 to view 1.
- L = 1.0 · L_global + 0.001 · L_local.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.ops import roi_align

from selfsup.errors import SelfsupError
from selfsup.losses.constcl import ConSTCLLoss
from selfsup.methods.base import Method, MethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead
from selfsup.nn.video import ARCHS, VideoResNet


@dataclass
class ConSTCLConfig(MethodConfig):
    """Paper: clips of 16 frames at stride 2 through a 3-D ResNet, LARS, the global head a 3-layer MLP to 128-d
    (τ 0.1), the instance reconstructor 3 layers of 128 channels (τ 0.2), 8 boxes per clip, loss weights 1 and
    0.001. The network and clip defaults here are sized for a CPU (`deviations`); width 64 with 2 blocks is
    torchvision's full r3d_18."""

    arch: str = "r3d_18"  # r3d_18 | r2plus1d_18 (torchvision's, no weights)
    width: int = 32  # channels of the first stage (torchvision: 64), the later ones double it
    blocks: int = 2  # BasicBlocks in each of the 4 stages (2: the "18" of r3d_18)
    frames: int = 8  # T, frames per clip
    stride: int = 2  # s, frames between two of a clip's
    size: int = 64  # S, pixels of a clip's square frames (videos are decoded once at 5/4 S on the shorter side)
    boxes: int = 8  # K, regions per clip
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    decoder_dim: int = 128
    decoder_layers: int = 3
    decoder_heads: int = 4  # paper 3, which does not divide 128 channels
    global_temperature: float = 0.1
    local_temperature: float = 0.2
    global_weight: float = 1.0
    local_weight: float = 0.001
    optimizer: str = "lars"
    lr: float = 0.32  # for a batch of 256 clips, scaled linearly with the batch
    weight_decay: float = 1e-6


def check_config(config: ConSTCLConfig) -> None:
    """A SelfsupError naming the first option outside what the network and the losses can take."""
    counts = {"size": 16, "boxes": 1, "frames": 1, "stride": 1, "blocks": 1, "decoder_layers": 1}
    for name, low in counts.items():
        if getattr(config, name) < low:
            raise SelfsupError(f"constcl option {name} must be at least {low}, got {getattr(config, name)}")
    for name in ("global_temperature", "local_temperature"):
        if getattr(config, name) <= 0:
            raise SelfsupError(f"constcl option {name} must be positive, got {getattr(config, name)}; paper: 0.1, 0.2")
    if config.arch not in ARCHS:
        raise SelfsupError(f"constcl arch '{config.arch}' is not one of {', '.join(ARCHS)}")
    if config.width < 4 or config.width % 4:
        raise SelfsupError(f"constcl width {config.width} must be a multiple of 4, at least 4; pass e.g. 16 or 64")
    if config.decoder_dim % config.decoder_heads:
        raise SelfsupError(f"constcl decoder_dim {config.decoder_dim} must be a multiple of decoder_heads "
                           f"{config.decoder_heads}; pass e.g. decoder_heads=4")


@register
class ConSTCL(Method):
    name = "constcl"
    paper = "Yuan et al., Contextualized Spatio-Temporal Contrastive Learning with Self-Supervision, CVPR 2022"
    deviations = ("sized for a CPU: r3d_18 at half width (8.3M parameters), clips of 8 frames at stride 2 (paper: 16 "
                  "at stride 2) of 64 px, so the last map is 1 x 4 x 4; the two clips share one spatial crop and flip "
                  "so that box k covers the same scene region in both (how regions are paired is our reading); the "
                  "instance reconstructor has 4 heads (3 do not divide 128 channels); the local loss is taken in "
                  "both directions and averaged; context = every location of the other clip's last map")
    modality = "video"
    config_class = ConSTCLConfig
    # channels_last is the 4-D (image) layout, which 5-D video weights and clips cannot take: off, also on GPUs
    run_defaults: ClassVar[dict[str, Any]] = {"data": "clips", "batch_size": 8, "channels_last": False}

    def __init__(self, config: ConSTCLConfig, data_meta: dict[str, Any]):
        super().__init__(config, data_meta)
        check_config(config)
        self.backbone = VideoResNet(config.arch, config.width, [config.blocks] * 4)  # f
        D, C = self.backbone.num_features, config.decoder_dim
        self.projection_head = ProjectionHead(D, config.proj_hidden_dim, config.proj_dim, num_layers=3)  # g
        self.region_projection = nn.Linear(D, C)  # h -> queries and targets
        self.context_projection = nn.Linear(D, C)  # F' -> keys and values
        layer = nn.TransformerDecoderLayer(C, config.decoder_heads, dim_feedforward=4 * C, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.reconstructor = nn.TransformerDecoder(layer, config.decoder_layers, norm=nn.LayerNorm(C))
        self.criterion = ConSTCLLoss(config.global_temperature, config.local_temperature, config.global_weight,
                                     config.local_weight)

    @classmethod
    def open_data(cls, config: ConSTCLConfig, data: str, seed: int,
                  data_meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        from selfsup.video import MEAN, STD, ClipViews, open_videos

        check_config(config)  # before any video is decoded
        views = ClipViews(config.size, config.boxes)
        clips = open_videos(data, config.frames, config.stride, config.size * 5 // 4, views)
        # what the network takes, recorded in every checkpoint and in the exported encoder's sidecar
        meta = {"clip_shape": [3, config.frames, config.size, config.size], "mean": list(MEAN), "std": list(STD)}
        return clips, data_meta or meta

    def collate(self, examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """[(view 1 (3, T, S, S), view 2, boxes (K, 4))] -> {"clips1", "clips2": (B, 3, T, S, S),
        "boxes": (B, K, 4)}."""
        clips1, clips2, boxes = zip(*examples)
        return {"clips1": torch.stack(clips1), "clips2": torch.stack(clips2), "boxes": torch.stack(boxes)}

    def regions(self, maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """maps (B, D, T', H', W'), boxes (B, K, 4) in pixels of the S x S clip -> h (B, K, D): RoIAlign of the
        time-averaged map, each box averaged to one vector."""
        B, K = boxes.shape[:2]
        pooled = maps.mean(dim=2)  # (B, D, H', W')
        h = roi_align(pooled, list(boxes.to(pooled.dtype)), output_size=1, sampling_ratio=-1, aligned=True,
                      spatial_scale=pooled.shape[-1] / self.config.size)  # (B*K, D, 1, 1)
        return h.view(B, K, -1)

    def reconstruct(self, queries: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """queries (B, K, C) of one clip, maps (B, D, T', H', W') of the other -> z (B, K, C), the predicted regions of
        the other clip."""
        context = self.context_projection(maps.flatten(2).transpose(1, 2))  # (B, T'H'W', C)
        return self.reconstructor(queries, context)

    def training_step(self, batch: dict[str, torch.Tensor],
                      indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        maps1 = self.backbone.feature_map(batch["clips1"])  # F (B, D, T', H', W')
        maps2 = self.backbone.feature_map(batch["clips2"])  # F'
        g1 = self.projection_head(maps1.mean(dim=(2, 3, 4)))  # (B, 128)
        g2 = self.projection_head(maps2.mean(dim=(2, 3, 4)))
        h1 = self.region_projection(self.regions(maps1, batch["boxes"]))  # (B, K, C)
        h2 = self.region_projection(self.regions(maps2, batch["boxes"]))
        z12, z21 = self.reconstruct(h1, maps2), self.reconstruct(h2, maps1)  # (B, K, C)
        return self.criterion(g1, g2, z12.flatten(0, 1), h2.flatten(0, 1), z21.flatten(0, 1), h1.flatten(0, 1))

    def eval_batch(self, clips: list[torch.Tensor]) -> torch.Tensor:
        """uint8 videos (N_i, H, W, 3) -> (B, 3, T, S, S): each one's middle clip of T frames at stride s (the last
        frame repeated when it is shorter), shorter side resized to S, centre-cropped, normalised."""
        from selfsup.video import centre_clip, eval_clip

        c = self.config
        return torch.stack([eval_clip(centre_clip(clip, c.frames, c.stride), c.size) for clip in clips])

    def monitor_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["clips1"]

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, S, S) -> (B, D) the backbone's map averaged over time and space."""
        return self.backbone(clips)

    def dense_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, S, S) -> (B, D, H', W') the backbone's last map averaged over time."""
        return self.backbone.feature_map(clips).mean(dim=2)

    def network_name(self) -> str:
        return f"{self.config.arch} width {self.config.width}"
