"""SparK's densifying and its light hierarchical decoder (Tian et al., ICLR 2023, sec. 3.3 and fig. 3)."""

import torch
from torch import nn

from selfsup.nn.sparse import SparseMask, masked_batch_norm


class UpBlock(nn.Module):
    """x2 up-sampling (a 2 x 2 stride-2 transposed conv) then a 3 x 3 conv + BN + ReLU; the output is cut to the
    finer level's side (a side of 7 is 8 cut by one, as nn.sparse nests the masks)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # (B, C, h, w) -> (B, C', *size)
        return self.conv(self.up(x)[..., : size[0], : size[1]])


class SparKDecoder(nn.Module):
    """Densify every encoder scale, then a light UNet back to pixels.

    Densify (SparK eq. 3-4): a stage's sparse map S_i is normalised with statistics over visible positions, its
    empty (masked) cells are filled with a learned per-scale mask token [M_i], and it is projected to the decoder's
    width at that scale (1 x 1 at the deepest scale, 3 x 3 elsewhere). Decoder: from the deepest level n (stride
    2^n) up to the input, each step an `UpBlock` halving the width, the densified map of that scale added where the
    encoder has one; a 1 x 1 conv gives the pixels.

    stage_channels: C_i of each stage; stage_levels: log2 of each stage's stride (e.g. [2, 3, 4, 5] for a ResNet,
    [0, 1, 2, 3] with the CIFAR stem); width: the decoder's width at the deepest level (halved at each step up).
    forward(features [(B, C_i, h_i, w_i)], masks, sizes [(H_k, W_k) for k = 0..n], the side at each level) ->
    (B, out_channels, H_0, W_0).
    """

    def __init__(self, stage_channels: list[int], stage_levels: list[int], out_channels: int, width: int):
        super().__init__()
        self.levels, n = list(stage_levels), max(stage_levels)
        widths = [width // 2 ** (n - k) for k in range(n + 1)]  # (w_0, ..., w_n): halved at every step up
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in stage_channels)
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in stage_channels)  # [M_i]
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)
        self.projs = nn.ModuleList(nn.Conv2d(c, widths[k], 1 if k == n else 3, padding=0 if k == n else 1)
                                   for c, k in zip(stage_channels, stage_levels))
        self.ups = nn.ModuleList(UpBlock(widths[k], widths[k - 1]) for k in range(n, 0, -1))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def densify(self, i: int, features: torch.Tensor, masks: SparseMask) -> torch.Tensor:
        """Stage i's sparse map (B, C_i, h, w) -> dense (B, width at its level, h, w)."""
        visible = masks.at(features.shape[-2:])  # (B, 1, h, w)
        normed = masked_batch_norm(self.norms[i], features, visible)
        filled = torch.where(visible > 0, normed, self.mask_tokens[i].to(normed.dtype))  # [M_i] in empty cells
        return self.projs[i](filled)

    def forward(self, features: list[torch.Tensor], masks: SparseMask, sizes: list[tuple[int, int]]) -> torch.Tensor:
        skips: dict[int, torch.Tensor] = {}
        for i, (f, k) in enumerate(zip(features, self.levels)):
            skips[k] = skips[k] + self.densify(i, f, masks) if k in skips else self.densify(i, f, masks)
        n = max(self.levels)
        x = skips[n]  # (B, w_n, h, w)
        for step, up in enumerate(self.ups):
            k = n - step - 1  # the level this step arrives at
            x = up(x, sizes[k])
            if k in skips:
                x = x + skips[k]
        return self.head(x)  # (B, out_channels, H_0, W_0)
