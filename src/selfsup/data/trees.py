"""The built-in `--data trees`: real airborne RGB tiles (NEON, 10 cm per pixel) with 951 hand-drawn tree-crown boxes,
read out of the DeepForest 2.1.0 wheel that `bash scripts/setup.sh` downloads into CACHE/wheels (never installed).

Tiles (deepforest/data/, boxes from the Pascal VOC .xml beside each):
`2019_YELL_2_528000_4978000_image_crop2.png` 2299x2472 px, 574 boxes; `2019_YELL_2_541000_4977000_image_crop.png`
1249x1035, 279; `OSBS_029.png` 400x400, 61; `SOAP_061.png` 400x400, 37 (alive and dead: both are "tree" here).

Crops: each tile is cut into a grid of CROP x CROP px crops (200 px = 20 m) from its top-left corner; the strip
beyond the last whole crop (at most 199 px on the right and bottom) is not used. 200 px holds about five crowns
(median 4 m, ~40 px across) and the largest one (108 px) whole, and tiles the 400 px tiles exactly; 128 px would
cut most crowns of 60-100 px at an edge. A box cut by a crop edge is clipped to the crop and kept only if at least
MIN_KEPT (half) of its area is inside. Crops without a tree (open meadow) are kept, with empty targets.

Semantic maps (tree vs ground, for `eval segment`): the boxes carry no outline, so each crown is drawn as the ellipse
inscribed in its box (change.ellipse over change.pixel_boxes, the choice rs-change made), class 1 'tree', the rest 0.
Every box of the tile is drawn where its ellipse reaches the crop, also those the crop's boxes leave out (less than
MIN_KEPT inside), since their pixels are crown all the same. The boxes are real (hand-drawn), the masks derived from
them are not: `label_tags` says 'pseudo' for the semantic maps while `tag` stays 'real' for boxes and labels.

Split by region: the bottom max(1, round(TEST_FRACTION * rows)) crop rows of every tile are `test`, the rows above
are `train`, so the split line runs along crop edges and no crop straddles it. On the 200 px grid: YELL crop2 rows
10-11 of 12 (y >= 2000), YELL crop row 4 of 5 (y >= 800), the bottom half (y >= 200) of OSBS_029 and of SOAP_061.
Train: 138 crops, 676 boxes (24 crops empty); test: 32 crops, 185 boxes; the other 90 of the 951 boxes lie in the
unused strips or keep less than half their area in any crop. A crown cut by the split line may be boxed (clipped)
on both sides; no pixel is in both splits.

The decoded crops are cached in CACHE/trees-v1/ (train.npy, test.npy: uint8 (N, 3, CROP, CROP), and manifest.json,
written last, with each crop's boxes and the crowns whose ellipses reach it) so later loads read ~20 MB of arrays
instead of decoding the 15 MB PNG again.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import SelfsupError

from . import change  # a circular import, used at call time only: change reads trees' constants the same way
from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from .dense import DenseSet, DenseTarget
from .folder import decode_bytes

log = logging.getLogger(__name__)

WHEEL = "deepforest-2.1.0-*.whl"  # the glob scripts/setup.sh downloads into CACHE/wheels
TILES = {  # file stem in deepforest/data/ -> number of boxes in its .xml
    "2019_YELL_2_528000_4978000_image_crop2": 574,
    "2019_YELL_2_541000_4977000_image_crop": 279,
    "OSBS_029": 61,
    "SOAP_061": 37,
}
CROP = 200  # px side of a crop: 20 m at 10 cm per pixel
MIN_KEPT = 0.5  # a clipped box is kept when at least this fraction of its area lies inside the crop
TEST_FRACTION = 0.2  # of each tile's crop rows, the bottom ones (at least one)
FOLDER = "trees-v1"
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete


class TreeCrops(DenseSet):
    """`set[i]` -> (uint8 image (3, CROP, CROP), DenseTarget(boxes float32 (N, 4) xyxy px, labels int64 (N,) all 1,
    semantic int64 (CROP, CROP): 1 inside a crown's inscribed ellipse, 0 elsewhere)).

    tiles[i], origins[i] = (x, y): which tile crop i was cut from and where its top-left corner lies there (px);
    crowns[i] int64 (M, 4): the whole-pixel boxes, in crop px and not clipped, of every crown drawn in its map.
    """

    def __init__(self, split: str, images: np.ndarray, crops: list[dict]):
        super().__init__(name=f"trees/{split}", tag="real", classes=["tree"], channels=3, native_size=CROP,
                         has=("boxes", "labels", "semantic"), label_tags={"semantic": "pseudo"})
        self.pixels = images  # uint8 (N, 3, CROP, CROP), possibly memory-mapped
        self.tiles = [c["tile"] for c in crops]
        self.origins = [(c["x"], c["y"]) for c in crops]
        self.boxes = [np.asarray(c["boxes"], dtype=np.float32).reshape(-1, 4) for c in crops]  # each (N, 4)
        self.crowns = [np.asarray(c["crowns"], dtype=np.int64).reshape(-1, 4) for c in crops]  # each (M, 4)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DenseTarget]:
        image = torch.from_numpy(np.array(self.pixels[i]))  # (3, CROP, CROP), a copy out of the memory map
        boxes = torch.from_numpy(self.boxes[i].copy())  # (N, 4)
        semantic = torch.from_numpy(crown_map(self.crowns[i])).long()  # (CROP, CROP)
        return image, DenseTarget(semantic=semantic, boxes=boxes, labels=torch.ones(len(boxes), dtype=torch.int64))


def crown_map(crowns: np.ndarray) -> np.ndarray:
    """uint8 (CROP, CROP): 1 on the pixels of the ellipses inscribed in `crowns` int64 (M, 4) (whole-pixel xyxy in
    crop px, possibly reaching beyond the crop), 0 elsewhere."""
    out = np.zeros((CROP, CROP), dtype=np.uint8)
    for x0, y0, x1, y1 in crowns:
        inside = change.ellipse(int(x1 - x0), int(y1 - y0))  # (h, w)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, CROP), min(y1, CROP)
        out[cy0:cy1, cx0:cx1] |= inside[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out


def crop_crowns(whole: np.ndarray, x: int, y: int) -> np.ndarray:
    """int64 (M, 4): the whole-pixel tile boxes `whole` (N, 4) that overlap the crop at (x, y), in its px, unclipped."""
    shifted = whole - np.array([x, y, x, y])  # (N, 4)
    keep = (shifted[:, 0] < CROP) & (shifted[:, 2] > 0) & (shifted[:, 1] < CROP) & (shifted[:, 3] > 0)
    return shifted[keep]


def load_trees(split: str) -> TreeCrops:
    """The `split` ('train' | 'test') crops, decoded from the wheel once and then read from CACHE/trees-v1.

    Raises SelfsupError when the wheel is missing (run `bash scripts/setup.sh`) or holds other boxes than expected.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}': pass 'train' or 'test'")
    root = cache_root() / FOLDER
    crops = _read_manifest(root)
    if crops is not None:
        try:
            return TreeCrops(split, np.load(root / f"{split}.npy", mmap_mode="r"), crops[split])
        except (OSError, ValueError):  # an unreadable or truncated array: decode again and rewrite the cache
            pass
    images, crops = build()
    _save(root, images, crops)
    return TreeCrops(split, images[split], crops[split])


def recipe() -> str:
    """What the crops depend on (rs-change and rs-mosaics key their caches with it)."""
    return json.dumps({"wheel": WHEEL, "tiles": TILES, "crop": CROP, "min_kept": MIN_KEPT, "test": TEST_FRACTION})


def cache_key() -> str:
    """The key of trees' own cache: the crops, and the crowns of the semantic maps that its manifest holds."""
    return json.dumps({"crops": recipe(), "semantic": "inscribed ellipses of every overlapping box"})


def wheel_path() -> Path:
    """CACHE/wheels/deepforest-2.1.0-*.whl, or a SelfsupError naming the setup script."""
    found = sorted((cache_root() / "wheels").glob(WHEEL))
    if not found:
        raise SelfsupError(f"--data trees reads DeepForest's wheel, not found in {cache_root() / 'wheels'}: "
                           f"run `bash scripts/setup.sh` (with the same {CACHE_ENV}) to download it")
    return found[0]


def tile_boxes(wheel: zipfile.ZipFile, stem: str) -> np.ndarray:
    """float32 (N, 4) xyxy px of the tile's VOC file, its coordinates as DeepForest uses them (0-based, as written)."""
    root = ET.fromstring(wheel.read(f"deepforest/data/{stem}.xml"))
    boxes = [[float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in root.iter("object")]
    if len(boxes) != TILES[stem]:
        raise SelfsupError(f"{stem}.xml in {wheel.filename} holds {len(boxes)} boxes, not {TILES[stem]}: remove the "
                           "wheel and run `bash scripts/setup.sh` to download it again")
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def split_row(rows: int) -> int:
    """The first crop row of the test region of a tile `rows` crops high."""
    return rows - max(1, round(TEST_FRACTION * rows))


def clip_boxes(boxes: np.ndarray, x: int, y: int) -> np.ndarray:
    """float32 (M, 4): the boxes (N, 4) in tile px that keep >= MIN_KEPT of their area in the crop at (x, y),
    clipped to it and moved into its coordinates."""
    inside = np.clip(boxes - np.array([x, y, x, y], dtype=np.float32), 0, CROP)  # (N, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    kept = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])  # (N,)
    return inside[(kept > 0) & (kept >= MIN_KEPT * area)]


def build() -> tuple[dict[str, np.ndarray], dict[str, list[dict]]]:
    """Decode the tiles and cut them: ({split: uint8 (N, 3, CROP, CROP)}, {split: [{tile, x, y, boxes, crowns}]})."""
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    crops: dict[str, list[dict]] = {"train": [], "test": []}
    with zipfile.ZipFile(wheel_path()) as wheel:
        for stem in TILES:
            tile, boxes = _decode_tile(wheel, stem), tile_boxes(wheel, stem)  # (3, H, W), (N, 4)
            whole = change.pixel_boxes(boxes, tile.shape[2], tile.shape[1])  # (N, 4) int64
            rows, cols = tile.shape[1] // CROP, tile.shape[2] // CROP
            for r in range(rows):
                split = "test" if r >= split_row(rows) else "train"
                for c in range(cols):
                    x, y = c * CROP, r * CROP
                    images[split].append(tile[:, y:y + CROP, x:x + CROP])
                    crops[split].append({"tile": stem, "x": x, "y": y, "boxes": clip_boxes(boxes, x, y).tolist(),
                                         "crowns": crop_crowns(whole, x, y).tolist()})
    return {s: np.stack(images[s]) for s in images}, crops


def _decode_tile(wheel: zipfile.ZipFile, stem: str) -> np.ndarray:
    """uint8 (3, H, W) of deepforest/data/STEM.png."""
    return decode_bytes(wheel.read(f"deepforest/data/{stem}.png"), f"{wheel.filename}:{stem}.png").numpy()


def _read_manifest(root: Path) -> dict[str, list[dict]] | None:
    data = read_cache(root / MANIFEST, cache_key())
    if data is None or not all((root / f"{s}.npy").is_file() for s in ("train", "test")):
        return None
    return data["crops"]


def _save(root: Path, images: dict[str, np.ndarray], crops: dict[str, list[dict]]) -> None:
    """Write the crops into `root` through a temporary folder renamed into place after its manifest is written;
    a cache that cannot be written is a warning (the next load decodes again), never an error."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        log.warning("cannot cache the tree crops in %s (%s): set %s to a writable folder", root, e.strerror, CACHE_ENV)
        return
    try:
        for split, array in images.items():
            with open(temp / f"{split}.npy", "wb") as f:
                np.save(f, array)
        write_cache(temp / MANIFEST, cache_key(), {"crops": crops})
        if (temp / MANIFEST).is_file():
            move_into_place(temp, root)
    except OSError as e:
        log.warning("cannot cache the tree crops in %s (%s): set %s to a writable folder", root, e.strerror, CACHE_ENV)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
