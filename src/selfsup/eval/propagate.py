"""`selfsup eval propagate`: label propagation of a clip's first-frame mask through feature affinity (video object
segmentation without training), and the frame-wise use of an image encoder on clips.

Protocol (Jabri et al., "Space-Time Correspondence as a Contrastive Random Walk", NeurIPS 2020, and DINO's DAVIS
evaluation, Caron et al. 2021, `eval_video_segmentation.py`), on the test clips of `moving-objects` (synthetic
labels: the moving object's mask in every frame):
- per-frame features f_t (D, h, w) (see `clip_features` for how each kind of encoder gives them; with `stage` the
  map after that stage of a ResNet backbone, image or video, instead of the method's dense features), upsampled
  bilinearly to a `grid` x `grid` map when coarser (every encoder alike; default 16, a quarter of moving-objects'
  64 px side: a ConST-CL map at 64 px is 4 x 4, on which a 20-28 px object covers about one cell and the first mask
  cannot even be drawn), then L2-normalised at every location;
- the first frame's ground-truth mask, area-averaged onto that h x w grid, is the soft label y_0 (h w,) in [0, 1];
- frame t = 1 .. T-1: its sources are frame 0 and the `context` frames before t (their propagated labels); the
  affinity of target location q and source location s is <f_t(q), f_src(s)>, kept only where s lies within `radius`
  cells of q (a square window, Chebyshev distance; None: everywhere); the `topk` largest per q are softmaxed with
  temperature τ and y_t(q) = Σ softmax(A/τ) y_src. Defaults: top-k 5, τ 0.07, 3 previous frames, a 3-cell radius
  on the 16 x 16 grid (12 px; objects move at most 1.1 px a frame) - DINO's: top-k 5, τ 0.1, 7 previous frames, a
  12-cell radius at stride 8 on 480p DAVIS frames;
- y_t is upsampled bilinearly to the S x S frame and thresholded at 0.5 (with one object, DINO's argmax over
  background and object is this threshold);
- J = IoU(predicted mask, ground truth) of frames 2..T (t = 1..T-1), averaged over the frames of a clip, then over
  clips (DAVIS's region similarity; a frame where both masks are empty scores 1).
Two references come with every score: J of copying the first mask to every frame (no propagation), and J of the
ground truth itself area-averaged onto the h x w grid and upsampled back (what features of that resolution can
reach at best).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from selfsup.errors import SelfsupError
from selfsup.eval.features import FEATURE_BASELINES, FrozenEncoder, checkpoint_modality, frozen_encoder
from selfsup.methods import Method
from selfsup.nn import stage_features
from selfsup.nn.video import VideoResNet

DATA = ("moving-objects", "moving-objects-motion")  # the same clips: propagation reads their masks, not labels
TOPK, TEMPERATURE, CONTEXT, RADIUS, GRID = 5, 0.07, 3, 3, 16
# frame-wise image encoders on a clip embed the frames a video method's default evaluation clip holds: ConST-CL's
# 8 frames at stride 2 from the middle of the clip (video/clips.centre_clip)
FRAMEWISE_FRAMES, FRAMEWISE_STRIDE = 8, 2


def jaccard(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Region similarity J of boolean masks (..., H, W) -> (...): |P ∩ G| / |P ∪ G|, 1 where both are empty."""
    inter = (predicted & truth).flatten(-2).sum(-1).double()
    union = (predicted | truth).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _window(h: int, w: int, radius: int | None) -> torch.Tensor | None:
    """(h w, h w) bool: source cell s within `radius` cells of target cell q (Chebyshev); None for no limit."""
    if radius is None:
        return None
    yx = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # (2, hw)
    return (yx[:, :, None] - yx[:, None, :]).abs().amax(0) <= radius


def propagate_labels(features: torch.Tensor, first_mask: torch.Tensor, topk: int = TOPK,
                     temperature: float = TEMPERATURE, context: int = CONTEXT,
                     radius: int | None = RADIUS) -> torch.Tensor:
    """features (T, D, h, w) of one clip's frames, first_mask bool (S, S) of frame 0 -> soft labels (T, h, w) in
    [0, 1]: y_0 the mask area-averaged onto the grid, y_t propagated from frame 0 and frames t-context..t-1 (see the
    module). A SelfsupError for topk < 1, temperature <= 0, context < 0 or radius < 0."""
    if topk < 1 or temperature <= 0 or context < 0 or (radius is not None and radius < 0):
        raise SelfsupError(f"propagation needs topk >= 1, temperature > 0, context >= 0 and radius >= 0; got topk "
                           f"{topk}, temperature {temperature}, context {context}, radius {radius}")
    T, D, h, w = features.shape
    f = F.normalize(features.float().flatten(2), dim=1).transpose(1, 2)  # (T, hw, D)
    y = [F.adaptive_avg_pool2d(first_mask[None, None].float(), (h, w)).flatten()]  # [(hw,)] y_0
    window = _window(h, w, radius)  # (hw, hw) or None
    for t in range(1, T):
        sources = [0, *range(max(1, t - context), t)]
        A = torch.einsum("qd,nsd->qns", f[t], f[sources])  # (hw, n, hw) cosine affinities
        if window is not None:
            A = A.masked_fill(~window[:, None, :], -math.inf)
        labels = torch.stack([y[s] for s in sources]).flatten()  # (n hw,)
        values, index = A.flatten(1).topk(min(topk, A[0].numel()), dim=1)  # (hw, k)
        weights = torch.softmax(values / temperature, dim=1)  # (hw, k); -inf (outside the window) -> 0
        y.append((weights * labels[index]).sum(1))  # (hw,)
    return torch.stack(y).view(T, h, w)


def propagate_masks(features: torch.Tensor, first_mask: torch.Tensor, **options: Any) -> torch.Tensor:
    """features (T, D, h, w), first_mask bool (S, S) -> bool masks (T, S, S): `propagate_labels` upsampled
    bilinearly to S x S and thresholded at 0.5; frame 0 is first_mask itself."""
    y = propagate_labels(features, first_mask, **options)  # (T, h, w)
    masks = F.interpolate(y[:, None], size=tuple(first_mask.shape), mode="bilinear", align_corners=False)[:, 0] > 0.5
    masks[0] = first_mask.bool()
    return masks


def grid_oracle(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """bool masks (T, S, S) -> (T, S, S): each area-averaged onto h x w, upsampled back as propagation does,
    thresholded at 0.5: the best a propagated label on that grid can draw."""
    y = F.adaptive_avg_pool2d(masks[:, None].float(), (h, w))  # (T, 1, h, w)
    return F.interpolate(y, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)[:, 0] > 0.5


def on_grid(features: torch.Tensor, grid: int | None) -> torch.Tensor:
    """features (T, D, h, w) -> (T, D, max(h, grid), max(w, grid)): upsampled bilinearly where coarser than `grid`
    cells a side (None: as they are)."""
    h, w = features.shape[-2:]
    if grid is None or (h >= grid and w >= grid):
        return features
    return F.interpolate(features, size=(max(h, grid), max(w, grid)), mode="bilinear", align_corners=False)


def _frames(clip: torch.Tensor) -> list[torch.Tensor]:
    """uint8 (T, H, W, 3) -> [uint8 (3, H, W)] * T, the images an image encoder's `batch` takes."""
    return list(clip.permute(0, 3, 1, 2))


@torch.no_grad()
def clip_features(encoder: FrozenEncoder, clip: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """uint8 clip (T, H, W, 3) -> per-frame features (T, D, h, w) through the encoder's `batch` and `dense`.

    Image encoders: every frame alone. Video encoders (whose `dense` maps a clip to one time-averaged map): frame
    t is given the clip centred on it, the frames t-T//2 .. t+T//2 (clamped at the clip's ends, so edge frames
    repeat), from which the method's `batch` cuts its own evaluation clip (its middle T_m frames at its stride s,
    ConST-CL's 8 at stride 2) - so f_t describes a window of (T_m - 1) s + 1 frames centred on t, at temporal
    stride 1 (one map per frame; the network's own temporal stride, 8 for ConST-CL, is averaged away). `chunk`
    frames or windows per forward pass."""
    T = clip.shape[0]
    if encoder.dense is None:
        raise SelfsupError(f"{encoder.description} gives no per-location features; propagation needs a method "
                           "with dense_features")
    if encoder.modality == "image":
        inputs = _frames(clip)
    elif encoder.modality == "video":
        offsets = torch.arange(-(T // 2), T // 2 + 1)  # (2 (T // 2) + 1,)
        inputs = [clip[(t + offsets).clamp(0, T - 1)] for t in range(T)]
    else:
        raise SelfsupError(f"propagation takes image or video encoders; this is a {encoder.modality} one")
    return torch.cat([encoder.dense(encoder.batch(inputs[i: i + chunk])).float().cpu()
                      for i in range(0, T, chunk)])


class StageMap:
    """A backbone's map after stage `stage` (1-4 of a ResNet): images (B, C, S, S) -> (B, D_s, h_s, w_s); clips
    (B, 3, T, S, S) of a VideoResNet -> the map averaged over time, as ConST-CL's dense features are."""

    def __init__(self, backbone: torch.nn.Module, stage: int):
        self.backbone, self.stage = backbone, stage

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.backbone, VideoResNet):
            return self.backbone.feature_map(inputs, self.stage).mean(dim=2)
        return stage_features(self.backbone, inputs)[self.stage - 1]


def at_stage(encoder: FrozenEncoder, stage: int | None) -> FrozenEncoder:
    """`encoder` whose dense features are its backbone's map after `stage` (None: unchanged). SelfsupError for a
    stage outside 1-4 or an encoder without a backbone ('pixels')."""
    if stage is None:
        return encoder
    if not 1 <= stage <= 4:
        raise SelfsupError(f"--stage must be 1, 2, 3 or 4 (a ResNet's stages; 4 is the last map), got {stage}")
    if encoder.module is None:
        raise SelfsupError(f"{encoder.description} has no network stages; drop --stage")
    backbone = encoder.module.encoder() if isinstance(encoder.module, Method) else encoder.module
    return dataclasses.replace(encoder, dense=StageMap(backbone, stage), description=f"{encoder.description}, "
                                                                                      f"stage {stage} map")


class FramewiseBatch:
    """An image encoder's `batch` made to take clips: uint8 clips (T, H, W, 3) -> ((B F, C, S, S) images, F), the
    F = FRAMEWISE_FRAMES frames at stride FRAMEWISE_STRIDE from the middle of each clip (picklable for workers)."""

    def __init__(self, batch: Any):
        self.batch = batch

    def __call__(self, clips: list[torch.Tensor]) -> tuple[Any, int]:
        from selfsup.video import centre_clip

        frames = [frame for clip in clips for frame in _frames(centre_clip(clip, FRAMEWISE_FRAMES, FRAMEWISE_STRIDE))]
        return self.batch(frames), FRAMEWISE_FRAMES


class FramewiseEmbed:
    """(images (B F, C, S, S), F) -> (B, D): the image encoder's `embed` of every frame, averaged over the F."""

    def __init__(self, embed: Any):
        self.embed = embed

    def __call__(self, batch: tuple[Any, int]) -> torch.Tensor:
        images, frames = batch
        features = self.embed(images)  # (B F, D)
        return features.view(-1, frames, features.shape[-1]).mean(1)


def framewise(encoder: FrozenEncoder) -> FrozenEncoder:
    """An image encoder applied to clips frame by frame: `embed` the mean of its per-frame embeddings (see
    FramewiseBatch for the frames); no `dense` (propagation reads frames through `clip_features`)."""
    if encoder.modality != "image":
        raise SelfsupError(f"frame-wise evaluation applies an image encoder to clips; this is a {encoder.modality} "
                           "one, which reads clips itself")
    return FrozenEncoder("video", f"{encoder.description}, frame by frame ({FRAMEWISE_FRAMES} frames averaged)",
                         FramewiseBatch(encoder.batch), FramewiseEmbed(encoder.embed), encoder.module,
                         encoder.image_size)


def evaluate_propagate(checkpoint: str, data: str | None = None, random_init: bool = False,
                       clips: int | None = None, topk: int = TOPK, temperature: float = TEMPERATURE,
                       context: int = CONTEXT, radius: int | None = RADIUS, grid: int | None = GRID, seed: int = 0,
                       out: str | None = None, stage: int | None = None,
                       progress: bool = True, return_masks: bool = False, **image_options: Any) -> dict[str, Any]:
    """J of first-frame mask propagation (see the module) by `checkpoint`'s frozen encoder - a video or image
    method's .ckpt (random_init: its network with fresh weights), or 'pixels' / 'random' (image baselines, at the
    frame's own side unless image_size is given) - on the first `clips` test clips of `data` [moving-objects: all
    100]; `stage`: propagate the map after that stage of the encoder's ResNet backbone (at_stage; None: the
    method's dense features, the last map). Writes the result JSON (RUN/eval/propagate-DATA.json by default) and
    returns it; return_masks adds "masks": (clip index, predicted bool (T, S, S), truth bool (T, S, S)) of the first
    4 clips, for figures. Raises SelfsupError for other data, a modality other than image or video, an encoder
    without dense features, clips < 1, grid < 1, a stage outside 1-4, or image options given to a checkpoint file."""
    from selfsup.eval.run import _default_out, write_result
    from selfsup.video import load_moving_objects

    start = time.time()
    data = data or DATA[0]
    if data not in DATA:
        raise SelfsupError(f"propagation needs clips with per-frame masks: pass --data moving-objects, not '{data}'")
    if clips is not None and clips < 1:
        raise SelfsupError(f"--clips must be at least 1, got {clips}")
    if grid is not None and grid < 1:
        raise SelfsupError(f"--grid must be at least 1 cell, got {grid}; pass e.g. 16, or none for the native map")
    modality = checkpoint_modality(checkpoint)
    if modality not in ("image", "video"):
        raise SelfsupError(f"propagation takes image or video encoders; '{checkpoint}' is a {modality} one")
    if random_init and checkpoint in FEATURE_BASELINES:
        raise SelfsupError(f"--random-init makes the random twin of a checkpoint file; '{checkpoint}' has no weights")
    given = {key: value for key, value in image_options.items() if value not in (None, False, {})}
    if given and checkpoint not in FEATURE_BASELINES:
        raise SelfsupError(f"--{next(iter(given)).replace('_', '-')} sizes --checkpoint random or pixels; "
                           f"'{checkpoint}' fixes its own network and input")
    test = load_moving_objects("test")
    n = min(clips or len(test), len(test))
    if checkpoint in FEATURE_BASELINES:
        given.setdefault("image_size", test.frames.shape[-2])  # the frame's own side, not ImageNet's 224
    torch.manual_seed(seed)  # a random-init network is seeded
    encoder = at_stage(frozen_encoder(checkpoint, random_init, **given), stage)
    if encoder.module is not None:
        encoder.module.eval()
    scores, copies, oracles, shown, native, cells = [], [], [], [], None, None
    for i in tqdm(range(n), desc="propagating", unit="clip", leave=False, disable=None if progress else True):
        truth = torch.from_numpy(test.masks[i])  # (T, S, S) bool
        features = clip_features(encoder, test.clip(i))  # (T, D, h, w)
        native = list(features.shape[-2:])
        features = on_grid(features, grid)
        cells = tuple(features.shape[-2:])
        predicted = propagate_masks(features, truth[0], topk=topk, temperature=temperature, context=context,
                                    radius=radius)
        scores.append(jaccard(predicted[1:], truth[1:]).mean())
        copies.append(jaccard(truth[:1].expand_as(truth[1:]), truth[1:]).mean())
        oracles.append(jaccard(grid_oracle(truth[1:], *cells), truth[1:]).mean())
        if return_masks and len(shown) < 4:
            shown.append((i, predicted, truth))
    result = {"protocol": "propagate", "j": round(float(torch.stack(scores).mean()), 4),
              "j_copy_first_mask": round(float(torch.stack(copies).mean()), 4),
              "j_oracle_at_grid": round(float(torch.stack(oracles).mean()), 4), "feature_grid": native,
              "propagation_grid": list(cells),
              "encoder": encoder.description, "checkpoint": checkpoint, "random_init": random_init,
              "modality": modality, "data": data, "tag": "synthetic", "n_clips": n, "frames": int(test.masks.shape[1]),
              "topk": topk, "temperature": temperature, "context": context, "radius": radius, "grid": grid,
              "stage": stage, "seed": seed,
              "seconds": round(time.time() - start, 1)}
    path = Path(out) if out else _default_out("propagate", checkpoint, data, random_init,
                                              given.get("backbone"), seed=seed)
    written = write_result(result, Path(os.fspath(path)))
    return {**written, "masks": shown} if return_masks else written
