"""`selfsup discover`: TokenCut object discovery on a self-supervised ViT (METHODS.md, "TokenCut").

Wang, Shen, Crowley, Xie et al., "Self-supervised Transformers for Unsupervised Object Discovery using Normalized
Cut", CVPR 2022, Sec. 3. Training-free: for each image,
1. keys k_i (N, D) of the encoder's last attention layer, one per patch, class/register tokens dropped (timm's
   qkv output (B, T, 3, heads, head_dim): the k part, heads concatenated, before any qk-norm);
2. a fully connected graph on the patches, W_ij = 1 if cos(k_i, k_j) > τ else ε (τ 0.2, ε 1e-5; Eq. 2);
3. the second-smallest eigenvector y of the generalised problem (D − W) y = λ D y, D = diag(Σ_j W_ij): the
   relaxed normalised cut (Eq. 3-4), by `scipy.linalg.eigh(D − W, D, subset_by_index=[1, 1])`;
4. bipartition at mean(y); the foreground is the side holding the seed argmax |y| (the authors' code flips y when
   the seed falls on the other side, so y's sign does not matter);
5. the seed's 4-connected component of its side on the h x w token grid (`scipy.ndimage.label`); the box is the
   component's bounding box in tokens, scaled by the patch side to the encoder's input and then to the image.

Inputs: each image goes through the method's `eval_batch` (resized, shorter side to the encoder's side S, centre-
cropped, normalised as in training); boxes and masks are mapped back from that S x S frame to the image's own pixels
(a non-square image's parts outside the centre crop can hold no box). A ViT built without timm's dynamic_img_size
takes only its own img_size.

CorLoc (Eq. of the paper's Sec. 4.1, as LOST and TokenCut compute it): the share of images whose box has IoU >= 0.5
(`torchvision.ops.box_iou`) with at least one ground-truth box; images without any ground-truth box are left out
(and counted). The centred-box baseline: the box of half the image's width and height around its centre (a
quarter of its area), scored the same way. Every result names its data's label tag (real / pseudo / synthetic).

When every pair of keys is above τ the graph is complete and has no cut (λ₂ = 1, y arbitrary): the box is then
whatever LAPACK's eigenvector gives, the same for every such image. Each row of boxes.json says `complete_graph`
and metrics.json counts them (`complete_graphs`); the paper has no rule for it and neither has this.

Deviation: the paper feeds images at their native size (cropped to a multiple of the patch side); a timm ViT with a
fixed img_size only takes S x S, so every image is resized to the encoder's side as other evaluations do.
"""

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.linalg
import torch
from PIL import Image
from scipy import ndimage
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import box_iou
from tqdm import tqdm

from selfsup.checkpoints import load_method
from selfsup.data.dense import DenseSet, is_dense_builtin, open_dense
from selfsup.errors import SelfsupError
from selfsup.eval.features import EvalBatch, checkpoint_modality
from selfsup.nn import create_backbone

TAU, EPS = 0.2, 1e-5  # the paper's graph threshold τ and the weight ε of the pairs below it
IOU = 0.5  # CorLoc's threshold
FIGURE_IMAGES = 16  # images drawn in overlay.png
SPLITS = ("train", "test", "all")
VIT_HINT = "--backbone timm:vit_tiny_patch16_224 --backbone-kwargs '{img_size: 64, patch_size: 8}'"


# ---- the algorithm --------------------------------------------------------------------------------------------


def affinity(keys: np.ndarray, tau: float = TAU, eps: float = EPS) -> np.ndarray:
    """W (N, N) float64 of keys (N, D): 1 where the cosine similarity of two keys exceeds tau, else eps (Eq. 2)."""
    k = keys.astype(np.float64)
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)  # (N, D) unit rows
    return np.where(k @ k.T > tau, 1.0, eps)  # (N, N)


def ncut(keys: np.ndarray, tau: float = TAU, eps: float = EPS) -> tuple[np.ndarray, np.ndarray, float]:
    """TokenCut's bipartition of N >= 2 tokens from their keys (N, D): `bipartition` of their `affinity`."""
    return bipartition(affinity(keys, tau, eps))


def bipartition(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(foreground bool (N,), y (N,) the second-smallest generalised eigenvector of (D − W) y = λ D y, λ₂ its
    eigenvalue) of a symmetric affinity W (N, N) with positive degrees (Eq. 3-4). The foreground is the side of
    y > mean(y) or y <= mean(y) that holds the seed argmax |y|. A complete graph (W all ones) has λ₂ = 1 with
    multiplicity N − 1: there is no cut, and y is whichever vector of that space LAPACK returns."""
    D = np.diag(W.sum(1))  # (N, N) degrees
    values, vectors = scipy.linalg.eigh(D - W, D, subset_by_index=[1, 1])  # λ₂, y (N, 1)
    y = vectors[:, 0]  # (N,)
    side = y > y.mean()  # (N,) bipartition at the mean
    seed = int(np.argmax(np.abs(y)))
    return (side if side[seed] else ~side), y, float(values[0])


def seed_component(foreground: np.ndarray, seed: int, grid: tuple[int, int]) -> np.ndarray:
    """bool (h, w): the 4-connected component of the foreground tokens (h*w,) (row-major) holding token `seed`."""
    regions, _ = ndimage.label(foreground.reshape(grid))  # (h, w) int, 0 = background
    return regions == regions.flat[seed]


def token_box(component: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) in tokens of a non-empty bool (h, w) component: first column/row, one past the last."""
    rows, cols = np.nonzero(component)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


@dataclass
class Discovery:
    """One image's TokenCut result on its token grid: the seed's component bool (h, w), its box (x1, y1, x2, y2) in
    tokens, the Ncut eigenvalue λ₂, the seed's index (row-major), and whether every pair of keys was above τ (a
    complete graph: no cut exists, the box is arbitrary)."""

    component: np.ndarray
    box: tuple[int, int, int, int]
    eigenvalue: float
    seed: int
    complete: bool = False

    @property
    def score(self) -> float:
        """1 − λ₂: 1 for a graph that falls into two unconnected parts, lower for a weaker cut."""
        return 1.0 - self.eigenvalue


def tokencut(keys: np.ndarray, grid: tuple[int, int], tau: float = TAU, eps: float = EPS) -> Discovery:
    """TokenCut on one image's patch keys (h*w, D) laid out row-major on `grid` (h, w)."""
    W = affinity(keys, tau, eps)  # (N, N)
    foreground, y, eigenvalue = bipartition(W)
    seed = int(np.argmax(np.abs(y)))
    component = seed_component(foreground, seed, grid)
    return Discovery(component, token_box(component), eigenvalue, seed, bool((W == 1).all()))


# ---- CorLoc ---------------------------------------------------------------------------------------------------


def corloc(predicted: torch.Tensor, ground_truth: list[torch.Tensor], threshold: float = IOU
           ) -> tuple[float, list[float | None]]:
    """(CorLoc, each image's best IoU) of one predicted box per image, predicted (M, 4) xyxy px, against each
    image's ground-truth boxes (N_i, 4): the share of the images with N_i > 0 where some IoU >= threshold; an
    image without ground truth gets None and is left out (NaN when no image has a box)."""
    best = [float(box_iou(predicted[i:i + 1].float(), boxes.reshape(-1, 4).float()).max()) if len(boxes) else None
            for i, boxes in enumerate(ground_truth)]
    scored = [iou for iou in best if iou is not None]
    return (sum(iou >= threshold for iou in scored) / len(scored) if scored else math.nan), best


def centred_box(width: int, height: int) -> torch.Tensor:
    """The baseline's box (4,) xyxy px: half the width and half the height of a width x height image, centred."""
    return torch.tensor([width / 4, height / 4, 3 * width / 4, 3 * height / 4])


# ---- the encoder's keys ---------------------------------------------------------------------------------------


def check_vit(encoder: nn.Module, description: str) -> VisionTransformer:
    """The encoder as a timm VisionTransformer whose last block has a qkv projection; one SelfsupError line else."""
    if not isinstance(encoder, VisionTransformer) or not isinstance(
            getattr(encoder.blocks[-1].attn, "qkv", None), nn.Linear):
        raise SelfsupError(f"discover reads the keys of a ViT's last attention layer and {description} encodes with a "
                           f"{type(encoder).__name__}; pass a checkpoint trained with a timm ViT backbone (dino, "
                           f"mocov3, mae, sit ... with --backbone timm:vit_tiny_patch16_224), or 'random' with "
                           f"{VIT_HINT}")
    return encoder


@torch.no_grad()
def last_keys(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Keys (B, N, D) of the last block's attention for images (B, C, S, S), by a forward hook on its qkv
    projection (B, T, 3·D) laid out as (B, T, 3, heads, head_dim); the num_prefix_tokens class/register tokens are
    dropped, leaving the N patch tokens in row-major order."""
    attn = vit.blocks[-1].attn
    captured: list[torch.Tensor] = []
    handle = attn.qkv.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        vit.forward_features(images)
    finally:
        handle.remove()
    qkv = captured[-1]  # (B, T, 3·D)
    keys = qkv.reshape(*qkv.shape[:2], 3, attn.num_heads, attn.head_dim)[:, :, 1]  # (B, T, heads, head_dim)
    return keys.flatten(2)[:, vit.num_prefix_tokens:]  # (B, N, D)


@dataclass
class KeyEncoder:
    """A ViT with its input recipe: `batch` turns uint8 images (C, H, W) into (B, C', S, S)."""

    vit: VisionTransformer
    batch: Callable[[list], torch.Tensor]
    image_size: int
    description: str

    @property
    def patch(self) -> int:
        p = self.vit.patch_embed.patch_size
        return int(p[0] if isinstance(p, tuple) else p)

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size // self.patch, self.image_size // self.patch


def key_encoder(checkpoint: str, random_init: bool = False, channels: int = 3, backbone: str | None = None,
                backbone_kwargs: dict | None = None, image_size: int | None = None) -> KeyEncoder:
    """The ViT of `checkpoint` (a .ckpt file: its method's `encoder()` and `eval_batch`; random_init: the same
    network at random init) or of 'random' (an untrained `backbone` for `channels`-channel images, at the ViT's
    img_size unless image_size is given). Raises SelfsupError for a text/audio checkpoint, 'pixels', options that do
    not apply, an encoder that is not a timm ViT, and an image_size a fixed-size ViT does not take."""
    modality = checkpoint_modality(checkpoint)
    if modality != "image" or checkpoint == "pixels":
        what = "raw pixels" if checkpoint == "pixels" else f"'{checkpoint}' encodes {modality}"
        raise SelfsupError(f"discover needs a ViT's attention keys and {what}; pass a checkpoint of an image method "
                           f"trained with a ViT, or 'random' with {VIT_HINT}")
    if random_init and checkpoint == "random":
        raise SelfsupError("--random-init makes the random twin of a checkpoint file; 'random' has no weights")
    if checkpoint != "random" and (backbone or backbone_kwargs):
        raise SelfsupError(f"--backbone{'-kwargs' if not backbone else ''} sizes the network of --checkpoint random; "
                           f"'{checkpoint}' fixes its own")
    if checkpoint == "random":
        if not backbone:
            raise SelfsupError(f"--checkpoint random needs a ViT to build: pass {VIT_HINT}")
        vit = check_vit(create_backbone(backbone, in_chans=channels, **(backbone_kwargs or {})),
                        f"random-init {backbone}").eval()
        size = image_size or int(vit.patch_embed.img_size[0])
        encoder = KeyEncoder(vit, EvalBatch(size, channels), size, f"random-init {backbone}")
    else:
        method, meta = load_method(checkpoint, weights=not random_init)
        description = f"{meta['method']} {method.network_name()}{' at random init' if random_init else ''}"
        vit = check_vit(method.encoder(), description).eval()
        if image_size:
            method.data_meta["image_size"] = image_size
        encoder = KeyEncoder(vit, method.eval_batch, int(method.data_meta["image_size"]), description)
    fixed = tuple(encoder.vit.patch_embed.img_size)
    if not encoder.vit.dynamic_img_size and fixed != (encoder.image_size, encoder.image_size):
        raise SelfsupError(f"{encoder.description} takes {fixed[0]}x{fixed[1]} px inputs, not {encoder.image_size}; "
                           f"pass --image-size {fixed[0]} (other sides need a ViT built with dynamic_img_size: true)")
    if encoder.image_size < encoder.patch:
        raise SelfsupError(f"--image-size {encoder.image_size} is smaller than one {encoder.patch} px patch; pass a "
                           "multiple of the patch side")
    return encoder


# ---- from the encoder's S x S input back to the image ---------------------------------------------------------


@dataclass
class Frame:
    """Where the encoder's S x S input lies in an H x W image after `EvalTransform` (torchvision's Resize of the
    shorter side to S, int() of the longer, then CenterCrop(S)): input pixel x is image pixel
    (x + left) * W / new_w, and y likewise."""

    height: int
    width: int
    size: int

    def __post_init__(self) -> None:
        short, long = sorted((self.height, self.width))
        resized = (self.size, int(self.size * long / short))  # (short side, long side) after Resize
        self.new_h, self.new_w = resized if self.height <= self.width else resized[::-1]
        self.top = int(round((self.new_h - self.size) / 2.0))
        self.left = int(round((self.new_w - self.size) / 2.0))

    def box(self, box: tuple[float, float, float, float]) -> list[float]:
        """(x1, y1, x2, y2) in input pixels -> the same box in image pixels, clipped to the image."""
        x1, y1, x2, y2 = box
        sx, sy = self.width / self.new_w, self.height / self.new_h
        return [min(max((x1 + self.left) * sx, 0.0), self.width), min(max((y1 + self.top) * sy, 0.0), self.height),
                min(max((x2 + self.left) * sx, 0.0), self.width), min(max((y2 + self.top) * sy, 0.0), self.height)]

    def mask(self, component: np.ndarray, patch: int) -> np.ndarray:
        """bool (H, W): each image pixel whose centre falls in a token of the bool (h, w) component."""
        rows = np.floor(((np.arange(self.height) + 0.5) * self.new_h / self.height - self.top) / patch).astype(int)
        cols = np.floor(((np.arange(self.width) + 0.5) * self.new_w / self.width - self.left) / patch).astype(int)
        h, w = component.shape
        inside_r, inside_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)  # (H,), (W,)
        picked = component[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]  # (H, W)
        return picked & inside_r[:, None] & inside_c[None, :]


# ---- data -----------------------------------------------------------------------------------------------------


class Images(Dataset):
    """`set[i]` -> (uint8 image (C, H, W), ground-truth boxes float32 (N, 4) xyxy px or None, name): the images
    of dense data (a split, or both) or of a plain image folder (no boxes)."""

    def __init__(self, parts: list[tuple[str, Any]], boxed: bool, name: str, tag: str | None, channels: int):
        self.parts, self.boxed, self.name, self.tag, self.channels = parts, boxed, name, tag, channels
        self.index = [(p, i) for p, (_, part) in enumerate(parts) for i in range(len(part))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        p, i = self.index[j]
        split, part = self.parts[p]
        image, target = part[i]
        paths = getattr(part, "paths", None)  # image folders name their files
        name = str(paths[i]) if paths is not None else f"{split}/{i}"
        if not self.boxed:
            return image, None, name
        return image, target.boxes.float().reshape(-1, 4), name


def open_images(data: str, split: str | None = None) -> Images:
    """The images to discover objects in: a dense built-in set or a dense folder (DIR/images/ with masks or a box
    file; boxes give CorLoc) at `split` ('train', 'test' or 'all'; default test), or else every image file under a
    folder (no split, no boxes). Raises SelfsupError for an unknown split or data that holds no images."""
    if split is not None and split not in SPLITS:
        raise SelfsupError(f"unknown split '{split}': pass {', '.join(SPLITS)}")
    root = os.path.expanduser(data)
    dense_layout = any(os.path.isdir(os.path.join(root, sub, "images")) for sub in ("", "train"))
    if not is_dense_builtin(data) and os.path.isdir(root) and not dense_layout:
        from selfsup.data import FolderImageSet, cached_index

        if split is not None:
            raise SelfsupError(f"--split applies to dense data with a train/test split; '{data}' is a plain image "
                               "folder, every image of which is used: drop --split")
        paths = cached_index(root)
        if not paths:
            raise SelfsupError(f"'{data}' holds no image files: pass a folder of images, paste-scenes or trees")
        return Images([("all", FolderImageSet(paths, name=data, root=root))], False, data, None, 3)
    split = split or "test"
    parts = [(s, open_dense(data, s)) for s in (("train", "test") if split == "all" else (split,))]
    first: DenseSet = parts[0][1]
    return Images(parts, "boxes" in first.has, f"{data} ({split})", first.tag, first.channels)


# ---- the command ----------------------------------------------------------------------------------------------


def _collate(items: list[tuple]) -> list[tuple]:
    return items


def discover(checkpoint: str, data: str, out: str | Path, split: str | None = None, limit: int | None = None,
             random_init: bool = False, backbone: str | None = None, backbone_kwargs: dict | None = None,
             image_size: int | None = None, batch_size: int = 32, tau: float = TAU, eps: float = EPS,
             figure_images: int = FIGURE_IMAGES, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """TokenCut on every image of `data` (the first `limit`) with `checkpoint`'s ViT (see `key_encoder`); writes
    into the folder `out`: boxes.json (per image: index, name, box [x1, y1, x2, y2] in image pixels, score 1 − λ₂,
    eigenvalue λ₂, complete_graph, tokens in the component, the mask's file, and with ground truth the best IoU and
    the centred box's), masks/NNNNNN.png (the seed's
    component, 255 on a 0 background, at the image's size), overlay.png (the first `figure_images` images with
    their mask, box and ground truth) and metrics.json, which it returns (CorLoc of TokenCut and of the centred
    box when the data has boxes, seconds per image for the keys and for the Ncut, settings). Raises SelfsupError
    for bad options or data (see `key_encoder`, `open_images`). `seed` seeds a random-init network."""
    start = time.time()
    if limit is not None and limit < 1:
        raise SelfsupError(f"--limit must be at least 1, got {limit}")
    if not 0 <= tau < 1 or not 0 < eps < 1:
        raise SelfsupError(f"--tau must lie in [0, 1) and --eps in (0, 1), got {tau:g} and {eps:g}")
    images = open_images(data, split)
    torch.manual_seed(seed)  # before building the network: a random-init ViT is seeded
    encoder = key_encoder(checkpoint, random_init, images.channels, backbone, backbone_kwargs, image_size)
    n = min(len(images), limit or len(images))
    if n == 0 or math.prod(encoder.grid) < 2:
        raise SelfsupError(f"{images.name} holds no images" if n == 0 else
                           f"{encoder.image_size} px is a single {encoder.patch} px patch; pass a larger --image-size")
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows, drawn, truths, predicted, centred = [], [], [], [], []
    seconds = {"keys": 0.0, "ncut": 0.0}
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(images, range(n)), batch_size=batch_size,
                                         collate_fn=_collate)
    with tqdm(total=n, desc="discover", unit="image", disable=None if progress else True) as bar:
        for items in loader:
            tick = time.perf_counter()
            keys = last_keys(encoder.vit, encoder.batch([image for image, _, _ in items])).double().numpy()
            seconds["keys"] += time.perf_counter() - tick  # (B, N, D) keys
            if keys.shape[1] != math.prod(encoder.grid):
                raise SelfsupError(f"{encoder.description} gave {keys.shape[1]} patch tokens for a {encoder.grid} grid")
            for (image, boxes, name), k in zip(items, keys):
                tick = time.perf_counter()
                found = tokencut(k, encoder.grid, tau, eps)
                seconds["ncut"] += time.perf_counter() - tick
                row, mask = _result(len(rows), name, image, found, encoder)
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / row["mask"])
                if boxes is not None:
                    truths.append(boxes)
                    predicted.append(torch.tensor(row["box"]))
                    centred.append(centred_box(image.shape[-1], image.shape[-2]))
                if len(drawn) < figure_images:
                    drawn.append((image, mask, row["box"], boxes))
                rows.append(row)
                bar.update()
    metrics = {"protocol": "discover-tokencut", "encoder": encoder.description, "checkpoint": checkpoint,
               "random_init": random_init, "data": data, "split": images.name, "tag": images.tag, "n_images": n,
               "image_size": encoder.image_size, "patch": encoder.patch, "grid": list(encoder.grid),
               "tokens": math.prod(encoder.grid), "tau": tau, "eps": eps, "seed": seed,
               "complete_graphs": sum(row["complete_graph"] for row in rows),
               "seconds_per_image": {key: round(value / n, 5) for key, value in seconds.items()},
               "torch_threads": torch.get_num_threads()}
    if images.boxed:
        metrics.update(_scores(rows, predicted, centred, truths))
    metrics["seconds"] = round(time.time() - start, 1)
    (out / "boxes.json").write_text(json.dumps({"encoder": encoder.description, "data": images.name,
                                                "images": rows}, indent=1))
    draw_overlay(drawn, out / "overlay.png", f"TokenCut, {encoder.description} on {images.name}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {**metrics, "out": str(out)}


def _result(index: int, name: str, image: torch.Tensor, found: Discovery, encoder: KeyEncoder
            ) -> tuple[dict[str, Any], np.ndarray]:
    """(boxes.json's row, the mask bool (H, W)) of one image."""
    frame = Frame(int(image.shape[-2]), int(image.shape[-1]), encoder.image_size)
    box = frame.box(tuple(float(v * encoder.patch) for v in found.box))
    row = {"index": index, "name": name, "box": [round(v, 2) for v in box], "score": round(found.score, 5),
           "eigenvalue": round(found.eigenvalue, 5), "complete_graph": found.complete,
           "tokens": int(found.component.sum()),
           "mask": f"masks/{index:06d}.png"}
    return row, frame.mask(found.component, encoder.patch)


def _scores(rows: list[dict], predicted: list[torch.Tensor], centred: list[torch.Tensor],
            truths: list[torch.Tensor]) -> dict[str, Any]:
    """CorLoc of TokenCut and of the centred box; each row gets its best IoU and the centred box's."""
    found, ious = corloc(torch.stack(predicted), truths)
    baseline, centred_ious = corloc(torch.stack(centred), truths)
    for row, iou, centred_iou in zip(rows, ious, centred_ious):
        row["iou"] = None if iou is None else round(iou, 4)
        row["centred_iou"] = None if centred_iou is None else round(centred_iou, 4)
    counted = sum(iou is not None for iou in ious)
    return {"corloc": None if math.isnan(found) else round(found, 4),
            "corloc_centred_box": None if math.isnan(baseline) else round(baseline, 4),
            "n_with_boxes": counted, "n_without_boxes": len(ious) - counted,
            "mean_iou": round(float(np.mean([i for i in ious if i is not None])), 4) if counted else None}


def draw_overlay(drawn: list[tuple], path: Path, title: str) -> Path:
    """A grid of images (uint8 (C, H, W)) with their mask (bool (H, W), tinted red), box (red) and ground-truth
    boxes (green, dashed; None: none known), written as PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols = max(1, math.ceil(math.sqrt(len(drawn))))
    rows = max(1, math.ceil(len(drawn) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, mask, box, truth) in zip(axes.flat, drawn):
        pixels = image.permute(1, 2, 0).numpy()
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., :3], cmap="gray")
        tint = np.zeros((*mask.shape, 4))  # (H, W, RGBA): red at alpha 0.4 on the mask, clear elsewhere
        tint[mask] = (1.0, 0.0, 0.0, 0.4)
        ax.imshow(tint)
        for t in ([] if truth is None else truth.tolist()):
            ax.add_patch(Rectangle(t[:2], t[2] - t[0], t[3] - t[1], fill=False, edgecolor="lime", lw=1.2, ls="--"))
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, edgecolor="red", lw=1.5))
        if truth is not None and len(truth):
            iou = float(box_iou(torch.tensor([box]), truth).max())
            ax.set_title(f"IoU {iou:.2f} {'hit' if iou >= IOU else 'miss'}", fontsize=8)
    fig.suptitle(f"{title}\nred: TokenCut box and mask; green dashed: ground truth", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
