"""The built-in synthetic dense sets `paste-scenes` (one object per image, 10-50 % of it) and `paste-scenes-multi`
(2-6 overlapping objects): Fashion-MNIST objects pasted onto crops of real photos and textures (DATA.md,
"Synthetic scenes"), with exact semantic maps, visible instance masks and boxes. Tag "synthetic".

How a scene is made (all sizes in pixels of the S x S image, S = 64):
- background: an S x S crop of a real image (scikit-image's shipped photos and textures, opencv-doc's example
  photos, DeepForest's airborne tiles), taken at one of three scales (the image's short side resized to 96, 192
  or 384), maybe mirrored;
- object: a Fashion-MNIST image (the train split's objects in the train scenes, the test split's in the test
  scenes), its mask the 28 x 28 threshold (grey > 10, holes filled), rotated by up to 30 degrees and scaled;
  the mask at S is the warped mask >= 0.5;
- size: paste-scenes' object covers COVERAGE (10-50 %) of the image, each of paste-scenes-multi's 2-6 objects
  MULTI_COVERAGE (4-16 %) before occlusion; every object lies wholly inside the image;
- tint: the object's pixels are a crop of ANOTHER real image than the background's, shaded by the object's
  own grey levels (x (0.5 + 0.5 grey)), then set to a mean brightness and a contrast drawn independently of the
  background's, which gets the same treatment: object and background pixels have one brightness distribution
  (a logistic regression or a 32-bin histogram rule on a pixel's grey level, fit on 1,000 train scenes, scores
  the majority rate on 1,000 test scenes, 72.9 % and 70.9 %, by saying "background" everywhere; the ROC AUC of
  grey level for object pixels is 0.52 and 0.51; tests/data/test_scenes.py checks a smaller version);
- feathering: pasted with alpha = the mask blurred by a Gaussian of sigma 0.6-1.2 px (blends over ~2-4 px);
  later objects occlude earlier ones; an instance whose visible part is under MIN_VISIBLE pixels is dropped from
  masks/boxes/labels and its few visible pixels are 255 (ignore) in the semantic map, neither object nor
  background.

Split: the train and test scenes use DIFFERENT source images (none shared; of opencv-doc's near-duplicate pairs
such as aloeL/aloeR only one image is used; see SKIMAGE, OPENCV, DEEPFOREST), so test backgrounds and tints are
unseen; objects come from Fashion-MNIST's own train/test split.

Sizes: SIZES (4,000 train + 1,000 test images per set). Generated once, seeded (SEEDS: the same bytes every time)
into CACHE/scenes/<name>-v1/ (CACHE being $SELFSUP_CACHE or ~/.cache/selfsup) in a temporary folder renamed into
place after its manifest.json (written last) is there; a folder without a valid manifest is regenerated.
Generation of both splits on one CPU core (measured here: about 2 ms per single-object scene, 4.5-6 ms per
multi-object scene, 4 s to load the sources) takes about 11-17 s for paste-scenes and 30-35 s for
paste-scenes-multi (up to twice that on cores shared with other work); each set's folder holds 79 MB. Loading
afterwards memory-maps the images and instance maps (the 1,000 test items read in under a second).

Needs opencv-doc's photos in CACHE/opencv-doc/ and DeepForest's wheel in CACHE/wheels/ (`bash scripts/setup.sh`
fetches both); without them generation raises SelfsupError.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from selfsup.errors import SelfsupError

from .builtin import BUILTIN, load_builtin
from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from .dense import DenseSet, DenseTarget

S = 64  # image side
VERSION = 1  # the folder is <name>-v<VERSION>: bump when the recipe changes
NAMES = ("paste-scenes", "paste-scenes-multi")
SIZES = {"train": 4000, "test": 1000}  # images per split, for each set
SEEDS = {("paste-scenes", "train"): 1701, ("paste-scenes", "test"): 1702,
         ("paste-scenes-multi", "train"): 1703, ("paste-scenes-multi", "test"): 1704}
MAX_OBJECTS = 6
COVERAGE = (0.10, 0.50)  # paste-scenes: the object's share of the image
MULTI_OBJECTS = (2, 6)  # paste-scenes-multi: objects pasted per image, both ends included
MULTI_COVERAGE = (0.04, 0.16)  # paste-scenes-multi: each object's share of the image before occlusion
MIN_VISIBLE = 20  # pixels: a less visible instance is dropped (and a Fashion-MNIST mask this small redrawn)
MARGIN = 5  # pixels around an object that its feathered edge may reach (the blur spans 4 at most)
THRESHOLD = 10  # grey level over which a Fashion-MNIST pixel is object
MAX_ROTATION = 30.0  # degrees
FEATHER = (0.6, 1.2)  # sigma of the alpha blur, pixels
SHADING = 0.5  # texture x (1 - SHADING + SHADING * grey)
BRIGHTNESS = (40.0, 215.0)  # mean grey level of a background or an object after tinting
CONTRAST = (0.6, 1.2)  # factor on a crop's deviations from its mean
LEVELS = (96, 192, 384)  # short side of each source image's resized copies
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
MANIFEST = "manifest.json"
SETUP = "bash scripts/setup.sh"

# The real images, each on one side of the split. skimage.data names (all load offline in scikit-image 0.26):
SKIMAGE = {"train": ("astronaut", "camera", "brick", "grass", "coins", "moon", "rocket", "hubble_deep_field",
                     "immunohistochemistry", "retina"),
           "test": ("chelsea", "coffee", "gravel", "page", "clock")}
# opencv-doc's examples/data photos (renders, logos, charts and the chessboard calibration shots left out):
OPENCV = {"train": ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
                    "building.jpg", "chicky_512.png", "ela_original.jpg", "graf1.png", "home.jpg",
                    "licenseplate_motion.jpg", "messi5.jpg", "rubberwhale1.png", "smarties.png", "starry_night.jpg",
                    "sudoku.png", "text_defocus.jpg"),
          "test": ("aero3.jpg", "box_in_scene.png", "butterfly.jpg", "fruits.jpg", "leuvenA.jpg", "orange.jpg",
                   "squirrel_cls.jpg", "stuff.jpg", "left.jpg")}
DEEPFOREST_WHEEL = "deepforest-2.1.0-py3-none-any.whl"
DEEPFOREST = {"train": ("2019_YELL_2_528000_4978000_image_crop2.png", "OSBS_029.png", "SOAP_031.png"),
              "test": ("2019_YELL_2_541000_4977000_image_crop.png", "SOAP_061.png")}


@dataclass(eq=False)
class SceneSet(DenseSet):
    """`set[i]` -> (uint8 image (3, S, S), DenseTarget with semantic, masks, boxes and labels).

    pixels: uint8 (N, 3, S, S); instances: uint8 (N, S, S), 0 = background, k = the k-th kept instance, 255 = a
    dropped instance's visible pixels; objects: uint8 (N, MAX_OBJECTS), the class (1-based) of instance k at
    column k-1, 0 after the last; pasted: uint8 (N,), how many objects were pasted before dropping.
    """

    pixels: np.ndarray | None = field(default=None, repr=False)
    instances: np.ndarray | None = field(default=None, repr=False)
    objects: np.ndarray | None = field(default=None, repr=False)
    pasted: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DenseTarget]:
        image = torch.from_numpy(np.array(self.pixels[i]))  # (3, S, S)
        return image, targets(np.array(self.instances[i]), self.objects[i])


def targets(instances: np.ndarray, objects: np.ndarray) -> DenseTarget:
    """One image's DenseTarget from its instance map uint8 (H, W) and its instance classes uint8 (K,) (0 = none)."""
    ids = torch.from_numpy(instances.astype(np.int64))  # (H, W)
    labels = torch.from_numpy(objects[objects > 0].astype(np.int64))  # (N,)
    masks = ids[None] == torch.arange(1, len(labels) + 1)[:, None, None]  # (N, H, W)
    lookup = torch.zeros(256, dtype=torch.int64)
    lookup[1:len(labels) + 1], lookup[255] = labels, 255
    return DenseTarget(semantic=lookup[ids], masks=masks, boxes=mask_boxes(masks), labels=labels)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """float32 (N, 4) xyxy of bool masks (N, H, W): x1, y1 the first pixel, x2, y2 one past the last."""
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    y1, x1 = rows.int().argmax(1), cols.int().argmax(1)
    y2 = masks.shape[1] - rows.flip(1).int().argmax(1)
    x2 = masks.shape[2] - cols.flip(1).int().argmax(1)
    return torch.stack([x1, y1, x2, y2], 1).float()


def load_scenes(name: str, split: str) -> SceneSet:
    """`paste-scenes` or `paste-scenes-multi`, split 'train' | 'test': generated on first use (see the module)."""
    if name not in NAMES:
        raise SelfsupError(f"unknown scene set '{name}': pass one of {', '.join(NAMES)}")
    if split not in SIZES:
        raise SelfsupError(f"unknown split '{split}' of {name}: pass 'train' or 'test'")
    root = cache_root() / "scenes" / f"{name}-v{VERSION}"
    key = _recipe(name)
    if read_cache(root / MANIFEST, key) is None:
        _generate(root, name, key)
        if read_cache(root / MANIFEST, key) is None:
            raise SelfsupError(f"cannot write the scenes into '{root}': set {CACHE_ENV} to a writable folder")
    return _open(root, name, split)


def _recipe(name: str) -> str:
    return json.dumps({"name": name, "version": VERSION, "size": S, "sizes": SIZES,
                       "seeds": {split: SEEDS[name, split] for split in SIZES}}, sort_keys=True)


def _open(root: Path, name: str, split: str) -> SceneSet:
    arrays = {k: np.load(root / f"{split}-{k}.npy", mmap_mode="r" if k in ("pixels", "instances") else None)
              for k in ("pixels", "instances", "objects", "pasted")}
    return SceneSet(name=f"{name}/{split}", tag="synthetic", classes=list(BUILTIN["fashion-mnist"].classes),
                    channels=3, native_size=S, **arrays)


# ---- generation ----------------------------------------------------------------------------------------------


def _generate(root: Path, name: str, key: str) -> None:
    """Write both splits and then the manifest into a temporary folder, renamed to `root`."""
    sources = {split: load_sources(split) for split in SIZES}  # first: a missing source fails before any work
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        raise SelfsupError(f"cannot write the scenes into '{root}': {e.strerror}; set {CACHE_ENV} to a writable "
                           "folder") from None
    try:
        start = time.perf_counter()
        for split, n in SIZES.items():
            arrays = make_scenes(name, split, n, SEEDS[name, split], sources[split])
            for k, array in arrays.items():
                np.save(temp / f"{split}-{k}.npy", array)
        write_cache(temp / MANIFEST, key, {
            "counts": SIZES, "seeds": {split: SEEDS[name, split] for split in SIZES}, "scene_version": VERSION,
            "size": S, "seconds": round(time.perf_counter() - start, 1),
            "sources": {split: [s.name for s in sources[split]] for split in SIZES}})
        move_into_place(temp, root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def make_scenes(name: str, split: str, n: int, seed: int, sources: list[Source] | None = None) -> dict[str, np.ndarray]:
    """n scenes of `name` from Fashion-MNIST's `split` objects on `sources` (default: load_sources(split)), drawn
    from np.random.default_rng(seed): {'pixels', 'instances', 'objects', 'pasted'} as SceneSet holds them."""
    fashion = load_builtin("fashion-mnist", split)
    objects = fashion.images[:, 0].numpy()  # (M, 28, 28) uint8
    classes = fashion.labels.numpy()  # (M,)
    sources = sources if sources is not None else load_sources(split)
    rng = np.random.default_rng(seed)
    out = {"pixels": np.zeros((n, 3, S, S), np.uint8), "instances": np.zeros((n, S, S), np.uint8),
           "objects": np.zeros((n, MAX_OBJECTS), np.uint8), "pasted": np.zeros(n, np.uint8)}
    for i in tqdm(range(n), desc=f"generating {name}/{split} (once)", disable=None):
        image, instances, labels, count, _ = scene(rng, sources, objects, classes, name.endswith("multi"))
        out["pixels"][i], out["instances"][i] = image, instances
        out["objects"][i, :len(labels)], out["pasted"][i] = labels, count
    return out


def scene(rng: np.random.Generator, sources: list[Source], objects: np.ndarray, classes: np.ndarray,
          multi: bool) -> tuple[np.ndarray, np.ndarray, list[int], int, np.ndarray]:
    """One scene: (image uint8 (3, S, S), instance map uint8 (S, S) as SceneSet.instances, the kept instances'
    classes (1-based), how many objects were pasted, the background alone uint8 (3, S, S))."""
    b = int(rng.integers(len(sources)))
    canvas = _shift_brightness(rng, _crop(rng, sources[b], S, S), np.ones((S, S), bool))  # (S, S, 3) float32
    background = canvas.copy()
    count = int(rng.integers(MULTI_OBJECTS[0], MULTI_OBJECTS[1] + 1)) if multi else 1
    instances, labels = np.zeros((S, S), np.uint8), []
    for k in range(count):
        j, window, mask, grey = _place(rng, objects, MULTI_COVERAGE if multi else COVERAGE)
        t = int(rng.integers(len(sources) - 1))
        t += t >= b  # the tint comes from another image than the background
        alpha = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(*FEATHER), mode="constant",
                                        truncate=3.0)[..., None]  # (h, w, 1), 0 beyond 4 px of the mask
        canvas[window] = canvas[window] * (1 - alpha) + _tint(rng, sources[t], mask, grey) * alpha
        instances[window][mask] = k + 1
        labels.append(int(classes[j]) + 1)
    instances, kept = _drop_hidden(instances, labels)
    return _to_uint8(canvas), instances, kept, count, _to_uint8(background)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 255)).astype(np.uint8).transpose(2, 0, 1)  # (S, S, 3) -> (3, S, S)


def _drop_hidden(instances: np.ndarray, labels: list[int]) -> tuple[np.ndarray, list[int]]:
    """Renumber the instances with at least MIN_VISIBLE visible pixels 1, 2, ...; the others' pixels -> 255."""
    area = np.bincount(instances.ravel(), minlength=len(labels) + 1)
    lookup = np.zeros(256, np.uint8)
    kept = []
    for k, label in enumerate(labels, 1):
        if area[k] >= MIN_VISIBLE:
            kept.append(label)
        lookup[k] = len(kept) if area[k] >= MIN_VISIBLE else 255
    return lookup[instances], kept


def _place(rng: np.random.Generator, objects: np.ndarray, coverage: tuple[float, float]
           ) -> tuple[int, tuple[slice, slice], np.ndarray, np.ndarray]:
    """A random object rotated, scaled to cover a `coverage` share of the image and placed inside it: (its index,
    the window of the image it lies in with MARGIN pixels around, its bool mask (h, w) and grey levels in 0..1
    (h, w) there). Objects that cannot reach `coverage` are redrawn."""
    while True:
        j = int(rng.integers(len(objects)))
        mask28 = _fill_holes(objects[j] > THRESHOLD)  # (28, 28)
        if mask28.sum() < MIN_VISIBLE:
            continue
        matrix, offset, window = _pose(rng, mask28, coverage)
        shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)  # (h, w)
        layers = np.stack([mask28, objects[j] / 255]).astype(np.float32)  # (2, 28, 28): mask, grey levels
        mask, grey = _warp(layers, matrix, offset, shape)  # (h, w) each
        if coverage[0] * S * S <= (mask >= 0.5).sum() <= coverage[1] * S * S:
            return j, window, mask >= 0.5, grey


def _pose(rng: np.random.Generator, mask28: np.ndarray, coverage: tuple[float, float]
          ) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """A random rotation, scale and place for the object of bool `mask28` (28, 28): the affine map (matrix (2, 2),
    offset (2,)) from window pixels to object pixels, and the window (rows, cols) of the S x S image."""
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])  # R, on (row, col)
    spun = (np.argwhere(mask28) - 13.5) @ rotation.T  # (P, 2): R (p - c), pixel centres p, 28 x 28 centre c
    corner = np.abs(rotation).sum(1) / 2  # (2,) how far a rotated pixel's corners reach beyond its centre
    low, high = spun.min(0) - corner, spun.max(0) + corner  # (2,) the rotated object's box
    scale = min(np.sqrt(rng.uniform(*coverage) * S * S / mask28.sum()), (S - 2) / (high - low).max())
    half = scale * (high - low) / 2  # (2,) the rotated object's half height and width at S
    centre = np.array([rng.uniform(h, S - 1 - h) for h in half])  # where its box centre lands, (row, col)
    start = np.maximum(np.floor(centre - half).astype(int) - MARGIN, 0)  # (2,) the window's top left
    stop = np.minimum(np.ceil(centre + half).astype(int) + MARGIN + 1, S)
    # window pixel o -> object pixel c + R^T ((o + start - centre) / scale + (low + high) / 2)
    matrix = rotation.T / scale
    offset = 13.5 + rotation.T @ ((low + high) / 2) + matrix @ (start - centre)
    return matrix, offset, (slice(start[0], stop[0]), slice(start[1], stop[1]))


def _warp(layers: np.ndarray, matrix: np.ndarray, offset: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """float32 (L, 28, 28) -> L arrays (h, w) = shape, each layer mapped bilinearly, 0 outside."""
    return [ndimage.affine_transform(layer, matrix, offset, output_shape=shape, order=1) for layer in layers]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) `mask` with every background region that does not touch the border added to it."""
    regions, count = ndimage.label(~mask)  # (H, W) int32, 0 on the mask
    outside = np.zeros(count + 1, bool)  # (count + 1,) whether region r touches the border
    outside[regions[[0, -1]]] = outside[regions[:, [0, -1]]] = True
    outside[0] = False
    return ~outside[regions]


def _tint(rng: np.random.Generator, source: Source, mask: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """The object's colours (h, w, 3) float32: a crop of `source` shaded by `grey` (h, w), brightness redrawn."""
    texture = _crop(rng, source, *mask.shape) * (1 - SHADING + SHADING * grey[..., None])
    return _shift_brightness(rng, texture, mask)


def _shift_brightness(rng: np.random.Generator, x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """x (h, w, 3) with the mean grey level over bool `where` (h, w) set to a draw from BRIGHTNESS and the
    deviations from it scaled by a draw from CONTRAST, clipped to 0..255."""
    mean = float((x[where] @ LUMA).mean())
    return np.clip((x - mean) * rng.uniform(*CONTRAST) + rng.uniform(*BRIGHTNESS), 0, 255)


def _crop(rng: np.random.Generator, source: Source, h: int, w: int) -> np.ndarray:
    """A random crop (h, w, 3) float32, h and w at most S, of one of the source's resized copies, mirrored half the
    time."""
    image = source.levels[int(rng.integers(len(source.levels)))]
    y, x = int(rng.integers(image.shape[0] - h + 1)), int(rng.integers(image.shape[1] - w + 1))
    crop = image[y:y + h, x:x + w]
    return (crop[:, ::-1] if rng.random() < 0.5 else crop).astype(np.float32)


# ---- the real source images ----------------------------------------------------------------------------------


@dataclass
class Source:
    """One real image: its name ('skimage:coffee', 'opencv-doc:fruits.jpg', 'deepforest:OSBS_029.png') and
    uint8 RGB copies (h, w, 3), the short side resized to each of LEVELS (or kept, if shorter)."""

    name: str
    levels: list[np.ndarray]


def load_sources(split: str) -> list[Source]:
    """The real images of `split`'s side (SKIMAGE, OPENCV, DEEPFOREST). Raises SelfsupError, naming the setup
    command, when opencv-doc's photos or DeepForest's wheel are not in the cache."""
    folder, wheel = cache_root() / "opencv-doc", cache_root() / "wheels" / DEEPFOREST_WHEEL
    missing = [str(folder / f) for f in OPENCV[split] if not (folder / f).is_file()][:1]
    missing += [] if wheel.is_file() else [str(wheel)]
    if missing:
        raise SelfsupError(f"the paste-scenes backgrounds need '{missing[0]}', which is missing: run "
                           f"`{SETUP}` (it fetches opencv-doc's photos and DeepForest's wheel into {cache_root()})")
    images = [(f"skimage:{n}", _skimage(n)) for n in SKIMAGE[split]]
    images += [(f"opencv-doc:{f}", Image.open(folder / f)) for f in OPENCV[split]]
    with zipfile.ZipFile(wheel) as z:
        for f in DEEPFOREST[split]:
            with z.open(f"deepforest/data/{f}") as data:
                image = Image.open(data)
                image.load()
            images.append((f"deepforest:{f}", image))
    return [Source(name, _levels(image.convert("RGB"))) for name, image in images]


def _skimage(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)()))


def _levels(image: Image.Image) -> list[np.ndarray]:
    """The image resized so its short side is each of LEVELS it exceeds (at least once: the image itself)."""
    short = min(image.size)
    sides = [side for side in LEVELS if side <= short] or [short]
    sizes = [(round(image.size[0] * side / short), round(image.size[1] * side / short)) for side in sides]
    return [np.asarray(image.resize(size, Image.Resampling.LANCZOS)) for size in sizes]
