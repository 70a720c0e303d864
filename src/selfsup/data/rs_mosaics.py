"""The built-in dense set `rs-mosaics` (DATA.md, "Texture mosaics from real remote-sensing tiles"): Voronoi partitions
of a CANVAS px canvas, each cell filled with one texture class quilted from PATCH px patches cut from the real tiles
selfsup installs. Labels synthetic (the partition is drawn; the pixels are real).

Classes (1-based in the semantic map, as every DenseSet), each cut where a rule on the real data says it is pure:
- 1 `crown` (DeepForest's NEON tiles of `--data trees`, 10 cm): a patch wholly inside the ellipse inscribed in a
  hand-drawn tree box (the crown outline rs-change and trees' masks use: change.ellipse);
- 2 `shadow` (same tiles): a patch MARGIN px clear of every box whose luminance, smoothed over SMOOTH px, stays below
  DARK everywhere (mostly crown shadows on grass);
- 3 `ground` (same tiles): a patch MARGIN px clear of every box, smoothed luminance above BRIGHT everywhere (meadow
  grass, sand, fallen dead wood; a crown that DeepForest did not box may remain);
- 4 `water` (the Landsat-7 tile of `--data landsat`, 30 m, true colour from bands 3-2-1): NDWI = (G - NIR) / (G + NIR)
  above WATER_NDWI at every pixel (the sea off the tile's coast);
- 5 `built-up` (same tile): NDVI = (NIR - R) / (NIR + R) below BUILT_NDVI and NDWI below BUILT_NDWI at every pixel
  (town, roads and bare soil; the index cannot tell these apart).
The Landsat tile's green cover (NDVI high) is not a class: no PATCH px window of it is pure in the test region.
The two sources differ 300-fold in resolution, so the airborne and the Landsat classes also differ in scale; the
classes within each source do not.

Images: CELLS = (lo, hi) Voronoi seeds drawn uniformly on the canvas (lo..hi of them), each cell a different class
(drawn without replacement); each cell's texture is a grid of patches (random grid offset) drawn uniformly from the
class's pure windows of the split (positions on a stride of TREE_STRIDE / LANDSAT_STRIDE px), pasted with hard edges,
and then cut to the cell. Patch seams lie inside every class alike. Targets: the semantic map, and each cell as one
instance (mask, box, label).

Split by region, as trees and rs-change split: patches of `train` come from the rows above trees' split line
(change.regions) of each NEON tile and from the top rows of the Landsat tile (all but the bottom TEST_FRACTION), patches
of `test` from the rows below, so no test pixel comes from a train region. Train: SIZES['train'] images, test:
SIZES['test'], seeded by SEED and the split.

Generated once into CACHE/rs-mosaics-v1/ ({split}_images.npy uint8 (N, 3, CANVAS, CANVAS), {split}_semantic.npy uint8
(N, CANVAS, CANVAS), manifest.json written last with each image's classes and the pure windows counted per class).
Needs the DeepForest wheel and the Landsat tile of `bash scripts/setup.sh` (SelfsupError naming it otherwise).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage

from selfsup.errors import SelfsupError

from . import change, trees
from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, save_array, write_cache
from .dense import DenseSet, DenseTarget
from .folder import decode_bytes
from .tiff import LANDSAT_FILE, LANDSAT_MISSING

log = logging.getLogger(__name__)

NAME = "rs-mosaics"
CLASSES = ["crown", "shadow", "ground", "water", "built-up"]
CANVAS = 96  # px side of an image
PATCH = 16  # px side of a quilted patch: 1.6 m of the NEON tiles, 480 m of the Landsat tile
CELLS = (2, 5)  # Voronoi seeds per image, lo..hi
SIZES = {"train": 400, "test": 120}
MARGIN = change.MARGIN  # px that shadow and ground keep from every box
SMOOTH = 5  # px of the box filter on luminance before DARK / BRIGHT
DARK, BRIGHT = 80, 110  # smoothed luminance (0-255): shadow below DARK, ground above BRIGHT
WATER_NDWI, BUILT_NDVI, BUILT_NDWI = 0.5, 0.1, 0.3
LANDSAT_RGB = (2, 1, 0)  # bands 3, 2, 1 (red, green, blue) of the file's 1, 2, 3, 4, 5, 7
LANDSAT_NIR = 3  # band 4
STRETCH = (1, 99)  # true colour: per band, these percentiles of the whole tile map to 0 and 255
TEST_FRACTION = trees.TEST_FRACTION  # of the Landsat tile's rows, the bottom ones are test
TREE_STRIDE, LANDSAT_STRIDE = 4, 1  # px between candidate patch positions
SEED = 0
FOLDER = "rs-mosaics-v1"
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete


class Mosaics(DenseSet):
    """`set[i]` -> (uint8 image (3, CANVAS, CANVAS), DenseTarget(semantic int64 (CANVAS, CANVAS) 1..5, masks bool
    (K, CANVAS, CANVAS) one per cell, boxes float32 (K, 4) xyxy px, labels int64 (K,))). `meta[i]['classes']` lists
    image i's classes (1-based)."""

    def __init__(self, split: str, images: np.ndarray, semantic: np.ndarray, meta: list[dict]):
        super().__init__(name=f"{NAME}/{split}", tag="synthetic", classes=list(CLASSES), channels=3,
                         native_size=CANVAS, background=False)  # every pixel belongs to a texture class
        self.pixels, self.semantic, self.meta = images, semantic, meta

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DenseTarget]:
        semantic = torch.from_numpy(np.array(self.semantic[i])).long()  # (S, S)
        labels = semantic.unique()  # (K,): one cell per class
        masks = semantic[None] == labels[:, None, None]  # (K, S, S)
        return torch.from_numpy(np.array(self.pixels[i])), DenseTarget(
            semantic=semantic, masks=masks, boxes=mask_boxes(masks), labels=labels)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool (K, H, W) non-empty masks -> float32 (K, 4) xyxy px, each the tightest box holding its pixels."""
    rows, cols = masks.any(2), masks.any(1)  # (K, H), (K, W)
    ys, xs = torch.arange(masks.shape[1]), torch.arange(masks.shape[2])
    first = lambda hit, at: torch.where(hit, at, at.numel()).amin(1)  # noqa: E731
    last = lambda hit, at: torch.where(hit, at, -1).amax(1) + 1  # noqa: E731
    return torch.stack([first(cols, xs), first(rows, ys), last(cols, xs), last(rows, ys)], 1).float()


def load_rs_mosaics(split: str) -> Mosaics:
    """rs-mosaics' `split` ('train' | 'test'), generated once and then read from CACHE/rs-mosaics-v1. Raises
    SelfsupError for another split, or when the DeepForest wheel or the Landsat tile is missing."""
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}': pass 'train' or 'test'")
    root = cache_root() / FOLDER
    data = read_cache(root / MANIFEST, recipe())
    if data is not None:
        try:
            arrays = [np.load(root / f"{split}_{k}.npy", mmap_mode="r") for k in ("images", "semantic")]
            return Mosaics(split, *arrays, data["images"][split])
        except (OSError, ValueError):  # unreadable or truncated: generate again and rewrite the cache
            pass
    arrays, meta, counts = build()
    _save(root, arrays, meta, counts)
    return Mosaics(split, *arrays[split], meta[split])


def recipe() -> str:
    """The key of the cache: what the mosaics depend on."""
    return json.dumps({"trees": trees.recipe(), "classes": CLASSES, "canvas": CANVAS, "patch": PATCH, "cells": CELLS,
                       "sizes": SIZES, "margin": MARGIN, "smooth": SMOOTH, "dark": DARK, "bright": BRIGHT,
                       "water": WATER_NDWI, "built": [BUILT_NDVI, BUILT_NDWI], "stretch": STRETCH,
                       "test": TEST_FRACTION, "strides": [TREE_STRIDE, LANDSAT_STRIDE], "seed": SEED})


# --- where each class is pure -------------------------------------------------------------------------------------

def tree_classes(tile: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """{'crown', 'shadow', 'ground': bool (H, W)} of a NEON tile uint8 (3, H, W) with its boxes float (N, 4) xyxy px."""
    _, height, width = tile.shape
    crown, near = np.zeros((height, width), dtype=bool), np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in change.pixel_boxes(boxes, width, height):
        crown[y0:y1, x0:x1] |= change.ellipse(x1 - x0, y1 - y0)
        near[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = True
    luminance = np.tensordot(np.array([0.299, 0.587, 0.114]), tile.astype(np.float64), 1)  # (H, W)
    smooth = ndimage.uniform_filter(luminance, SMOOTH)  # (H, W)
    return {"crown": crown, "shadow": ~near & (smooth < DARK), "ground": ~near & (smooth > BRIGHT)}


def landsat_rgb(bands: np.ndarray) -> np.ndarray:
    """The Landsat tile's bands (H, W, 6) -> true colour uint8 (3, H, W), each band stretched linearly between its
    STRETCH percentiles over the whole tile."""
    rgb = bands[..., list(LANDSAT_RGB)].astype(np.float64)  # (H, W, 3)
    lo, hi = np.percentile(rgb, STRETCH, axis=(0, 1))  # (3,), (3,)
    return (np.clip((rgb - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8).transpose(2, 0, 1)


def landsat_classes(bands: np.ndarray) -> dict[str, np.ndarray]:
    """{'water', 'built-up': bool (H, W)} of the Landsat tile's bands (H, W, 6) by NDWI and NDVI (module docstring)."""
    red, green, nir = (bands[..., k].astype(np.float64) for k in (LANDSAT_RGB[0], LANDSAT_RGB[1], LANDSAT_NIR))
    ndwi = (green - nir) / np.maximum(green + nir, 1)  # (H, W)
    ndvi = (nir - red) / np.maximum(nir + red, 1)  # (H, W)
    return {"water": ndwi > WATER_NDWI, "built-up": (ndvi < BUILT_NDVI) & (ndwi < BUILT_NDWI)}


def pure_windows(mask: np.ndarray, y0: int, y1: int, stride: int) -> np.ndarray:
    """int64 (M, 2) (x, y) top-left corners, on a `stride` px grid, of the PATCH px windows lying wholly in rows
    [y0, y1) whose every pixel is True in `mask` (H, W); counted with an integral image."""
    inside = np.zeros(mask.shape, dtype=np.int64)
    inside[y0:y1] = mask[y0:y1]
    table = np.pad(inside.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (H + 1, W + 1)
    sums = table[PATCH:, PATCH:] - table[:-PATCH, PATCH:] - table[PATCH:, :-PATCH] + table[:-PATCH, :-PATCH]
    ys, xs = np.nonzero(sums[::stride, ::stride] == PATCH * PATCH)
    return np.stack([xs * stride, ys * stride], 1).astype(np.int64).reshape(-1, 2)


def banks() -> tuple[list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """(sources: uint8 (3, H, W) tiles, {split: {class: int64 (M, 3) rows (source, x, y)}}): every pure window."""
    sources: list[np.ndarray] = []
    found: dict[str, dict[str, list[np.ndarray]]] = {s: {c: [] for c in CLASSES} for s in ("train", "test")}

    def add(tile: np.ndarray, classes: dict[str, np.ndarray], regions: dict[str, tuple[int, int]], stride: int):
        for split, (y0, y1) in regions.items():
            for name, mask in classes.items():
                at = pure_windows(mask, y0, y1, stride)  # (M, 2)
                found[split][name].append(np.concatenate([np.full((len(at), 1), len(sources)), at], 1))
        sources.append(tile)

    with zipfile.ZipFile(trees.wheel_path()) as wheel:
        for stem in trees.TILES:
            tile = decode_bytes(wheel.read(f"deepforest/data/{stem}.png"), f"{wheel.filename}:{stem}.png").numpy()
            add(tile, tree_classes(tile, trees.tile_boxes(wheel, stem)), change.regions(tile.shape[1]), TREE_STRIDE)
    bands = landsat_bands()
    split_y = bands.shape[0] - max(1, round(TEST_FRACTION * bands.shape[0]))
    add(landsat_rgb(bands), landsat_classes(bands), {"train": (0, split_y), "test": (split_y, bands.shape[0])},
        LANDSAT_STRIDE)
    out = {s: {c: np.concatenate(found[s][c]).astype(np.int64) for c in CLASSES} for s in found}
    for split, per_class in out.items():
        empty = [c for c, rows in per_class.items() if len(rows) == 0]
        if empty:
            raise SelfsupError(f"no pure {PATCH} px window of {', '.join(empty)} in the {split} region of the tiles: "
                               "remove the DeepForest wheel and the Landsat tile and run `bash scripts/setup.sh`")
    return sources, out


def landsat_bands() -> np.ndarray:
    """uint8 (H, W, 6) of CACHE/landsat/L7_ETMs.tif; SelfsupError naming scripts/setup.sh when it is missing."""
    folder = cache_root() / "landsat"
    if not (folder / LANDSAT_FILE).is_file():
        raise SelfsupError(LANDSAT_MISSING.format(dir=folder).replace(", or pass a folder of TIFF tiles", "")
                           + f" (rs-mosaics cuts its water and built-up textures from it; same {CACHE_ENV})")
    return np.asarray(tifffile.imread(folder / LANDSAT_FILE))


# --- drawing ------------------------------------------------------------------------------------------------------

def voronoi(rng: np.random.Generator) -> np.ndarray:
    """int64 (CANVAS, CANVAS): each pixel's nearest of K (CELLS) seeds drawn uniformly on the canvas, 0..K-1."""
    count = int(rng.integers(CELLS[0], CELLS[1] + 1))
    seeds = rng.uniform(0, CANVAS, (count, 2))  # (K, 2) x, y
    centres = np.arange(CANVAS) + 0.5  # (S,)
    distance = (centres[None, None, :] - seeds[:, 0, None, None]) ** 2 \
        + (centres[None, :, None] - seeds[:, 1, None, None]) ** 2  # (K, S, S)
    return distance.argmin(0)


def quilt(sources: list[np.ndarray], bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (3, CANVAS, CANVAS): a grid of PATCH px patches, offset by a random 0..PATCH-1 px, each drawn uniformly
    from `bank` int64 (M, 3) (source, x, y)."""
    side = CANVAS + PATCH
    cells = side // PATCH
    picks = bank[rng.integers(len(bank), size=cells * cells)]  # (cells², 3)
    out = np.empty((3, side, side), dtype=np.uint8)
    for k, (s, x, y) in enumerate(picks):
        r, c = divmod(k, cells)
        out[:, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = sources[s][:, y:y + PATCH, x:x + PATCH]
    dx, dy = (int(v) for v in rng.integers(PATCH, size=2))
    return out[:, dy:dy + CANVAS, dx:dx + CANVAS]


def mosaic(sources: list[np.ndarray], bank: dict[str, np.ndarray], rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One image: (uint8 (3, CANVAS, CANVAS), semantic uint8 (CANVAS, CANVAS) 1-based, its classes 1-based)."""
    cells = voronoi(rng)  # (S, S)
    classes = rng.choice(len(CLASSES), size=int(cells.max()) + 1, replace=False)  # (K,) one class per cell
    image = np.empty((3, CANVAS, CANVAS), dtype=np.uint8)
    semantic = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    for cell, c in enumerate(classes):
        inside = cells == cell  # (S, S)
        image[:, inside] = quilt(sources, bank[CLASSES[c]], rng)[:, inside]
        semantic[inside] = c + 1
    return image, semantic, sorted(int(c) for c in np.unique(semantic))


def build() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[dict]], dict[str, dict[str, int]]]:
    """Generate rs-mosaics: ({split: (images, semantic)}, {split: [{classes}]}, {split: {class: pure windows}})."""
    sources, bank = banks()
    arrays, meta = {}, {}
    for k, (split, size) in enumerate(SIZES.items()):
        rng = np.random.default_rng([SEED, k])
        drawn = [mosaic(sources, bank[split], rng) for _ in range(size)]
        arrays[split] = (np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn]))
        meta[split] = [{"classes": d[2]} for d in drawn]
    return arrays, meta, {s: {c: len(rows) for c, rows in bank[s].items()} for s in bank}


def _save(root: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict[str, list[dict]],
          counts: dict[str, dict[str, int]]) -> None:
    """Write the mosaics through a temporary folder renamed into place after its manifest is written; a cache that
    cannot be written is a warning (the next load generates again), never an error."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        log.warning("cannot cache rs-mosaics in %s (%s): set %s to a writable folder", root, e.strerror, CACHE_ENV)
        return
    try:
        saved = all(save_array(temp / f"{split}_{key}.npy", array, f"rs-mosaics' {split} {key}")
                    for split, pair in arrays.items() for key, array in zip(("images", "semantic"), pair))
        if saved:
            write_cache(temp / MANIFEST, recipe(), {"images": meta, "pure_windows": counts})
            if (temp / MANIFEST).is_file():
                move_into_place(temp, root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
