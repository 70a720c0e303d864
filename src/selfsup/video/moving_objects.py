"""The built-in synthetic video set `moving-objects` (DATA.md, "Moving objects on real video"): a Fashion-MNIST
object moving in a straight line over a crop of a real clip, with known trajectory. Tag "synthetic".

How a clip is made (sizes in pixels of the S x S frames, S = 64; T = 32 frames):
- background: T consecutive frames of one of the built-in real clips (data/video.py), decoded at 64 px on the
  shorter side, an S x S window at a random place, maybe mirrored. Train and test clips use DIFFERENT videos
  (TRAIN_VIDEOS / TEST_VIDEOS), so test backgrounds are unseen;
- object: a Fashion-MNIST image (train split for train clips, test split for test clips) resized to 24-32 px, its
  mask the resized image's grey > 10; its pixels the grey level times a random colour (each channel 0.5-1);
- motion: one of MOTIONS (right, left, down, up) at 0.6-1.1 px per frame, from a start drawn so that the object
  stays wholly inside the frame the whole clip (position rounded to whole pixels each frame).
Labels: per clip the object's class (10 Fashion-MNIST classes) and the motion class (4); per frame the object's
mask (T, S, S) and box (x1, y1, x2, y2), x2/y2 exclusive, in pixels.

Sizes: SIZES (400 train + 100 test clips), generated once, seeded (the same bytes every time) into
CACHE/moving-objects-v1/ (CACHE being $SELFSUP_CACHE or ~/.cache/selfsup) in a temporary folder renamed into place
after its manifest.json (written last) is there; 200 MB (the frames: 393 KB a clip), memory-mapped when read.
Needs the built-in clips (`bash scripts/setup.sh`) and Fashion-MNIST (Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from selfsup.data.builtin import BUILTIN, load_builtin
from selfsup.data.cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from selfsup.data.video import builtin_clip_paths, video_frames
from selfsup.errors import SelfsupError

S = 64  # frame side
T = 32  # frames per clip: holds two clips of 8 frames at stride 2 (15 frames each) that do not overlap
VERSION = 1  # the folder is moving-objects-v<VERSION>: bump when the recipe changes
SIZES = {"train": 400, "test": 100}
SEEDS = {"train": 2101, "test": 2102}
MOTIONS = ("right", "left", "down", "up")
DIRECTIONS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)  # (x, y) per motion class
OBJECT_SIDE = (20, 28)  # pixels, both ends included
SPEED = (0.6, 1.1)  # pixels per frame
THRESHOLD = 10  # grey level over which a Fashion-MNIST pixel is object
BACKGROUND_SIDE = 64  # shorter side the real clips are decoded at for the backgrounds
TRAIN_VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi", "box.mp4", "cup.mp4", "bikes.mp4")
TEST_VIDEOS = ("bigbuckbunny.mp4", "carphone_pristine.mp4")
MANIFEST = "manifest.json"


@dataclass
class MovingObjects:
    """One split. frames uint8 (N, T, S, S, 3) (memory-mapped); masks bool (N, T, S, S); boxes float32 (N, T, 4)
    (x1, y1, x2, y2) in pixels, x2/y2 exclusive; objects int64 (N,) Fashion-MNIST class; motions int64 (N,) index
    into MOTIONS; object_classes / motion_classes their names."""

    name: str
    frames: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    objects: np.ndarray
    motions: np.ndarray
    object_classes: list[str]
    motion_classes: list[str]

    def __len__(self) -> int:
        return len(self.frames)

    def clip(self, i: int) -> torch.Tensor:
        """uint8 (T, S, S, 3), clip i."""
        return torch.from_numpy(np.array(self.frames[i]))  # a copy: the memory-mapped file is read-only


def load_moving_objects(split: str) -> MovingObjects:
    """`moving-objects`, split 'train' | 'test': generated on first use (see the module)."""
    if split not in SIZES:
        raise SelfsupError(f"unknown split '{split}' of moving-objects: pass 'train' or 'test'")
    root = cache_root() / f"moving-objects-v{VERSION}"
    key = _recipe()
    if read_cache(root / MANIFEST, key) is None:
        _generate(root, key)
        if read_cache(root / MANIFEST, key) is None:
            raise SelfsupError(f"cannot write moving-objects into '{root}': set {CACHE_ENV} to a writable folder")
    masks = np.load(root / f"{split}-masks.npy")
    return MovingObjects(
        name=f"moving-objects/{split}", frames=np.load(root / f"{split}-frames.npy", mmap_mode="r"),
        masks=np.unpackbits(masks, axis=-1, count=S).astype(bool), boxes=np.load(root / f"{split}-boxes.npy"),
        objects=np.load(root / f"{split}-objects.npy"), motions=np.load(root / f"{split}-motions.npy"),
        object_classes=list(BUILTIN["fashion-mnist"].classes), motion_classes=list(MOTIONS))


def _recipe() -> str:
    return json.dumps({"version": VERSION, "size": S, "frames": T, "sizes": SIZES, "seeds": SEEDS,
                       "object_side": OBJECT_SIDE, "speed": SPEED, "videos": [TRAIN_VIDEOS, TEST_VIDEOS]},
                      sort_keys=True)


def _generate(root: Path, key: str, backgrounds: dict[str, list[np.ndarray]] | None = None,
              sizes: dict[str, int] = SIZES) -> None:
    """Write both splits (`sizes` clips each) on `backgrounds` (default: the built-in clips TRAIN_VIDEOS /
    TEST_VIDEOS), then the manifest, into a temporary folder renamed to `root`."""
    if backgrounds is None:
        paths = {Path(p).name: p for p in builtin_clip_paths()}  # first: missing clips fail before any work
        backgrounds = {split: [video_frames(paths[name], BACKGROUND_SIDE) for name in names]
                       for split, names in (("train", TRAIN_VIDEOS), ("test", TEST_VIDEOS))}
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        raise SelfsupError(f"cannot write moving-objects into '{root}': {e.strerror}; set {CACHE_ENV} to a writable "
                           "folder") from None
    try:
        start = time.perf_counter()
        for split, n in sizes.items():
            objects = load_builtin("fashion-mnist", split)
            arrays = make_clips(n, SEEDS[split], backgrounds[split], objects.images[:, 0].numpy(),
                                objects.labels.numpy(), desc=f"moving-objects {split}")
            for k, array in arrays.items():
                np.save(temp / f"{split}-{k}.npy", np.packbits(array, axis=-1) if k == "masks" else array)
        write_cache(temp / MANIFEST, key, {"counts": sizes, "seeds": SEEDS, "size": S, "frames": T,
                                           "seconds": round(time.perf_counter() - start, 1),
                                           "videos": {"train": TRAIN_VIDEOS, "test": TEST_VIDEOS}})
        move_into_place(temp, root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def make_clips(n: int, seed: int, backgrounds: list[np.ndarray], objects: np.ndarray, labels: np.ndarray,
               desc: str = "", frames: int = T) -> dict[str, np.ndarray]:
    """n clips drawn from np.random.default_rng(seed): backgrounds uint8 (N_v, H, W, 3) videos (each with at least
    `frames` frames and sides >= S), objects uint8 (M, 28, 28) grey images with their classes `labels` (M,) ->
    {'frames' uint8 (n, frames, S, S, 3), 'masks' bool (n, frames, S, S), 'boxes' float32 (n, frames, 4),
    'objects' int64 (n,), 'motions' int64 (n,)}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {"frames": np.zeros((n, frames, S, S, 3), np.uint8), "masks": np.zeros((n, frames, S, S), bool),
           "boxes": np.zeros((n, frames, 4), np.float32), "objects": np.zeros(n, np.int64),
           "motions": np.zeros(n, np.int64)}
    for i in tqdm(range(n), desc=desc, unit="clip", leave=False, disable=None if desc else True):
        video = backgrounds[rng.integers(len(backgrounds))]
        t0 = rng.integers(len(video) - frames + 1)
        y0, x0 = rng.integers(video.shape[1] - S + 1), rng.integers(video.shape[2] - S + 1)
        clip = video[t0: t0 + frames, y0: y0 + S, x0: x0 + S].astype(np.float32)  # (frames, S, S, 3)
        if rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        j = rng.integers(len(objects))
        side = int(rng.integers(OBJECT_SIDE[0], OBJECT_SIDE[1] + 1))
        grey = np.asarray(Image.fromarray(objects[j]).resize((side, side), Image.BILINEAR), np.float32)  # (side, side)
        mask = grey > THRESHOLD
        pixels = grey[..., None] / 255 * rng.uniform(0.5, 1.0, 3) * 255  # (side, side, 3) tinted object
        motion = int(rng.integers(len(MOTIONS)))
        travel = rng.uniform(*SPEED) * (frames - 1) * DIRECTIONS[motion]  # (x, y) pixels over the clip
        lo = np.maximum(0, -travel)  # start so that start and start + travel both keep the object inside
        hi = np.minimum(S - side, S - side - travel)
        start = rng.uniform(lo, hi)
        for t in range(frames):
            x, y = np.rint(start + travel * t / (frames - 1)).astype(int)
            window = clip[t, y: y + side, x: x + side]
            window[mask] = pixels[mask]
            out["masks"][i, t, y: y + side, x: x + side] = mask
            ys, xs = np.nonzero(mask)
            out["boxes"][i, t] = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
        out["frames"][i] = np.clip(np.rint(clip), 0, 255).astype(np.uint8)
        out["objects"][i], out["motions"][i] = labels[j], motion
    return out
