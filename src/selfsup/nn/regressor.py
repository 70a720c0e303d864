"""CAE's latent contextual regressor and decoder (Chen et al., "Context Autoencoder for Self-Supervised
Representation Learning", IJCV 2023, sec. 3): cross-attention from mask queries to the visible patches' latents,
then self-attention over the predicted latents of the masked patches alone."""

import torch
from timm.layers import LayerScale, Mlp, build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D) or (N, D) shared by the batch, index (B, k) -> (B, k, D): the rows `index` of each sample."""
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(index.shape[0], -1, -1)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class CrossAttentionBlock(nn.Module):
    """A pre-norm transformer block whose queries attend to a separate sequence (torch's multi-head attention):
    x ← x + γ₁·Attn(q = LN(x) + pos_x, k = LN(c) + pos_c, v = LN(c)); x ← x + γ₂·MLP(LN(x)), γ the layer scale
    (CaiT's per-channel factors, initialised to `init_values`; None: no layer scale). Positions enter the attention
    weights only, as in CAE (sec. 3.2); the context `c` is read, never changed.

    forward(x (B, m, D), context (B, T, D), pos_x (B, m, D), pos_context (B, T, D)) -> (B, m, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None):
        super().__init__()
        self.norm_x, self.norm_context, self.norm_mlp = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.attn = nn.MultiheadAttention(dim, heads, bias=qkv_bias, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls_attn, self.ls_mlp = (LayerScale(dim, init_values) if init_values else nn.Identity() for _ in range(2))

    def forward(self, x: torch.Tensor, context: torch.Tensor, pos_x: torch.Tensor,
                pos_context: torch.Tensor) -> torch.Tensor:
        c = self.norm_context(context)  # (B, T, D)
        attended, _ = self.attn(self.norm_x(x) + pos_x, c + pos_context, c, need_weights=False)  # (B, m, D)
        x = x + self.ls_attn(attended)
        return x + self.ls_mlp(self.mlp(self.norm_mlp(x)))


class LatentRegressor(nn.Module):
    """CAE's latent contextual regressor H (sec. 3.2): Z_m = H(Z_v, P_v, P_m). The queries start as one learned
    mask token for every masked patch; each of `depth` cross-attention blocks updates them, with keys and values
    the concatenation [Z_v, queries] of the visible latents and the previous block's output (the mask tokens for
    the first block). Z_v is the same in every block: the regressor does not update the visible latents. Fixed
    2-D sin-cos positions P of the grid are added to queries and keys (prefix tokens such as a class token get
    none); a final LayerNorm. `init_values`: the blocks' layer scale (None: none).

    forward(z_visible (B, prefix + n, D) the encoder's output, keep (B, n) the visible patches' grid positions,
    masked (B, m) the masked patches' positions) -> predicted latents Z_m (B, m, D), in the order of `masked`."""

    def __init__(self, dim: int, grid: tuple[int, int], depth: int = 4, heads: int = 12, num_prefix_tokens: int = 1,
                 init_values: float | None = None):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("pos_embed", build_sincos2d_pos_embed(list(grid), dim), persistent=False)  # (N, D)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, init_values=init_values)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, z_visible: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        B, _, D = z_visible.shape
        pos = self.pos_embed.to(z_visible.dtype)
        pos_m = gather_tokens(pos, masked)  # (B, m, D): P_m
        prefix = z_visible.new_zeros(B, self.num_prefix_tokens, D)  # (B, prefix, D)
        pos_v = torch.cat([prefix, gather_tokens(pos, keep)], dim=1)  # (B, prefix + n, D): P_v
        queries = self.mask_token.to(z_visible.dtype).expand(B, masked.shape[1], D)  # (B, m, D): Q_m
        for block in self.blocks:
            context = torch.cat([z_visible, queries], dim=1)  # (B, prefix + n + m, D): [Z_v, Q_m]
            queries = block(queries, context, pos_m, torch.cat([pos_v, pos_m], dim=1))
        return self.norm(queries)


class MaskedPatchDecoder(nn.Module):
    """CAE's decoder G (sec. 3.3): sees only the predicted latents of the masked patches plus their fixed 2-D
    sin-cos positions, never the visible patches; `depth` self-attention blocks (timm), LayerNorm, and a linear
    layer to each patch's `out_dim` targets. `init_values`: the blocks' layer scale (None: none).

    forward(z_masked (B, m, D), masked (B, m) their grid positions) -> (B, m, out_dim)."""

    def __init__(self, dim: int, grid: tuple[int, int], out_dim: int, depth: int = 4, heads: int = 12,
                 init_values: float | None = None):
        super().__init__()
        self.register_buffer("pos_embed", build_sincos2d_pos_embed(list(grid), dim), persistent=False)  # (N, D)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, init_values=init_values)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, z_masked: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        x = z_masked + gather_tokens(self.pos_embed.to(z_masked.dtype), masked)  # (B, m, D)
        return self.head(self.norm(self.blocks(x)))  # (B, m, out_dim)
