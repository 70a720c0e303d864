"""SaDL-CD's views (Chen et al., IEEE TGRS 2022): two augmented views of one tile with its foreground map, and N
points per class (background, foreground) sampled at source pixels that both views show, so that point k of class c
is the same pixel of the tile in both views (class-balanced sampling on the overlap)."""

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.views.bands import photometric
from selfsup.views.byol import JITTER
from selfsup.views.eval import normalization_for

BACKGROUND, FOREGROUND, IGNORE = 0, 1, 255  # the classes of a foreground map
DRAWS = 10  # view pairs drawn, at most, until the overlap holds each class the tile holds


class SaDLCDViews:
    """(uint8 tile (C, H, W), foreground map uint8 (H, W): 0 background, 1 foreground, 255 ignore) ->
    [view 1, view 2 (C, S, S) float, points 1, points 2 (2N, 2) int64, valid (2,) bool, foreground 1 (S, S) bool].

    Each view: random resized crop (scale `min_scale`..1, aspect 3/4..4/3) to S, horizontal and vertical flips (p 0.5
    each), then colour by the rule of views.bands.photometric (RGB: BYOL's jitter with p `jitter_p` and grayscale
    p 0.2; one channel: brightness/contrast; other band counts: band-wise brightness/contrast, no band mixed),
    normalised with the run's statistics. The geometry moves an index map n = y·W + x of the tile's pixels with the
    image (nearest neighbour): index_v[i, j] is the source pixel of view v's pixel (i, j).

    Points: the source pixels both views show and their classes (ignore left out); N of each class drawn uniformly
    (without replacement, with replacement when fewer than N exist, as DetCon samples masks). Rows 0..N-1 are
    background, N..2N-1 foreground; points_v[k] = (row, col) in view v of the first view pixel (row-major) showing
    that source pixel. valid[c] is False when the overlap holds no pixel of class c (its points are then (0, 0)):
    a pair is drawn again, up to DRAWS times, while a class the tile holds is missing from the overlap.
    foreground 1 marks view 1's foreground pixels (the background swap pastes them).
    """

    batch = None  # the index maps ride along per sample: no batched on-device recipe

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.2, n_points: int = 16,
                 jitter_p: float = 0.8, interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR):
        self.size, self.n_points = image_size, n_points
        self.geometry = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
        ])
        before, after, _ = photometric(channels, JITTER, jitter_p)
        mean, std = normalization_for(channels)
        self.colour = v2.Compose([*before, v2.ToDtype(torch.float32, scale=True), *after, v2.Normalize(mean, std)])

    def __call__(self, sample: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        return list(self.draw(*sample)[:6])

    def draw(self, image: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 (C, H, W), classes (H, W) -> (view 1, view 2, points 1, points 2, valid, foreground 1, sources (2, N)
        int64: the source pixel n = y·W + x of each point, -1 for an invalid class's)."""
        H, W = image.shape[-2:]
        labels = classes.flatten().long()  # (H·W,)
        held = torch.tensor([bool((labels == c).any()) for c in (BACKGROUND, FOREGROUND)])  # (2,)
        source = tv_tensors.Mask(torch.arange(H * W).view(H, W))  # (H, W) n = y·W + x
        for _ in range(DRAWS):
            pairs = [self.geometry(tv_tensors.Image(image), source) for _ in range(2)]
            index1, index2 = (n.as_subclass(torch.Tensor) for _, n in pairs)  # (S, S) int64 each
            sources, valid = self.sample_points(index1, index2, labels)
            if bool((valid | ~held).all()):
                break
        points1, points2 = self.positions(index1, sources), self.positions(index2, sources)  # (2N, 2) each
        foreground1 = labels[index1] == FOREGROUND  # (S, S)
        x1, x2 = (self.colour(view).as_subclass(torch.Tensor) for view, _ in pairs)
        return x1, x2, points1, points2, valid, foreground1, sources

    def sample_points(self, index1: torch.Tensor, index2: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Index maps (S, S) x 2, labels (H·W,) -> (sources (2, N) int64, -1 for a class without points; valid (2,)
        bool): N source pixels of each class among those both views show."""
        seen1, seen2 = (torch.zeros_like(labels, dtype=torch.bool) for _ in range(2))
        seen1[index1.flatten()], seen2[index2.flatten()] = True, True
        shared = seen1 & seen2  # (H·W,): pixels of the overlap
        N = self.n_points
        sources = torch.full((2, N), -1, dtype=torch.int64)
        for c in (BACKGROUND, FOREGROUND):
            candidates = torch.nonzero(shared & (labels == c)).flatten()  # (M,)
            if len(candidates) >= N:
                sources[c] = candidates[torch.randperm(len(candidates))[:N]]
            elif len(candidates) > 0:
                sources[c] = candidates[torch.randint(len(candidates), (N,))]
        return sources, (sources >= 0).all(dim=1)

    def positions(self, index: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Index map (S, S), sources (2, N) -> (2N, 2) (row, col) of the first view pixel (row-major) showing each
        source pixel; (0, 0) for -1."""
        S = index.shape[-1]
        first = torch.full((int(index.max()) + 1,), S * S, dtype=torch.int64)  # source n -> its first view pixel
        first.scatter_reduce_(0, index.flatten(), torch.arange(S * S), reduce="amin")
        wanted = sources.flatten()  # (2N,)
        flat = torch.where(wanted >= 0, first[wanted.clamp_min(0).clamp_max(len(first) - 1)], 0)  # (2N,)
        return torch.stack([flat // S, flat % S], dim=1)  # (2N, 2)
