"""Which patches a masked-image model hides: MAE's uniform random masking and SimMIM's coarse-grid
masking. Both draw from an explicit CPU generator (or torch's global one), so a seed gives the same
masks on any machine and device."""

import math

import torch


def random_masking(batch: int, num_patches: int, ratio: float = 0.75,
                   generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE (He et al. 2022, sec. 3): per image, hide round(ratio·N) patches drawn uniformly without
    replacement. Returns keep (B, N − hidden), the visible patches' positions in increasing order,
    and mask (B, N), 1.0 where hidden."""
    hidden = round(ratio * num_patches)
    if not 0 <= hidden < num_patches:
        raise ValueError(f"mask ratio {ratio} hides {hidden} of {num_patches} patches; it must leave at least one")
    noise = torch.rand(batch, num_patches, generator=generator)  # on the CPU: the same masks on any device
    keep = noise.argsort(dim=1)[:, : num_patches - hidden].sort(dim=1).values.to(device)  # (B, n)
    mask = torch.ones(batch, num_patches, device=device).scatter(1, keep, 0.0)
    return keep, mask


def grid_masking(batch: int, grid: tuple[int, int], unit: int, ratio: float = 0.6,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """SimMIM (Xie et al. 2022, sec. 3.1): the patch grid (h, w) is tiled by squares of `unit` x `unit`
    patches (32 px squares over 16 px patches in the paper: unit 2); ceil(ratio · squares) squares are
    hidden per image. Squares that overhang the grid's edge are cut. Returns mask (B, h·w), 1.0 where hidden."""
    h, w = grid
    rows, cols = math.ceil(h / unit), math.ceil(w / unit)
    hidden = math.ceil(ratio * rows * cols)
    noise = torch.rand(batch, rows * cols, generator=generator)
    squares = torch.zeros(batch, rows * cols).scatter(1, noise.argsort(dim=1)[:, :hidden], 1.0)
    squares = squares.view(batch, rows, cols).repeat_interleave(unit, 1).repeat_interleave(unit, 2)
    return squares[:, :h, :w].reshape(batch, h * w).to(device)
