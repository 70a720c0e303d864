"""Change-detection pairs: the built-in `rs-change` (synthetic change on the real DeepForest tiles of `--data trees`)
and a user's folder in the LEVIR-CD layout.

rs-change (DATA.md, "Change pairs from real airborne tiles"; labels synthetic, images real). For each of the four
NEON tiles of trees.TILES (10 cm per pixel) and each of REALISATIONS seeded draws:
- time 1 is the tile as it is; time 2 is the tile with edits confined to one split region at a time:
  REMOVE_FRACTION of the region's boxed crowns removed (their pixels replaced by a same-sized patch of crown-free
  ground of the same region: no box, dilated by MARGIN px, touches the patch) and as many crowns added (the pixels of
  a randomly chosen crown of the region copied onto crown-free ground of the region, MARGIN px clear of every box and
  of earlier edits). The boxes are DeepForest's real annotations; the crown inside a box is taken to be the ellipse
  inscribed in it (a choice: the boxes carry no outline). Only the ellipse pixels are edited, with hard edges, and the
  change mask is exactly the union of the edited ellipses. A crown whose search for ground fails (ATTEMPTS random
  places) is left alone, and an addition with no free room is not made; the manifest counts the edits made.
- the pairs are CROP x CROP px crops (128 px = 12.8 m: about three median crowns of ~40 px) on a grid of pitch
  CROP + 2 * SHIFT px inside each region, so every crop has a SHIFT px gutter on each side that no other crop uses;
- nuisance change on the time-2 crop only: misregistration (cut at an integer offset dx, dy in [-SHIFT, SHIFT] px,
  inside the crop's own gutter), Gaussian blur (probability BLUR_P, sigma uniform in BLUR_SIGMA px), gamma (log-uniform
  in [1/GAMMA, GAMMA]) and a colour shift (a gain per channel uniform in 1 +- GAIN). The mask stays in time 1's frame,
  so a time-2 edit appears up to SHIFT px off its mask, as misregistered real pairs do.

Split by region, as `trees` splits (trees.split_row on its 200 px grid): per tile, the rows y >= the trees split line
are `test`, those above `train`; the edits of a region take their ground and crowns from that region only, and its
crops lie inside it, so no pixel of a test pair (either time) comes from the train region and vice versa. The test
region is also the region `trees` holds out, so an encoder pretrained on `--data trees` never saw a test pair's
pixels. Train: 315 crop places x 2 draws = 630 pairs; test: 66 x 2 = 132 (see the module's tests).

Generated once into CACHE/rs-change-v1/ ({split}_a.npy, {split}_b.npy uint8 (N, 3, CROP, CROP), {split}_mask.npy
uint8 (N, CROP, CROP) 0/1, manifest.json written last with each pair's tile, draw, place and nuisance parameters).

A user's folder (LEVIR-CD layout): DIR/A/<name>.<ext> (time 1), DIR/B/<name>.<ext> (time 2), DIR/label/<name>.<ext>
(change mask: any non-zero pixel is change, 0 no change; LEVIR writes 255), matched by file stem; images PNG/JPG/...
decoded as RGB, or TIFF tiles (every A and B file .tif/.tiff) read band by band with data.tiff (non-uint8 bands
stretched with one stretch measured on A and B together). Splits: DIR/train/{A,B,label} with DIR/test/ (or val/)
alike, else a seeded 80/20 split of DIR's pairs by name (dense_folder.random_split). A name missing from one of the
three folders, or whose three files differ in size, is skipped and counted in one logged line; no usable pair at all
is a SelfsupError.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from selfsup.errors import SelfsupError

from . import trees
from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from .dense_folder import random_split
from .folder import BadImageError, decode_bytes, decode_image, walk_images
from .open import existing_folder, held_out_folder
from .tiff import is_tiff, open_tiffs, tiff_header

log = logging.getLogger(__name__)

CHANGE_BUILTIN = ("rs-change",)
CROP = 128  # px side of a pair: 12.8 m at 10 cm per pixel
SHIFT = 2  # px of misregistration at most, each axis; also the gutter around every crop
REALISATIONS = 2  # seeded draws of time 2 per tile
REMOVE_FRACTION = 0.2  # of the boxed crowns lying wholly in a region, removed per draw; as many are added
MARGIN = 3  # px that crown-free ground and an added crown keep from every box and earlier edit
ATTEMPTS = 200  # random places tried for a patch of ground or an added crown
GAMMA, GAIN = 1.3, 0.1  # time 2: gamma log-uniform in [1/GAMMA, GAMMA], per-channel gain uniform in 1 +- GAIN
BLUR_P, BLUR_SIGMA = 0.5, (0.5, 1.5)  # time 2: Gaussian blur with this probability, sigma uniform (px)
SEED = 0
FOLDER = "rs-change-v1"
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete
LAYOUT = "DIR/A/<name>.png, DIR/B/<name>.png and DIR/label/<name>.png (or DIR/train/... with DIR/test/...)"


@dataclass
class ChangeSet(Dataset):
    """`set[i]` -> (time 1 uint8 (C, H, W), time 2 uint8 (C, H, W), change mask uint8 (H, W), 1 = change, 0 not).

    name: what logs call it; tag: 'synthetic' (rs-change: synthetic labels on real images) or 'real' (a user's
    folder); channels: C; native_size: the side of square pairs of one size, else None."""

    name: str
    tag: str
    channels: int
    native_size: int | None = None
    skipped: int = field(default=0)  # a folder's names skipped (missing partner or sizes that differ)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ArrayPairs(ChangeSet):
    """rs-change pairs held in arrays a, b uint8 (N, 3, CROP, CROP) and masks uint8 (N, CROP, CROP); `pairs[i]`
    says where pair i comes from (tile, draw, x, y of time 1 in the tile, px) and its nuisance (dx, dy, gamma, gains,
    blur sigma)."""

    def __init__(self, split: str, a: np.ndarray, b: np.ndarray, masks: np.ndarray, pairs: list[dict]):
        super().__init__(name=f"rs-change/{split}", tag="synthetic", channels=3, native_size=CROP)
        self.a, self.b, self.masks, self.pairs = a, b, masks, pairs

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.array(self.a[i])), torch.from_numpy(np.array(self.b[i])),
                torch.from_numpy(np.array(self.masks[i])))


def open_change(spec: str | os.PathLike, split: str = "train") -> ChangeSet:
    """The `split` ('train' | 'test') of change pairs: 'rs-change' or a folder in the LEVIR-CD layout (see the module
    docstring). Raises SelfsupError naming what to pass for an unknown split, a missing folder, a folder without
    A/, B/ and label/, or one without a usable pair."""
    spec = os.fspath(spec)
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}': pass 'train' or 'test'")
    if spec == "rs-change":
        return load_rs_change(split)
    return open_change_folder(spec, split)


# --- rs-change -------------------------------------------------------------------------------------------------

def load_rs_change(split: str) -> ArrayPairs:
    """rs-change's `split`, generated from DeepForest's wheel once and then read from CACHE/rs-change-v1.
    Raises SelfsupError when the wheel is missing (run `bash scripts/setup.sh`)."""
    root = cache_root() / FOLDER
    data = read_cache(root / MANIFEST, recipe())
    if data is not None:
        try:
            arrays = [np.load(root / f"{split}_{k}.npy", mmap_mode="r") for k in ("a", "b", "mask")]
            return ArrayPairs(split, *arrays, data["pairs"][split])
        except (OSError, ValueError):  # unreadable or truncated: generate again and rewrite the cache
            pass
    arrays, pairs = build()
    _save(root, arrays, pairs)
    return ArrayPairs(split, *arrays[split], pairs[split])


def recipe() -> str:
    """The key of the cache: what the pairs depend on."""
    return json.dumps({"trees": trees.recipe(), "crop": CROP, "shift": SHIFT, "draws": REALISATIONS,
                       "remove": REMOVE_FRACTION, "margin": MARGIN, "attempts": ATTEMPTS, "gamma": GAMMA,
                       "gain": GAIN, "blur": [BLUR_P, *BLUR_SIGMA], "seed": SEED})


def regions(height: int) -> dict[str, tuple[int, int]]:
    """{'train': (y0, y1), 'test': (y0, y1)}: the rows of a tile `height` px high on either side of `trees`' split
    line (the bottom crop rows of its 200 px grid are test; the strip below its last whole row is test too)."""
    split_y = trees.split_row(height // trees.CROP) * trees.CROP
    return {"train": (0, split_y), "test": (split_y, height)}


def crop_places(y0: int, y1: int, width: int) -> list[tuple[int, int]]:
    """(x, y) top-left corners of the CROP px crops in rows [y0, y1) of a tile `width` px wide: a grid of pitch
    CROP + 2 * SHIFT, each crop SHIFT px inside its cell so that a time-2 crop shifted by up to SHIFT stays there."""
    pitch = CROP + 2 * SHIFT
    return [(SHIFT + c * pitch, y0 + SHIFT + r * pitch) for r in range((y1 - y0) // pitch)
            for c in range(width // pitch)]


def ellipse(w: int, h: int) -> np.ndarray:
    """bool (h, w): the pixels whose centres lie in the ellipse inscribed in a w x h px box."""
    y = (np.arange(h) + 0.5 - h / 2) / (h / 2)  # (h,)
    x = (np.arange(w) + 0.5 - w / 2) / (w / 2)  # (w,)
    return y[:, None] ** 2 + x[None, :] ** 2 <= 1


@dataclass
class _Free:
    """Which pixels may take ground or an added crown: bool (H, W) of the blocked ones."""

    blocked: np.ndarray  # bool (H, W)

    def clear(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Whether no blocked pixel lies in [x0, x1) x [y0, y1), widened by MARGIN px."""
        return not self.blocked[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN].any()

    def block(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.blocked[y0:y1, x0:x1] = True


def pixel_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """float boxes (N, 4) xyxy px -> int64 (N, 4) the whole pixels they touch, clipped to the tile."""
    out = np.stack([np.floor(boxes[:, 0]), np.floor(boxes[:, 1]), np.ceil(boxes[:, 2]), np.ceil(boxes[:, 3])], 1)
    out = out.astype(np.int64).reshape(-1, 4)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def edit_region(tile: np.ndarray, edited: np.ndarray, mask: np.ndarray, boxes: np.ndarray, y0: int, y1: int,
                rng: np.random.Generator) -> list[dict]:
    """Remove and add crowns in rows [y0, y1) of `edited` (uint8 (3, H, W), a copy of time 1 `tile`), marking every
    edited pixel in `mask` (bool (H, W)); `boxes` int64 (N, 4) are all the tile's crowns in whole pixels. Ground and
    copied crowns come from time 1 in the same rows. Returns the edits: {kind: 'removed' | 'added', box: [x0, y0, x1,
    y1] edited, source: [x0, y0, x1, y1] copied from}."""
    _, height, width = tile.shape
    crowns = np.zeros((height, width), dtype=bool)
    for x0, by0, x1, by1 in boxes:
        crowns[by0:by1, x0:x1] = True
    outside = np.ones((height, width), dtype=bool)
    outside[y0:y1] = False  # ground and added crowns stay in the region
    ground = _Free(crowns | outside)  # crown-free ground to fill a removed crown with
    room = _Free(ground.blocked.copy())  # where a crown may be added: no crown, no earlier edit
    inside = boxes[(boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)]  # (M, 4) crowns wholly in the region
    count = round(REMOVE_FRACTION * len(inside))
    edits: list[dict] = []
    for box in inside[rng.permutation(len(inside))]:  # removals: each crown in turn until `count` are done
        if sum(e["kind"] == "removed" for e in edits) == count:
            break
        place = _find(ground, box[2] - box[0], box[3] - box[1], y0, y1, width, rng)
        if place is not None:
            edits.append(_paste(tile, edited, mask, place, box, "removed"))
    added = 0
    for _ in range(count * 4):  # additions: a random crown of the region onto free room, `count` times at most
        if added == count or len(inside) == 0:
            break
        source = inside[rng.integers(len(inside))]
        place = _find(room, source[2] - source[0], source[3] - source[1], y0, y1, width, rng)
        if place is not None:
            box = np.array([place[0], place[1], place[2], place[3]])
            edits.append(_paste(tile, edited, mask, source, box, "added"))
            room.block(*box.tolist())
            added += 1
    return edits


def _find(free: _Free, w: int, h: int, y0: int, y1: int, width: int, rng: np.random.Generator
          ) -> tuple[int, int, int, int] | None:
    """A random w x h place in rows [y0, y1) that `free` says is clear, or None after ATTEMPTS tries."""
    if y1 - y0 < h + 2 * MARGIN or width < w + 2 * MARGIN:
        return None
    for _ in range(ATTEMPTS):
        x = int(rng.integers(MARGIN, width - w - MARGIN + 1))
        y = int(rng.integers(y0 + MARGIN, y1 - h - MARGIN + 1))
        if free.clear(x, y, x + w, y + h):
            return x, y, x + w, y + h
    return None


def _paste(tile: np.ndarray, edited: np.ndarray, mask: np.ndarray, source, box, kind: str) -> dict:
    """Copy time 1's pixels in the ellipse of `source` onto the ellipse of `box` (same size) in `edited`; mark it."""
    sx0, sy0, sx1, sy1 = (int(v) for v in source)
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = ellipse(x1 - x0, y1 - y0)  # (h, w)
    edited[:, y0:y1, x0:x1][:, inside] = tile[:, sy0:sy1, sx0:sx1][:, inside]
    mask[y0:y1, x0:x1] |= inside
    return {"kind": kind, "box": [x0, y0, x1, y1], "source": [sx0, sy0, sx1, sy1]}


def nuisance(rng: np.random.Generator) -> dict:
    """One time-2 crop's nuisance parameters: dx, dy (px), gamma, gains (per channel), blur sigma (px, 0 = none)."""
    dx, dy = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, 2))
    gamma = float(math.exp(rng.uniform(-math.log(GAMMA), math.log(GAMMA))))
    gains = [round(float(g), 4) for g in rng.uniform(1 - GAIN, 1 + GAIN, 3)]
    sigma = float(rng.uniform(*BLUR_SIGMA)) if rng.random() < BLUR_P else 0.0
    return {"dx": dx, "dy": dy, "gamma": round(gamma, 4), "gains": gains, "blur": round(sigma, 4)}


def apply_nuisance(crop: np.ndarray, params: dict) -> np.ndarray:
    """uint8 (3, h, w) -> uint8 (3, h, w): Gaussian blur (params['blur'] px, none when 0), then gamma, then the
    per-channel gains, clipped to [0, 255] and rounded."""
    x = torch.from_numpy(crop).float() / 255  # (3, h, w)
    if params["blur"] > 0:
        kernel = 2 * math.ceil(3 * params["blur"]) + 1
        x = TF.gaussian_blur(x, [kernel, kernel], [params["blur"], params["blur"]])
    x = x.clamp(0, 1) ** params["gamma"] * torch.tensor(params["gains"])[:, None, None]
    return (x * 255).clamp(0, 255).round().to(torch.uint8).numpy()


def tile_pairs(tile: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, with_nuisance: bool = True
               ) -> dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[dict], list[dict]]]:
    """One draw of time 2 for `tile` (uint8 (3, H, W)) with its crowns `boxes` (float (N, 4) xyxy px): per split,
    (time-1 crops, time-2 crops, masks uint8 (CROP, CROP), [{x, y, nuisance} per crop], the region's edits). with_nuisance
    False leaves time 2 registered and unaltered outside the edits (for tests)."""
    _, height, width = tile.shape
    edited, mask = tile.copy(), np.zeros((height, width), dtype=bool)
    whole = pixel_boxes(boxes, width, height)
    out = {}
    for split, (y0, y1) in regions(height).items():
        edits = edit_region(tile, edited, mask, whole, y0, y1, rng)
        a, b, m, meta = [], [], [], []
        for x, y in crop_places(y0, y1, width):
            params = nuisance(rng) if with_nuisance else {"dx": 0, "dy": 0, "gamma": 1.0, "gains": [1.0] * 3,
                                                          "blur": 0.0}
            dx, dy = params["dx"], params["dy"]
            later = edited[:, y + dy:y + dy + CROP, x + dx:x + dx + CROP]
            a.append(tile[:, y:y + CROP, x:x + CROP])
            b.append(apply_nuisance(later, params) if with_nuisance else later.copy())
            m.append(mask[y:y + CROP, x:x + CROP].astype(np.uint8))
            meta.append({"x": x, "y": y, **params})
        out[split] = (a, b, m, meta, edits)
    return out


def build() -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, list[dict]]]:
    """Generate rs-change: ({split: (a, b, masks)}, {split: [pair meta]}) from the tiles of DeepForest's wheel."""
    parts: dict[str, list[list[np.ndarray]]] = {s: [[], [], []] for s in ("train", "test")}
    pairs: dict[str, list[dict]] = {"train": [], "test": []}
    with zipfile.ZipFile(trees.wheel_path()) as wheel:
        for t, stem in enumerate(trees.TILES):
            tile = decode_bytes(wheel.read(f"deepforest/data/{stem}.png"), f"{wheel.filename}:{stem}.png").numpy()
            boxes = trees.tile_boxes(wheel, stem)
            for draw in range(REALISATIONS):
                rng = np.random.default_rng([SEED, t, draw])
                for split, (a, b, m, meta, edits) in tile_pairs(tile, boxes, rng).items():
                    for k, part in enumerate((a, b, m)):
                        parts[split][k] += part
                    removed = sum(e["kind"] == "removed" for e in edits)
                    pairs[split] += [{"tile": stem, "draw": draw, **p, "region_removed": removed,
                                      "region_added": len(edits) - removed} for p in meta]
    arrays = {s: tuple(np.stack(parts[s][k]) for k in range(3)) for s in parts}
    return arrays, pairs


def _save(root: Path, arrays: dict[str, tuple[np.ndarray, ...]], pairs: dict[str, list[dict]]) -> None:
    """Write the pairs into `root` through a temporary folder renamed into place after its manifest is written; a
    cache that cannot be written is a warning (the next load generates again), never an error."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        log.warning("cannot cache rs-change in %s (%s): set %s to a writable folder", root, e.strerror, CACHE_ENV)
        return
    try:
        for split, (a, b, m) in arrays.items():
            for key, array in (("a", a), ("b", b), ("mask", m)):
                with open(temp / f"{split}_{key}.npy", "wb") as f:
                    np.save(f, array)
        write_cache(temp / MANIFEST, recipe(), {"pairs": pairs})
        if (temp / MANIFEST).is_file():
            move_into_place(temp, root)
    except OSError as e:
        log.warning("cannot cache rs-change in %s (%s): set %s to a writable folder", root, e.strerror, CACHE_ENV)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- a user's folder (LEVIR-CD layout) ---------------------------------------------------------------------------

class FolderPairs(ChangeSet):
    """Pairs read from files on access: (time 1 uint8 (C, H, W), time 2 uint8 (C, H, W), mask uint8 (H, W) 0/1).
    `names[i]` is pair i's file stem. TIFF pairs are read through one TiffImageSet of every A then every B file.
    Raises BadImageError naming the file when one cannot be decoded."""

    def __init__(self, name: str, names: list[str], a: list[str], b: list[str], labels: list[str],
                 channels: int, native_size: int | None, skipped: int, tiffs=None):
        super().__init__(name=name, tag="real", channels=channels, native_size=native_size, skipped=skipped)
        self.names, self.a, self.b, self.labels, self.tiffs = names, a, b, labels, tiffs

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.tiffs is not None:
            first, second = self.tiffs[i][0], self.tiffs[len(self.names) + i][0]
        else:
            first, second = decode_image(self.a[i]), decode_image(self.b[i])
        return first, second, read_label(self.labels[i])


def read_label(path: str) -> torch.Tensor:
    """uint8 (H, W): 1 where the label image `path` is non-zero (any band), else 0; BadImageError if unreadable."""
    try:
        if is_tiff(path):
            import tifffile

            values = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as img:
                values = np.asarray(img.convert("L") if img.mode not in ("L", "1", "P", "I", "I;16") else img)
    except Exception as e:  # whatever a decoder raises on a user's file, the file is what is wrong
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadImageError(f"cannot decode label '{path}': {reason}; remove or fix the file", path, reason) from None
    if values.ndim == 3:  # (H, W, bands): change where any band is set
        values = values.any(axis=-1)
    return torch.from_numpy((values != 0).astype(np.uint8))


def open_change_folder(spec: str, split: str) -> FolderPairs:
    """The `split` of a LEVIR-CD-layout folder (module docstring). Raises SelfsupError for a missing folder, missing
    A/, B/ or label/, mixed TIFF and other files, or no usable pair; logs one line counting skipped names."""
    root = existing_folder(spec, CHANGE_BUILTIN, "change pairs (A/, B/, label/)")
    held_out = held_out_folder(root)
    if held_out is not None:
        folder = os.path.join(root, "train" if split == "train" else held_out)
        names, files, skipped = _matched(folder)
        return _pairs(f"{spec}/{split}", names, files, skipped)
    names, files, skipped = _matched(root)
    return _pairs(f"{spec}/{split}", random_split(names)[split], files, skipped)


def _matched(folder: str) -> tuple[list[str], dict[str, dict[str, str]], int]:
    """(sorted names with all three files of one size, {name: {A, B, label: path}}, names skipped)."""
    found = {}
    for part in ("A", "B", "label"):
        path = os.path.join(folder, part)
        if not os.path.isdir(path):
            raise SelfsupError(f"'{folder}' has no {part}/ folder: lay change pairs out as {LAYOUT}")
        paths, _ = walk_images(path)
        found[part] = {os.path.splitext(os.path.relpath(p, path))[0]: p for p in paths}
    names = sorted(set().union(*found.values()))
    complete = [n for n in names if all(n in found[p] for p in found)]
    missing = len(names) - len(complete)
    kept = [n for n in complete if len({_size(found[p][n]) for p in found}) == 1]
    unequal = len(complete) - len(kept)
    if missing or unequal:
        example = next(n for n in names if n not in kept)
        log.warning("%s: skipped %d of %d names (%d missing from A/, B/ or label/, %d whose files differ in size or "
                    "cannot be read), e.g. '%s'", folder, missing + unequal, len(names), missing, unequal, example)
    if not kept:
        raise SelfsupError(f"'{folder}' holds no usable pair (a name in A/, B/ and label/ with files of one size): "
                           f"lay change pairs out as {LAYOUT}")
    return kept, {n: {p: found[p][n] for p in found} for n in kept}, missing + unequal


def _size(path: str) -> tuple[int, int] | None:
    """(W, H) from the file's header, or None when it cannot be read (such a name is skipped)."""
    try:
        if is_tiff(path):
            header = tiff_header(path)
            return header.width, header.height
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - an unreadable file makes its name unusable, counted as skipped
        return None


def _pairs(name: str, names: list[str], files: dict[str, dict[str, str]], skipped: int) -> FolderPairs:
    a, b = [files[n]["A"] for n in names], [files[n]["B"] for n in names]
    labels = [files[n]["label"] for n in names]
    tiff = [is_tiff(p) for p in a + b]
    if any(tiff) and not all(tiff):
        raise SelfsupError(f"{name} mixes TIFF and other image files in A/ and B/: pass pairs of one kind")
    sizes = {_size(p) for p in a}
    side = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else None
    if all(tiff) and a:
        tiffs = open_tiffs(a + b, name=name)
        return FolderPairs(name, names, a, b, labels, tiffs.channels, side, skipped, tiffs)
    return FolderPairs(name, names, a, b, labels, 3, side, skipped)
