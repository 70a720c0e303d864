"""Networks: backbones by name (timm, torchvision), projection heads, cross-device helpers."""

from selfsup.nn.backbones import create_backbone
from selfsup.nn.distributed import gather_with_grad, rank, world_size
from selfsup.nn.heads import ProjectionHead

__all__ = ["ProjectionHead", "create_backbone", "gather_with_grad", "rank", "world_size"]
