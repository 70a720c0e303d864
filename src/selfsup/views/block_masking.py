"""BEiT's block-wise masking (Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, Algorithm 1),
with the hidden count made exact as CAE needs it (Chen et al. 2023, sec. 4.1: 98 of 196 patches)."""

import math
import random

import torch


def block_masking(batch: int, grid: tuple[int, int], ratio: float = 0.5, min_block: int = 16,
                  min_aspect: float = 0.3, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Per image, hide m = round(ratio · h·w) patches of the grid (h, w) in rectangular blocks (BEiT, Alg. 1):
    repeat — a block of s ~ U(min_block, m − |M|) patches and aspect ratio r, log r ~ U(log min_aspect,
    −log min_aspect), a = round(√(s·r)) rows by b = round(√(s / r)) columns at a uniform place; it is kept if it
    hides between 1 and m − |M| new patches (10 tries per block) — until no block fits. Images left short of m
    (the last gap is smaller than a block) get their remaining hidden patches at random, so every image hides
    exactly m, as CAE's batched encoder needs. The draws come from one seed taken from `generator` (torch's
    global generator when None), so a seed gives the same masks on any machine and device.

    Returns mask (B, h·w) float, 1.0 where hidden, patches in row-major order. ValueError when m leaves no
    patch visible or hides none, or min_aspect is not in (0, 1]."""
    h, w = grid
    n = h * w
    hidden = round(ratio * n)
    if not 0 < hidden < n:
        raise ValueError(f"mask ratio {ratio} hides {hidden} of {n} patches; it must hide at least one and "
                         "leave at least one")
    if not 0 < min_aspect <= 1:
        raise ValueError(f"min_aspect {min_aspect} must be in (0, 1] (BEiT: 0.3)")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # on the CPU: the same masks on any device
    rng = random.Random(seed)
    masks = [_one_mask(rng, h, w, hidden, max(1, min_block), math.log(min_aspect)) for _ in range(batch)]
    return torch.tensor(masks, dtype=torch.float32, device=device).reshape(batch, n)


def _one_mask(rng: random.Random, h: int, w: int, hidden: int, min_block: int, log_aspect: float) -> list[list[int]]:
    """One (h, w) 0/1 grid with exactly `hidden` ones: blocks while they fit, then single patches at random."""
    mask = [[0] * w for _ in range(h)]
    count = 0
    while count < hidden:
        added = _add_block(rng, mask, hidden - count, min_block, log_aspect)
        if added == 0:
            break
        count += added
    free = [(i, j) for i in range(h) for j in range(w) if not mask[i][j]]
    for i, j in rng.sample(free, hidden - count):
        mask[i][j] = 1
    return mask


def _add_block(rng: random.Random, mask: list[list[int]], budget: int, min_block: int, log_aspect: float) -> int:
    """Hide one block of at most `budget` new patches in `mask` (in place); the number it hid, 0 after 10 misses."""
    h, w = len(mask), len(mask[0])
    for _ in range(10):
        s = rng.uniform(min_block, max(min_block, budget))  # the block's area, in patches
        r = math.exp(rng.uniform(log_aspect, -log_aspect))  # its aspect ratio rows / columns
        a, b = max(1, round(math.sqrt(s * r))), max(1, round(math.sqrt(s / r)))  # rows, columns
        if a >= h or b >= w:  # BEiT: a block never spans the whole grid side
            continue
        top, left = rng.randint(0, h - a), rng.randint(0, w - b)
        new = sum(1 - mask[i][j] for i in range(top, top + a) for j in range(left, left + b))
        if 0 < new <= budget:
            for i in range(top, top + a):
                for j in range(left, left + b):
                    mask[i][j] = 1
            return new
    return 0
