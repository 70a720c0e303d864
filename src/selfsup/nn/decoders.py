"""Decoders from encoder tokens back to pixels, for masked image modelling."""

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn


class MAEDecoder(nn.Module):
    """MAE's light decoder (He et al. 2022, sec. 3): the encoded visible tokens are embedded to `dim`,
    mask tokens fill the masked positions, fixed 2-D sin-cos positions are added to all patch tokens,
    `depth` transformer blocks, then a linear layer to each patch's `patch_pixels` values.

    forward(latent (B, prefix + n, D_enc), keep (B, n) the visible patches' positions) -> (B, N, patch_pixels).
    """

    def __init__(self, encoder_dim: int, grid: tuple[int, int], patch_pixels: int, dim: int = 512, depth: int = 8,
                 heads: int = 16, num_prefix_tokens: int = 1):
        super().__init__()
        self.num_patches, self.num_prefix_tokens = grid[0] * grid[1], num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("pos_embed", build_sincos2d_pos_embed(list(grid), dim), persistent=False)  # (N, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_pixels)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.embed(latent)  # (B, prefix + n, dim)
        prefix, visible = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        B, dim = x.shape[0], x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(B, self.num_patches, dim)  # (B, N, dim)
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, dim), visible)  # visible tokens back in place
        x = torch.cat([prefix, full + self.pos_embed.to(x.dtype)], dim=1)
        return self.pred(self.norm(self.blocks(x)))[:, self.num_prefix_tokens:]  # (B, N, patch_pixels)


class PatchPixelHead(nn.Module):
    """SiT's reconstruction head: every patch token through 2 fully connected layers with GELU, then a
    transposed convolution with kernel = stride = patch size back to that patch's pixels.

    forward(tokens (B, h·w, D)) -> images (B, channels, h·p, w·p)."""

    def __init__(self, dim: int, hidden_dim: int, patch: int, channels: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU())
        self.to_pixels = nn.ConvTranspose2d(hidden_dim, channels, kernel_size=patch, stride=patch)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.mlp(tokens)  # (B, N, hidden)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *self.grid)  # (B, hidden, h, w)
        return self.to_pixels(x)
