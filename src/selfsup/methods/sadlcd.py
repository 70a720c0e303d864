"""SaDL-CD: Chen, Li, Chen, Shi, "Semantic-Aware Dense Representation Learning for Remote Sensing Image Change
Detection", IEEE TGRS 2022.

Pretraining on single-date tiles with a semantic mask (foreground class vs background), no change labels:
    f = FPN(ResNet(x)), the stride-4 map (B, D, S/4, S/4), read at N points per class sampled on the overlap of two
        views (the same source pixels in both, views/sadlcd.py)                         -> h (B, 2, N, D)
    z = g(h) (projector), p = q(z) (predictor), SimSiam-style: aligned points pulled together under stop-gradient,
    foreground and background features pushed apart, and a background-swapped view (view 1's foreground blended on
    the background of another image of the batch) whose foreground points regress view 1's (losses/sadlcd.py).
Downstream (`selfsup eval change`, `eval segment`): the FPN map is the method's dense features.
"""

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision.ops import FeaturePyramidNetwork
from torchvision.transforms.v2.functional import gaussian_blur

from selfsup.data.dense import DenseSet, open_dense
from selfsup.data.folder import FolderImageSet, SkipBadImages
from selfsup.errors import SelfsupError
from selfsup.losses.sadlcd import SaDLCDLoss
from selfsup.methods.base import ImageMethod, ImageMethodConfig
from selfsup.methods.registry import register
from selfsup.nn import ProjectionHead, stage_features
from selfsup.views.sadlcd import BACKGROUND, FOREGROUND, IGNORE, SaDLCDViews

log = logging.getLogger(__name__)
FOREGROUND_SAMPLE = 64  # training masks checked for foreground when a run opens its data
NEEDS_MASKS = ("sadlcd needs a semantic mask (foreground vs background) with every training image, and {data} has "
               "none{why}: pass --data paste-scenes, --data trees, or a folder laid out as DIR/images/<stem>.png + "
               "DIR/masks/<stem>.png (pixel = class id, 0 background)")


@dataclass
class SaDLCDConfig(ImageMethodConfig):
    """The authors' code: SGD, momentum 0.9, wd 5e-4, lr 0.01 at batch 64 (0.04 per 256, scaled linearly), 16 points
    per class, push weight 1 and swap weight ½, projector 2048 -> 1024 and predictor 256 -> 1024 (Linear-BN-ReLU-
    Linear), ResNet-18 + FPN read at stride 4. Chosen here: FPN width 128, crops of scale 0.2-1, blend σ 2 px."""

    optimizer: str = "sgd"
    lr: float = 0.04
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.0
    n_points: int = 16  # N points per class (background, foreground) per image
    push_weight: float = 1.0  # λ_push
    swap_weight: float = 0.5  # λ_swap
    fpn_channels: int = 128  # D of the FPN map
    proj_hidden_dim: int = 2048
    proj_dim: int = 1024
    pred_hidden_dim: int = 256
    crop_min_scale: float = 0.2
    blend_sigma: float = 2.0  # px: Gaussian feather of the pasted foreground's edge; 0 pastes it hard


@register
class SaDLCD(ImageMethod):
    """ResNet + torchvision's FPN (P2 only); point features h of the stride-4 map (bilinear at each point's pixel
    centre), projector g and predictor q on every point; loss of losses/sadlcd.py. Batches from `default_views`:
    [x1, x2 (B, C, S, S), points 1, points 2 (B, 2N, 2) (row, col), valid (B, 2) bool, foreground 1 (B, S, S) bool].
    `embed` pools the backbone (B, D_backbone); `encoder()` (export) is the backbone; `dense_features` the FPN map."""

    name = "sadlcd"
    paper = ("Chen et al., Semantic-Aware Dense Representation Learning for Remote Sensing Image Change Detection "
             "(SaDL-CD), IEEE TGRS 2022")
    deviations = ("random init (the authors start from ImageNet weights); the push term is 1 + cos over all "
                  "(foreground, background) point pairs of an image and view (the authors' code pairs the k-th of "
                  "each); points are read bilinearly at their pixel centre (the authors: the cell the pixel falls "
                  "in); the swapped view pairs image i with image i-1 of the batch (the authors: the batch "
                  "reversed) and feathers the pasted edge with a Gaussian (σ 2 px), no colour matching; any object "
                  "class counts as foreground; torchvision's FPN, 128 wide, read at P2 after its 3x3 output conv "
                  "and without dropout (the authors' code: the top-down sum, dropout 0.2); crops of scale 0.2-1 "
                  "with flips and BYOL's colour, cosine decay instead of poly (not in METHODS.md or the code's "
                  "defaults)")
    config_class = SaDLCDConfig

    def __init__(self, config: SaDLCDConfig, in_chans: int = 3):
        for option in ("n_points", "fpn_channels"):
            if getattr(config, option) < 1:
                raise SelfsupError(f"sadlcd needs {option} >= 1, got {getattr(config, option)}; pass e.g. "
                                   f"--set {option}={getattr(SaDLCDConfig, option)}")
        super().__init__(config, in_chans)
        with torch.no_grad():
            was_training = self.backbone.training
            stages = stage_features(self.backbone.eval(), torch.zeros(1, in_chans, 64, 64))
            self.backbone.train(was_training)
        D = config.fpn_channels
        self.fpn = FeaturePyramidNetwork([s.shape[1] for s in stages], D)
        for k in range(1, len(stages)):  # only P2 is read: P3-P5's 3x3 output convs would get no gradient (and DDP
            self.fpn.layer_blocks[k] = torch.nn.Identity()  # refuses parameters without one)
        self.projector = ProjectionHead(D, config.proj_hidden_dim, config.proj_dim)  # g
        self.predictor = ProjectionHead(config.proj_dim, config.pred_hidden_dim, config.proj_dim)  # q
        self.criterion = SaDLCDLoss(config.push_weight, config.swap_weight)

    def default_views(self, image_size: int, channels: int) -> SaDLCDViews:
        return SaDLCDViews(image_size, channels, self.config.crop_min_scale, self.config.n_points)

    def training_images(self, images: Dataset) -> "ForegroundMaps":
        """Each training image with its foreground map, from the dense data set behind `images`."""
        return ForegroundMaps(*dense_source(images))

    def dense_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, S/4, S/4): the FPN's finest output P2 (lateral 1x1 convs of all four stages summed
        top-down, then its 3x3 conv)."""
        stages = stage_features(self.backbone, x)  # res2 ... res5
        return self.fpn(OrderedDict((str(k), s) for k, s in enumerate(stages)))["0"]

    def training_step(self, batch: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x1, x2, points1, points2, valid, foreground1 = batch
        B, N = len(x1), self.config.n_points
        h1 = point_features(self.dense_map(x1), points1, x1.shape[-1])  # (B, 2N, D)
        h2 = point_features(self.dense_map(x2), points2, x2.shape[-1])
        z1, z2 = self.project(h1), self.project(h2)  # (B, 2N, E)
        p1, p2 = self.project(z1, self.predictor), self.project(z2, self.predictor)
        xs = swap_background(x1, foreground1, self.config.blend_sigma)  # (B, C, S, S)
        hs = point_features(self.dense_map(xs), points1[:, N:], xs.shape[-1])  # (B, N, D): view 1's foreground points
        ps = self.project(self.project(hs), self.predictor)  # (B, N, E)
        by_class = [t.view(B, 2, N, -1) for t in (p1, p2, z1, z2, h1, h2)]  # (B, 2, N, ·): background, foreground
        loss, pull, push, swap = self.criterion(*by_class, ps, valid)
        return {"loss": loss, "pull_loss": pull.detach(), "push_loss": push.detach(), "swap_loss": swap.detach(),
                "valid_foreground": valid[:, FOREGROUND].float().mean()}

    def project(self, h: torch.Tensor, head: torch.nn.Module | None = None) -> torch.Tensor:
        """(B, P, D) -> (B, P, E): `head` (the projector by default) on every point, BN over the B·P points."""
        head = self.projector if head is None else head
        return head(h.flatten(0, 1)).view(*h.shape[:2], -1)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D, S/4, S/4): the pretrained FPN map, which `eval change` and `eval segment` read."""
        return self.dense_map(images)

    def view_masks(self, batch: list[torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """View 1 and its background-swapped view with view 1's foreground (1) and background (0)."""
        x1, _, _, _, _, foreground1 = batch
        ids = foreground1.long()  # (B, S, S)
        return [("view 1", x1, ids), ("background swap", swap_background(x1, foreground1, self.config.blend_sigma),
                                      ids)]


def point_features(f: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """Map f (B, D, h, w) of S x S inputs, points (B, P, 2) (row, col) in pixels -> (B, P, D): f bilinearly
    interpolated at each pixel's centre ((col + ½)/S, (row + ½)/S of the map's extent, align_corners False)."""
    xy = (points.flip(-1).to(f.dtype) + 0.5) / size * 2 - 1  # (B, P, 2) as (x, y) in [-1, 1]
    sampled = F.grid_sample(f, xy[:, None], mode="bilinear", padding_mode="border", align_corners=False)  # (B,D,1,P)
    return sampled[:, :, 0].transpose(1, 2)  # (B, P, D)


def swap_background(x: torch.Tensor, foreground: torch.Tensor, sigma: float) -> torch.Tensor:
    """Views x (B, C, S, S), their foreground (B, S, S) bool -> (B, C, S, S): image i's foreground on image i-1's
    background (i-1 mod B). x_s = α·x_i + (1 − α)·x_{i−1} with α = max(m, G_σ * m), m the foreground: exactly x_i on
    the foreground, fading out over ~2σ px around it (σ = 0: α = m)."""
    m = foreground[:, None].to(x.dtype)  # (B, 1, S, S)
    alpha = m
    if sigma > 0:
        k = min(2 * math.ceil(3 * sigma) + 1, 2 * x.shape[-1] - 1)  # odd, its reflect padding inside the view
        alpha = torch.maximum(m, gaussian_blur(m, [k, k], [sigma, sigma]))
    return alpha * x + (1 - alpha) * x.roll(1, dims=0)


class ForegroundMaps(Dataset):
    """A dense set and the indices of its training images -> items ((uint8 image (C, H, W), foreground map uint8
    (H, W): 0 background, 1 any object class, 255 ignore), -1)."""

    def __init__(self, dense: DenseSet, indices: list[int]):
        self.dense, self.indices = dense, indices
        self._check_foreground()

    def _check_foreground(self, n: int = FOREGROUND_SAMPLE) -> None:
        """Refuse masks without foreground (push and swap would be 0 at every step) and warn when few have it, judged
        on up to `n` training images chosen with a generator seeded by 0."""
        picked = torch.randperm(len(self.indices), generator=torch.Generator().manual_seed(0))[:n].tolist()
        with_object = sum(bool(((t.semantic > 0) & (t.semantic != IGNORE)).any())
                          for t in (self.dense[self.indices[i]][1] for i in picked) if t.semantic is not None)
        where = f"{len(picked)} of the {len(self.indices)} training images of {self.dense.name}"
        if with_object == 0:
            raise SelfsupError(f"no mask of {where} holds a foreground pixel (a class > 0): sadlcd pulls and pushes "
                               "foreground against background and would learn from background alone; pass masks "
                               "that mark objects (a folder's test split, 20 % unless DIR/train/ and DIR/test/ are "
                               "given, is not trained on)")
        if with_object < 0.25 * len(picked):
            log.warning("sadlcd: only %d masks of %s hold foreground: the push and swap terms see few objects",
                        with_object, where)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, target = self.dense[self.indices[i]]
        semantic = target.semantic
        if semantic is None:
            raise SelfsupError(NEEDS_MASKS.format(data=self.dense.name, why=" for this image"))
        if semantic.shape != image.shape[1:]:
            raise SelfsupError(f"{self.dense.name}: image {self.indices[i]}'s mask is {tuple(semantic.shape)} and "
                               f"the image {tuple(image.shape[1:])}; pass masks of their images' size")
        classes = torch.where(semantic == 0, BACKGROUND, FOREGROUND)
        return (image, torch.where(semantic == IGNORE, IGNORE, classes).to(torch.uint8)), -1


def dense_source(images: Dataset) -> tuple[DenseSet, list[int]]:
    """(the dense set behind the training images, the index in it of each image): through Subset and SkipBadImages,
    a built-in dense set's images, or a dense folder's (DIR/images/ + DIR/masks/; the mask PNGs that the image
    listing also holds, and the folder's test split, are left out). SelfsupError for data without semantic masks."""
    chain = None  # images[i] is inner[chain[i]]
    while isinstance(images, (Subset, SkipBadImages)):
        if isinstance(images, Subset):
            chain = [images.indices[i] for i in (chain if chain is not None else range(len(images)))]
            images = images.dataset
        else:
            images = images.images
    chain = list(chain if chain is not None else range(len(images)))
    dense = getattr(images, "dense", None)
    if isinstance(dense, DenseSet):  # --data paste-scenes | trees: their images
        found = dense, chain
    elif isinstance(images, FolderImageSet) and images.root and _dense_layout(images.root):
        dense = open_dense(images.root, "train")
        where = {os.path.realpath(p): k for k, p in enumerate(dense.paths)}
        found = dense, [where[r] for r in (os.path.realpath(images.paths[i]) for i in chain) if r in where]
    else:
        raise SelfsupError(NEEDS_MASKS.format(data=getattr(images, "name", "this data"), why=""))
    if "semantic" not in found[0].has:
        raise SelfsupError(NEEDS_MASKS.format(data=found[0].name, why=f" (it has {', '.join(found[0].has)})"))
    if not found[1]:
        raise SelfsupError(NEEDS_MASKS.format(data=found[0].name, why=" for any image listed"))
    return found


def _dense_layout(root: str) -> bool:
    """Whether the folder is laid out as dense data: DIR/images/, or DIR/train/images/."""
    return os.path.isdir(os.path.join(root, "images")) or os.path.isdir(os.path.join(root, "train", "images"))
