"""UP-DETR: Dai, Cai, Lin, Chen, "UP-DETR: Unsupervised Pre-training for Object Detection with Transformers",
CVPR 2021. DETR (Carion et al., ECCV 2020) on a frozen self-supervised CNN learns to find random query patches."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align
from torchvision.transforms import v2

from selfsup.errors import SelfsupError
from selfsup.files import not_a_checkpoint
from selfsup.losses.updetr import DETRLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import RENAMED, make_config, method_class, register
from selfsup.nn import feature_map
from selfsup.nn.detr import DETR
from selfsup.views.eval import match_channels, normalization_for


@dataclass
class UPDETRConfig(ImageMethodConfig):
    """Paper defaults: AdamW lr 1e-4 at batch 64 (4e-4 for 256, scaled linearly), wd 1e-4; 10 query patches per
    image, 100 object queries (10 groups of 10) with the group attention mask, query-patch dropout 0.1; DETR's
    matching and loss weights (class 1, L1 5, GIoU 2, ∅ 0.1) and the reconstruction's 1. CPU-sized: the transformer
    (d 128, 2 + 2 layers, DETR: 256, 6 + 6) and query patches resized to 32 px (paper 128)."""

    optimizer: str = "adamw"
    lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.0
    backbone_checkpoint: str = ""  # a selfsup image checkpoint whose encoder() is the frozen backbone
    n_patches: int = 10  # M query patches per image
    queries_per_patch: int = 10  # object queries in each patch's group: 100 queries in all
    patch_size: int = 32  # px a query patch is resized to
    min_patch: int = 8  # px, a query patch's smallest side
    patch_dropout: float = 0.1  # query-patch dropout on the patch features
    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 512
    dropout: float = 0.1
    w_class: float = 1.0
    w_l1: float = 5.0
    w_giou: float = 2.0
    w_rec: float = 1.0
    eos_coef: float = 0.1


def group_mask(groups: torch.Tensor) -> torch.Tensor:
    """(Q,) the query patch each object query serves -> (Q, Q) bool, True where attention is blocked: query i may
    attend query j only when both serve the same query patch (UP-DETR's attention mask, sec. 3.2)."""
    return groups[:, None] != groups[None, :]


def load_encoder(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """(the encoder() of the selfsup image checkpoint at `path`, with its weights, the checkpoint's `selfsup` meta).
    SelfsupError for a missing or unreadable file, a non-image checkpoint, or an UP-DETR one (a DETR, not a CNN)."""
    what = f"backbone_checkpoint '{path}'"
    if not Path(path).is_file():
        raise SelfsupError(f"{what} does not exist; pass a selfsup image checkpoint (RUN/checkpoints/last.ckpt)")
    problem = not_a_checkpoint(path)
    if problem:
        raise SelfsupError(f"{what}: {problem}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated, corrupt
        raise SelfsupError(f"{what} cannot be read safely ({str(e).splitlines()[0][:120]})") from None
    meta = checkpoint.get("selfsup") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or "method" not in meta:
        raise SelfsupError(f"{what} is not a selfsup pretraining checkpoint; pass one written by `selfsup train`")
    if meta.get("modality", "image") != "image" or meta["method"] == UPDETR.name:
        raise SelfsupError(f"{what} holds a {meta['method']} model, not an image backbone; pass the checkpoint of an "
                           "image method (simclr, mocov2, swav, detcon-b ...)")
    data_meta = meta.get("data_meta") or {"in_chans": meta["in_chans"], "image_size": meta["image_size"]}
    options = {RENAMED.get(k, k): v for k, v in meta["method_config"].items()}
    source = method_class(meta["method"]).build(make_config(meta["method"], **options), data_meta)
    try:
        source.load_state_dict({k[len("method."):]: v for k, v in checkpoint["state_dict"].items()
                                if k.startswith("method.")})
    except RuntimeError as e:
        raise SelfsupError(f"{what} does not fit the {meta['method']} network ({str(e).splitlines()[0][:120]})") \
            from None
    return source.encoder(), meta


class QueryPatchViews:
    """uint8 image (C, H, W) -> [image (channels, S, S) float, query patches (M, channels, P, P) float, boxes (M, 4)
    normalised cxcywh]: the image resized and centre-cropped to S (no flip, no colour change, as the paper), then M
    random boxes with sides uniform in [min_patch, S] px, cropped and resized to P (roi_align, bilinear)."""

    batch = None  # per sample: the boxes ride along with each image

    def __init__(self, image_size: int, channels: int, n_patches: int, patch_size: int, min_patch: int):
        self.size, self.channels, self.M, self.P = image_size, channels, n_patches, patch_size
        self.min_patch = min(min_patch, image_size)
        mean, std = normalization_for(channels)
        self.transform = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.transform(match_channels(image, self.channels))  # (C, S, S)
        S, M = self.size, self.M
        wh = torch.randint(self.min_patch, S + 1, (M, 2)).float()  # (M, 2) px
        x0y0 = (torch.rand(M, 2) * (S - wh + 1)).floor()  # (M, 2) px, inside the image
        corners = torch.cat([x0y0, x0y0 + wh], 1)  # (M, 4) xyxy px
        patches = roi_align(x[None], [corners], self.P, aligned=True)  # (M, C, P, P)
        boxes = torch.cat([x0y0 + wh / 2, wh], 1) / S  # (M, 4) cxcywh in [0, 1]
        return [x, patches, boxes]


@register
class UPDETR(ImageMethod):
    """DETR learns to find M random query patches in their image. The frozen backbone encodes each patch, GAP gives
    p (B, M, D); a linear map and query-patch dropout add it to its group of `queries_per_patch` object queries
    (shuffled each step); the group attention mask keeps the groups apart; Hungarian matching over all queries.
    Heads: match / no match (2 logits), the box (DETR's MLP) and a linear map back to D for the reconstruction.
    `encoder()` is the DETR (backbone + transformer + box head), which detection fine-tuning (`eval detect
    --detector detr`) and export keep; `embed` and `dense_features` are the frozen backbone's."""

    name = "updetr"
    paper = "Dai et al., UP-DETR: Unsupervised Pre-training for Object Detection with Transformers, CVPR 2021"
    deviations = ("CPU-sized DETR: d 128, 2 encoder + 2 decoder layers, 4 heads, FFN 512 (paper: DETR's 256, 6 + 6, "
                  "8, 2048), torch.nn.Transformer with positions added once at the input (DETR: at every layer); "
                  "query patches resized to 32 px (paper 128); no gradient clipping (DETR: 0.1) and no auxiliary "
                  "decoding losses; warm-up + cosine instead of DETR's step decay; without backbone_checkpoint the "
                  "frozen backbone is random (the paper's is self-supervised)")
    config_class = UPDETRConfig
    run_defaults = {"data": "paste-scenes"}

    def __init__(self, config: UPDETRConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.backbone.requires_grad_(False)
        c = config
        self.detr = DETR(self.backbone, c.d_model, c.heads, c.encoder_layers, c.decoder_layers, c.ffn_dim, c.dropout,
                         c.n_patches * c.queries_per_patch)
        self.patch_proj = nn.Linear(self.backbone.num_features, c.d_model)  # p -> the queries' width
        self.patch_dropout = nn.Dropout(c.patch_dropout)
        self.class_head = nn.Linear(c.d_model, 2)  # match / no match (∅)
        self.feature_head = nn.Linear(c.d_model, self.backbone.num_features)  # f̂ for the reconstruction
        self.criterion = DETRLoss(1, c.w_class, c.w_l1, c.w_giou, c.w_rec, c.eos_coef)

    @classmethod
    def build(cls, config: UPDETRConfig, data_meta: dict[str, Any]) -> "UPDETR":
        """The backbone's architecture and in_chans come from `backbone_checkpoint` (its weights too when training
        starts; a saved UP-DETR checkpoint, whose data_meta names the source, holds them itself)."""
        data_meta, encoder = dict(data_meta), None
        if config.backbone_checkpoint and "backbone_from" not in data_meta:
            encoder, meta = load_encoder(config.backbone_checkpoint)
            source = meta["method_config"]
            config.backbone, config.small_stem = source["backbone"], source["small_stem"]
            config.backbone_kwargs = dict(source.get("backbone_kwargs") or {})
            data_meta["in_chans"] = (meta.get("data_meta") or meta)["in_chans"]
            data_meta["backbone_from"] = {"checkpoint": str(config.backbone_checkpoint), "method": meta["method"]}
        method = cls(config, in_chans=data_meta["in_chans"])
        if encoder is not None:
            try:
                method.backbone.load_state_dict(encoder.state_dict())
            except RuntimeError as e:
                raise SelfsupError(f"backbone_checkpoint '{config.backbone_checkpoint}': its encoder is not the "
                                   f"backbone it names ({str(e).splitlines()[0][:100]})") from None
        method.data_meta = data_meta
        return method

    def prepare(self, num_samples: int, steps_per_epoch: int) -> str | None:
        if not self.config.backbone_checkpoint:
            return ("updetr: no backbone_checkpoint, so the frozen backbone is random; the paper starts from a "
                    "self-supervised one: pass --set backbone_checkpoint=RUN/checkpoints/last.ckpt")
        return None

    def train(self, mode: bool = True) -> "UPDETR":
        """The frozen backbone stays in eval mode: its BN statistics are the checkpoint's."""
        super().train(mode)
        self.backbone.eval()
        return self

    def default_views(self, image_size: int, channels: int) -> QueryPatchViews:
        c = self.config
        return QueryPatchViews(image_size, self.in_chans, c.n_patches, c.patch_size, c.min_patch)

    def encoder(self) -> nn.Module:
        return self.detr

    def finetune_encoder(self) -> nn.Module:
        return self.backbone

    def network_name(self) -> str:
        return f"DETR on {self.config.backbone}"

    @torch.no_grad()
    def patch_features(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, M, C, P, P) query patches -> p (B, M, D): the frozen backbone's globally pooled features."""
        B, M = patches.shape[:2]
        return self.backbone(patches.flatten(0, 1)).reshape(B, M, -1)

    def query_groups(self) -> torch.Tensor:
        """(Q,) int64, the query patch each object query serves: object query i serves patch i // queries_per_patch,
        the object queries shuffled in training (UP-DETR's object query shuffle: no object query is tied to a
        group, since fine-tuning has none)."""
        c = self.config
        groups = torch.arange(c.n_patches * c.queries_per_patch, device=self.class_head.weight.device)
        groups = groups // c.queries_per_patch
        return groups[torch.randperm(len(groups), device=groups.device)] if self.training else groups

    def forward_queries(self, x: torch.Tensor, p: torch.Tensor, groups: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, ...]:
        """Images (B, C, S, S), patch features (B, M, D), groups (Q,) (default `query_groups()`) -> (logits (B, Q, 2),
        boxes (B, Q, 4) cxcywh, f̂ (B, Q, D)): object query i gets patch groups[i]'s projected feature."""
        groups = self.query_groups() if groups is None else groups
        q = self.patch_dropout(self.patch_proj(p))[:, groups]  # (B, Q, d)
        hidden, boxes = self.detr(x, q, group_mask(groups))
        return self.class_head(hidden), boxes, self.feature_head(hidden)

    def training_step(self, batch: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x, patches, target_boxes = batch  # (B, C, S, S), (B, M, C, P, P), (B, M, 4)
        self.backbone.eval()  # frozen, BN included, whatever mode a caller set on the modules that hold it
        p = self.patch_features(patches)  # (B, M, D), the targets of the reconstruction
        logits, boxes, f = self.forward_queries(x, p)
        labels = torch.zeros(target_boxes.shape[:2], dtype=torch.int64, device=x.device)  # class 0: "the patch"
        return self.criterion(logits, boxes, list(target_boxes), list(labels), f, list(p))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) the frozen backbone's pooled features."""
        return self.backbone(images)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, h, w) the frozen backbone's last map."""
        return feature_map(self.backbone, images)
