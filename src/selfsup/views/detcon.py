"""DetCon's views (Hénaff et al. 2021, sec. 3.2): BYOL's two augmentations applied to the image and, with the same
geometric parameters, to its segment map; then `n_masks` segment ids present in both views are sampled. R2O's add
the whole image with its superpixels."""

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from selfsup.views.byol import BYOLViews
from selfsup.views.eval import normalization_for

WHOLE_VIEW = -1  # a mask id that stands for every pixel of the view


class DetConViews(BYOLViews):
    """(uint8 image (C, H, W), segment ids (H, W)) -> [view 1, view 2 (C, S, S) float, segments 1, segments 2
    (S, S) int64, ids (n_masks,) int64]: torchvision's v2 transforms move the segment map with the image (nearest
    resampling) and leave it out of colour, blur and solarisation, so each pixel keeps its segment.

    ids are sampled uniformly among the segments present in both views, with replacement when fewer than
    `n_masks` are (as DetCon does); the loss treats repeated ids as the same mask.
    """

    batch = None  # the segment maps ride along per sample, in the loader's workers: no batched on-device recipe

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08, n_masks: int = 16):
        super().__init__(image_size, channels, min_scale)
        self.n_masks = n_masks

    def __call__(self, sample: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        image, segments = sample
        views, maps = [], []
        for transform in self.transforms:
            view, seg = transform(tv_tensors.Image(image), tv_tensors.Mask(segments.long()))
            views.append(view.as_subclass(torch.Tensor))
            maps.append(seg.as_subclass(torch.Tensor))
        return [*views, *maps, self.sample_ids(*maps)]

    def sample_ids(self, seg1: torch.Tensor, seg2: torch.Tensor) -> torch.Tensor:
        """(S, S) x 2 -> (n_masks,) ids present in both maps. Two crops that share no segment (disjoint crops) get
        WHOLE_VIEW (-1) for every id: each view is then one mask, as in image-level BYOL."""
        ids1 = seg1.unique()
        shared = ids1[torch.isin(ids1, seg2.unique())]
        if len(shared) == 0:
            return torch.full((self.n_masks,), WHOLE_VIEW, dtype=torch.int64)
        if len(shared) < self.n_masks:
            return shared[torch.randint(len(shared), (self.n_masks,))]
        return shared[torch.randperm(len(shared))[: self.n_masks]]


class R2OViews(DetConViews):
    """R2O's views (Gokul et al. 2022): DetCon's two views with their superpixel maps, plus the whole image resized
    to S (the target network clusters its superpixels there): uint8 (C, H, W) + superpixels (H, W) -> [view 1,
    view 2, whole (C, S, S) float, superpixels 1, 2, whole (S, S) int64]."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.08):
        super().__init__(image_size, channels, min_scale)
        mean, std = normalization_for(channels)
        self.whole = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
                                 v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __call__(self, sample: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        image, segments = sample
        pairs = [t(tv_tensors.Image(image), tv_tensors.Mask(segments.long())) for t in (*self.transforms, self.whole)]
        return [view.as_subclass(torch.Tensor) for view, _ in pairs] + [s.as_subclass(torch.Tensor) for _, s in pairs]
