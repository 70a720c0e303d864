"""Masked image modelling on timm VisionTransformers: images <-> patches, and the encoder run on the
visible tokens only (MAE) or with the masked patch embeddings replaced by a mask token (SimMIM, SiT)."""

import torch
from torch import nn

from selfsup.errors import SelfsupError


def patch_size(vit: nn.Module) -> int:
    """The side p of the ViT's square patches; a clear error for backbones without patches."""
    embed = getattr(vit, "patch_embed", None)
    if embed is None or not hasattr(vit, "blocks") or not hasattr(vit, "_pos_embed"):
        raise SelfsupError(f"masked image modelling needs a timm VisionTransformer backbone, not "
                           f"{type(vit).__name__}; pass e.g. --backbone timm:vit_tiny_patch16_224 "
                           "--set backbone_kwargs='{img_size: 28, patch_size: 4}'")
    p = embed.patch_size
    p = p[0] if isinstance(p, tuple) else p
    return int(p)


def patch_grid(vit: nn.Module) -> tuple[int, tuple[int, int]]:
    """(patch side p, token grid (h, w)) of a timm ViT."""
    return patch_size(vit), tuple(vit.patch_embed.grid_size)


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p·p·C): patches in row-major order, each patch's pixels as (row, column, channel)."""
    B, C, H, W = images.shape
    if H % p or W % p:
        raise SelfsupError(f"images of {H}x{W} px do not split into {p}x{p} patches; pick an image size that "
                           f"is a multiple of {p}")
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: torch.Tensor, p: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, p·p·C) -> (B, C, h·p, w·p) with grid = (h, w); the exact inverse of `patchify`."""
    B, _, P = patches.shape
    h, w = grid
    C = P // (p * p)
    x = patches.reshape(B, h, w, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(B, C, h * p, w * p)


def encode_visible(vit: nn.Module, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """MAE's encoder: embed all patches, add their positions, keep the tokens `keep` (B, n) only,
    then the blocks. (B, C, H, W) -> (B, prefix + n, D); prefix = class/register tokens."""
    x = vit._pos_embed(vit.patch_embed(images))  # (B, prefix + N, D)
    prefix = vit.num_prefix_tokens
    visible = torch.gather(x[:, prefix:], 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, n, D)
    return _blocks(vit, torch.cat([x[:, :prefix], visible], dim=1))


def encode_with_mask_token(vit: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                           mask_token: torch.Tensor) -> torch.Tensor:
    """SimMIM's encoder: the embeddings of masked patches (mask (B, N), 1 = masked) are replaced by
    `mask_token` (D,) before positions are added. (B, C, H, W) -> patch tokens (B, N, D)."""
    tokens = vit.patch_embed(images)  # (B, N, D)
    w = mask.unsqueeze(-1).to(tokens.dtype)  # (B, N, 1)
    tokens = tokens * (1 - w) + mask_token.to(tokens.dtype) * w
    return _blocks(vit, vit._pos_embed(tokens))[:, vit.num_prefix_tokens:]


def _blocks(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's forward_features after the position embedding: (B, T, D) -> (B, T, D)."""
    return vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(x))))
