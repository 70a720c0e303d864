"""GMML, the group masked model learning corruption of SiT (Atito, Awais, Kittler, "SiT: Self-supervised
vIsion Transformer", 2021, sec. 3.1): rectangles of connected pixels are hidden under noise, zeros or
the same-location pixels of another image, and the network learns to restore them."""

import math
from dataclasses import dataclass

import torch

FILLS = ("noise", "zeros", "replace", "zeros+replace", "noise+replace")


@dataclass
class GMMLCorruption:
    """corrupt(images (B, C, H, W)) -> (corrupted (B, C, H, W), mask (B, 1, H, W), 1.0 where corrupted).

    Each image gets one fill from `fills`, drawn uniformly:
    - noise / zeros: rectangles filled with N(0, 1) noise or zeros (the data's mean, since views are
      normalised) until `ratio` of the image is covered (the paper: best 0.5-0.7);
    - replace: rectangles take the same-location pixels of another image of the batch, until
      `replace_ratio` is covered (the paper: up to 0.3);
    - zeros+replace, noise+replace: replace rectangles up to `replace_ratio` first, then noise or zero
      rectangles until `ratio` in total is covered (noise+replace was the paper's best).
    Rectangle sides are drawn uniformly between `side` fractions of the image side (paper 5%-25%) and at
    least `align` px; with align > 1 (e.g. the patch size) sides and corners snap to the align-px grid.
    Drawn from `generator` (a CPU torch.Generator) or torch's global generator: a seed fixes the masks.
    """

    ratio: float = 0.5
    replace_ratio: float = 0.3
    side: tuple[float, float] = (0.05, 0.25)
    align: int = 1
    fills: tuple[str, ...] = ("noise+replace",)

    def __post_init__(self):
        unknown = [f for f in self.fills if f not in FILLS]
        if unknown or not self.fills:
            raise ValueError(f"unknown GMML fill {unknown or '(none)'}; choose from {', '.join(FILLS)}")
        if not (0 < self.ratio < 1 and 0 <= self.replace_ratio <= self.ratio):
            raise ValueError(f"GMML needs 0 < ratio < 1 and replace_ratio <= ratio, got {self.ratio}, "
                             f"{self.replace_ratio}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = images.shape
        donors = _derangement(B, generator)  # image b takes replace pixels from image donors[b]
        noise = torch.randn(images.shape, generator=generator)
        choice = torch.randint(len(self.fills), (B,), generator=generator)
        replaced, noised, zeroed = (torch.zeros(B, 1, H, W, dtype=torch.bool) for _ in range(3))
        for b in range(B):
            fill = self.fills[int(choice[b])]
            if "replace" in fill and B > 1:  # a batch of one has no other image to take pixels from
                replaced[b, 0] = self.rectangles((H, W), self.replace_ratio, replaced[b, 0], generator)
            if fill != "replace":
                area = self.rectangles((H, W), self.ratio, replaced[b, 0], generator) & ~replaced[b, 0]
                (noised if fill.startswith("noise") else zeroed)[b, 0] = area
        replaced, noised, zeroed = (m.to(images.device) for m in (replaced, noised, zeroed))
        corrupted = torch.where(replaced, images[donors.to(images.device)], images)
        corrupted = torch.where(noised, noise.to(images.device, images.dtype), corrupted)
        corrupted = corrupted.masked_fill(zeroed, 0.0)
        return corrupted, (replaced | noised | zeroed).to(images.dtype)

    def rectangles(self, size: tuple[int, int], target: float, covered: torch.Tensor,
                   generator: torch.Generator | None) -> torch.Tensor:
        """Add rectangles to the boolean (H, W) `covered` until it covers `target` of the image."""
        H, W = size
        covered = covered.clone()
        a = self.align
        while covered.float().mean() < target:
            h, w = (self._side(n, generator) for n in (H, W))
            top = int(torch.randint((H - h) // a + 1, (1,), generator=generator)) * a
            left = int(torch.randint((W - w) // a + 1, (1,), generator=generator)) * a
            covered[top:top + h, left:left + w] = True
        return covered

    def _side(self, n: int, generator: torch.Generator | None) -> int:
        """A side between side[0]·n and side[1]·n px, at least `align`, a multiple of `align`."""
        a = self.align
        low = max(1, math.ceil(self.side[0] * n / a))
        high = max(low, math.floor(self.side[1] * n / a))
        return min(n, a * int(torch.randint(low, high + 1, (1,), generator=generator)))


def _derangement(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation without fixed points (a shuffled cycle): nobody replaces from itself."""
    order = torch.randperm(n, generator=generator)
    donors = torch.empty(n, dtype=torch.long)
    donors[order] = order.roll(1)
    return donors
