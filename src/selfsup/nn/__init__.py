"""Networks: backbones by name (timm, torchvision), projection heads, cross-device helpers."""

from selfsup.nn.backbones import create_backbone, feature_map, stage_features
from selfsup.nn.distributed import all_reduce_with_grad, gather, gather_with_grad, rank, world_size
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.nn.heads import ProjectionHead
from selfsup.nn.memory_bank import MemoryBank
from selfsup.nn.queue import KeyQueue

__all__ = ["KeyQueue", "MemoryBank", "ProjectionHead", "all_reduce_with_grad", "cosine_momentum", "create_backbone", "ema_update", "feature_map", "frozen_copy", "gather", "gather_with_grad", "rank", "stage_features", "world_size"]
