"""A user's folder of images whose labels say where: semantic masks and/or object boxes (`--data DIR`).

Layout:

    DIR/images/<stem>.<ext>       the images (png, jpg, ...); <stem> may hold subfolders (images/a/b.jpg); or
                                  multi-band TIFF tiles (any band count and pixel type, one of each per folder)
    DIR/masks/<stem>.png          semantic masks, single-channel PNG (mode L or P) of the image's size whose
                                  pixel value is the class id: 0 background, 1..K the classes, 255 ignore
    DIR/annotations.json          boxes as COCO JSON (images, annotations with bbox [x, y, w, h] in px,
                                  categories); or any single *.json in DIR
    DIR/annotations/<stem>.xml    or: boxes as Pascal VOC XML (<object><name>, <bndbox> xmin ymin xmax ymax,
                                  px as written), one file per image; DIR/Annotations/ is read too
    DIR/classes.txt               optional: the class names, line c naming class id c

masks/ and a box file may both be there; at least one must be. Every image needs its mask (when masks/ is there)
and its entry in the box file (a COCO image entry without annotations, or a VOC file without objects, for an
image with no objects), and every mask and box entry its image. COCO crowd annotations (iscrowd 1) are skipped.
Instance masks are not read: targets hold `semantic` from masks/ and `boxes` + `labels` from the box file.

Splits: DIR/train/ and DIR/test/ (or val/), each laid out as above (classes.txt in DIR or DIR/train/), or else a
random 80/20 split of DIR's images by file, seeded with 0 (the same split on every run and machine).

Classes, numbered 1..K in the order of: classes.txt; else the box file's (COCO categories by id, VOC names
sorted); else "class 1".."class K" for the largest id in the masks. Box classes are matched to classes.txt by
name, and mask pixel c means the c-th class. The labels are taken to be real (tag 'real').

Multi-band tiles: when any image is a TIFF that is not 8-bit grey or RGB, every image must be a TIFF of one band
count and pixel type; they are read by data.tiff (N bands stay N channels; other dtypes than uint8 are stretched to
[0, 255] per band, lo and hi measured on a seeded sample of the whole folder, train and test alike; no-data pixels
become 0), and `channels` is N. An encoder pretrained on tiles of that band count evaluates on them.

Everything but the masks' pixel values is checked when the folder is opened, from image headers and the box
file, so that a bad file stops the run before training: each problem is one SelfsupError line naming the file.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from selfsup.errors import SelfsupError

from .dense import DENSE_BUILTIN, DenseSet, DenseTarget
from .folder import BadImageError, decode_image, index_images, walk_images
from .open import existing_folder, held_out_folder
from .tiff import TiffHeader, TiffImageSet, is_tiff, open_tiffs, tiff_header

TEST_FRACTION, SEED = 0.2, 0  # the split of a folder without train/ and test/
TOLERANCE = 1.0  # px a box may reach beyond its image before it is an error (it is then clipped)
IGNORE = 255  # mask value of pixels no class is scored on
MASK_MODES = ("L", "P", "1")
LAYOUT = ("DIR/images/<stem>.<ext> with DIR/masks/<stem>.png (pixel = class id) and/or a box file, "
          "DIR/annotations.json (COCO) or DIR/annotations/<stem>.xml (Pascal VOC)")
SHOWN = 3  # files named in an error about many


@dataclass
class _Part:
    """One folder laid out as images/ + masks/ and/or a box file (DIR, or DIR/train, DIR/test)."""

    folder: str
    images: dict[str, str]  # stem -> image path
    sizes: dict[str, tuple[int, int]]  # stem -> (W, H)
    masks: dict[str, str] | None  # stem -> mask path
    objects: dict[str, list[tuple[str, list[float]]]] | None  # stem -> [(class name, xyxy px)]
    sources: dict[str, str]  # stem -> the box file holding its boxes (the COCO file, or its VOC file)
    names: list[tuple[int, str]]  # the box file's classes as (COCO id or 0, name), to order them
    tiles: bool = False  # the images are multi-band (or non-8-bit) TIFF tiles, read by data.tiff


class FolderDense(DenseSet):
    """`set[i]` -> (uint8 image (C, H, W), DenseTarget): C 3 (RGB), or the band count of `tiles` (the images as a
    TiffImageSet, in the same order) when given; semantic int64 (H, W) when masks are given, boxes float32 (N, 4)
    xyxy px and labels int64 (N,) when a box file is; the other fields None.

    Raises SelfsupError, when item i is read, naming a mask that holds a class id above len(classes) (not 255).
    """

    def __init__(self, name: str, classes: list[str], has: tuple[str, ...], native_size: int | None,
                 images: list[str], masks: list[str] | None, boxes: list[np.ndarray] | None,
                 labels: list[np.ndarray] | None, tiles: TiffImageSet | None = None):
        super().__init__(name=name, tag="real", classes=classes, channels=3 if tiles is None else tiles.channels,
                         native_size=native_size, has=has)
        self.paths, self.masks, self.boxes, self.labels, self.tiles = images, masks, boxes, labels, tiles

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DenseTarget]:
        target = DenseTarget()
        if self.masks is not None:
            target.semantic = torch.from_numpy(_read_mask(self.masks[i], len(self.classes)))  # (H, W)
        if self.boxes is not None:
            target.boxes = torch.tensor(self.boxes[i])  # (N, 4), a copy: views may move boxes in place
            target.labels = torch.tensor(self.labels[i])  # (N,)
        if self.tiles is not None:
            return self.tiles[i][0], target  # (C, H, W)
        return decode_image(self.paths[i]), target  # (3, H, W)


def open_dense_folder(spec: str, split: str) -> FolderDense:
    """The `split` ('train' | 'test') of the folder `spec`, laid out as the module docstring says.

    Raises SelfsupError (one line naming the file and what to do) for: no such folder; no images/ or neither masks
    nor a box file; a mask without its image or an image without its mask or box entry; a mask of another size
    than its image or not single-channel; a box file naming missing images or unknown category ids; a box
    reaching more than TOLERANCE px outside its image; a class missing from classes.txt.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}': pass 'train' or 'test'")
    root = existing_folder(spec, DENSE_BUILTIN, "images with masks or boxes")
    held_out = held_out_folder(root)
    if held_out is not None:
        parts = {"train": _open_part(os.path.join(root, "train")), "test": _open_part(os.path.join(root, held_out))}
        classes = _classes(root, list(parts.values()))
        tiles = _tiles(spec, list(parts.values()))
        return _dense(f"{spec}/{split}", parts[split], sorted(parts[split].images), classes, tiles)
    part = _open_part(root)
    return _dense(f"{spec}/{split}", part, random_split(sorted(part.images))[split], _classes(root, [part]),
                  _tiles(spec, [part]))


def random_split(stems: list[str]) -> dict[str, list[str]]:
    """{'train': ..., 'test': ...}: round(TEST_FRACTION * n) (at least 1) of the sorted `stems` drawn for test
    with numpy's generator seeded SEED; each list sorted."""
    if len(stems) < 2:
        raise SelfsupError(f"a train/test split needs at least 2 images, found {len(stems)}: add images, or lay "
                           "the folder out as DIR/train/ and DIR/test/")
    order = np.random.default_rng(SEED).permutation(len(stems))
    k = min(max(round(TEST_FRACTION * len(stems)), 1), len(stems) - 1)
    test = set(order[:k].tolist())
    return {"train": [s for j, s in enumerate(stems) if j not in test], "test": [s for j, s in enumerate(stems) if j in test]}


def _tiles(spec: str, parts: list[_Part]) -> TiffImageSet | None:
    """Every image of `parts` as one TiffImageSet (so that train and test are stretched alike) when they are tiles;
    None for 8-bit images. SelfsupError when one part holds tiles and another does not, or the tiles differ in band
    count or pixel type (open_tiffs)."""
    if not any(part.tiles for part in parts):
        return None
    if not all(part.tiles for part in parts):
        raise SelfsupError(f"'{spec}' holds multi-band TIFF tiles in {next(p.folder for p in parts if p.tiles)} "
                           f"but 8-bit images in {next(p.folder for p in parts if not p.tiles)}: keep one kind of "
                           "image in a folder")
    paths = [path for part in parts for path in part.images.values()]
    return open_tiffs(paths, name=f"'{spec}'")


def _dense(name: str, part: _Part, stems: list[str], classes: list[str],
           tiles: TiffImageSet | None = None) -> FolderDense:
    has = (("semantic",) if part.masks is not None else ()) + (("boxes", "labels") if part.objects is not None else ())
    boxes = labels = None
    if part.objects is not None:
        ids = {c: k + 1 for k, c in enumerate(classes)}
        boxes = [np.asarray([b for _, b in part.objects[s]], dtype=np.float32).reshape(-1, 4) for s in stems]
        labels = [np.asarray([ids[c] for c, _ in part.objects[s]], dtype=np.int64) for s in stems]
    sizes = {part.sizes[s] for s in stems}  # {(W, H)}
    side = None
    if len(sizes) == 1 and len(set(*sizes)) == 1:  # one square size
        side = next(iter(sizes))[0]
    paths = [part.images[s] for s in stems]
    if tiles is not None:  # this split's tiles, in stem order
        where = {str(path): k for k, path in enumerate(tiles.paths)}
        tiles = tiles.subset([where[path] for path in paths], name=name)
    return FolderDense(name, classes, has, side, paths,
                       None if part.masks is None else [part.masks[s] for s in stems], boxes, labels, tiles)


# --- one folder: images, masks, box file ---------------------------------------------------------------------

def _open_part(folder: str) -> _Part:
    images_dir = os.path.join(folder, "images")
    if not os.path.isdir(images_dir):
        raise SelfsupError(f"'{folder}' has no images/ folder: lay dense data out as {LAYOUT}")
    images = _by_stem(images_dir, index_images(images_dir), "image")
    if not images:
        raise SelfsupError(f"'{images_dir}' holds no image files: lay dense data out as {LAYOUT}")
    headers = _tile_headers(images)
    masks, box_file = _masks(folder, images), _find_box_file(folder)
    if masks is None and box_file is None:
        raise SelfsupError(f"'{folder}' has images but neither masks/ nor a box file: lay dense data out as {LAYOUT}")
    sizes = _sizes(images) if headers is None else {stem: (h.width, h.height) for stem, h in headers.items()}
    if masks is not None:
        _check_masks(masks, sizes)
    objects, names, sources = None, [], {}
    if box_file is not None:
        objects, names, sources = (_read_coco if box_file.endswith(".json") else _read_voc)(box_file, images)
        _check_boxes(objects, sizes, images, sources)
    return _Part(folder, images, sizes, masks, objects, sources, names, headers is not None)


def _tile_headers(images: dict[str, str]) -> dict[str, TiffHeader] | None:
    """stem -> TIFF header when the images are tiles for data.tiff (some TIFF is not 8-bit grey or RGB: decoding it as
    8-bit RGB would drop bands and squash 16-bit values without a word), else None. SelfsupError when such tiles sit
    beside other images, or a TIFF's header cannot be read."""
    headers = {}
    for stem, path in images.items():
        if is_tiff(path):
            try:
                headers[stem] = tiff_header(path)
            except BadImageError as e:
                raise SelfsupError(str(e)) from None
    tiles = [(images[stem], h) for stem, h in headers.items() if h.bands not in (1, 3) or h.dtype != "uint8"]
    if not tiles:
        return None
    others = [path for path in images.values() if not is_tiff(path)]
    if others:
        path, header = tiles[0]
        raise SelfsupError(f"'{path}' is a {header.bands}-band {header.dtype} TIFF beside 8-bit images such as "
                           f"'{others[0]}': keep one kind of image in a folder (all tiles, or all 8-bit images)")
    return headers


def _by_stem(root: str, paths: list[str], noun: str) -> dict[str, str]:
    """stem (path under `root` without extension, '/'-separated) -> path; two files of one stem are an error."""
    found: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
        if stem in found:
            raise SelfsupError(f"two {noun} files share the name '{stem}': '{found[stem]}' and '{path}'; keep one")
        found[stem] = path
    return found


def _unmatched(stems, others) -> list[str]:
    return sorted(set(stems) - set(others))


def _named(stems: list[str], paths: dict[str, str]) -> str:
    shown = ", ".join(os.path.basename(paths[s]) if s in paths else s for s in stems[:SHOWN])
    return shown + (f" and {len(stems) - SHOWN} more" if len(stems) > SHOWN else "")


def _masks(folder: str, images: dict[str, str]) -> dict[str, str] | None:
    """stem -> mask path of masks/, None without masks/; a mask without image, or image without mask, is an error."""
    masks_dir = os.path.join(folder, "masks")
    if not os.path.isdir(masks_dir):
        return None
    masks = _by_stem(masks_dir, walk_images(masks_dir)[0], "mask")
    lossy = [s for s, p in masks.items() if not p.lower().endswith(".png")]
    if lossy:
        raise SelfsupError(f"mask '{masks[lossy[0]]}' is not a PNG: save masks as PNG (lossy formats change class ids)")
    orphans = _unmatched(masks, images)
    if orphans:
        raise SelfsupError(f"{len(orphans)} masks in '{masks_dir}' have no image of the same name in images/ "
                           f"({_named(orphans, masks)}): add the images or remove the masks")
    missing = _unmatched(images, masks)
    if missing:
        raise SelfsupError(f"{len(missing)} images in '{os.path.join(folder, 'images')}' have no mask "
                           f"({_named(missing, images)}): add masks/<name>.png for each, or remove the images")
    return masks


def _header(path: str) -> tuple[tuple[int, int], str]:
    """((W, H), PIL mode) from the file's header; SelfsupError naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except Exception as e:  # whatever PIL raises on a user's file, the file is what is wrong
        raise SelfsupError(f"cannot read image '{path}': {' '.join(str(e).split()) or type(e).__name__}; "
                           "fix or remove it") from None


def _headers(paths: dict[str, str]) -> dict[str, tuple[tuple[int, int], str]]:
    with ThreadPoolExecutor(8) as pool:  # the threads wait on the disk
        return dict(zip(paths, pool.map(_header, paths.values())))


def _sizes(images: dict[str, str]) -> dict[str, tuple[int, int]]:
    return {stem: size for stem, (size, _) in _headers(images).items()}


def _check_masks(masks: dict[str, str], sizes: dict[str, tuple[int, int]]) -> None:
    for stem, ((w, h), mode) in _headers(masks).items():
        if mode not in MASK_MODES:
            raise SelfsupError(f"mask '{masks[stem]}' is of PIL mode {mode}: save masks as single-channel PNG "
                               "(mode L or P) whose pixel value is the class id")
        if (w, h) != sizes[stem]:
            W, H = sizes[stem]
            raise SelfsupError(f"mask '{masks[stem]}' is {w}x{h} px but its image is {W}x{H}: save the mask at "
                               "the image's size")


def _read_mask(path: str, classes: int) -> np.ndarray:
    """int64 (H, W) of a mask; an id above `classes` other than IGNORE is a SelfsupError naming the file."""
    with Image.open(path) as img:
        mask = np.asarray(img).astype(np.int64)  # (H, W)
    wrong = mask[(mask > classes) & (mask != IGNORE)]
    if wrong.size:
        raise SelfsupError(f"mask '{path}' holds class id {int(wrong.max())} but only {classes} classes are named: "
                           "list every class in classes.txt (line c names id c), or mark the pixels 255 (ignore)")
    return mask


# --- box files -------------------------------------------------------------------------------------------------

def _find_box_file(folder: str) -> str | None:
    """DIR/annotations.json, a single *.json in DIR, or DIR/annotations/ (or Annotations/) holding .xml; None."""
    jsons = sorted(n for n in os.listdir(folder) if n.lower().endswith(".json") and not n.startswith("."))
    if len(jsons) > 1 and "annotations.json" not in jsons:
        raise SelfsupError(f"'{folder}' holds several JSON files ({', '.join(jsons[:SHOWN])}): name the COCO box "
                           "file annotations.json")
    coco = os.path.join(folder, "annotations.json" if "annotations.json" in jsons else jsons[0]) if jsons else None
    voc = next((os.path.join(folder, d) for d in ("annotations", "Annotations")
                if os.path.isdir(os.path.join(folder, d)) and walk_images(os.path.join(folder, d), frozenset({".xml"}))[0]), None)
    if coco and voc:
        raise SelfsupError(f"'{folder}' has both a COCO file ({os.path.basename(coco)}) and VOC files "
                           f"({os.path.basename(voc)}/): keep one box format")
    return coco or voc


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise SelfsupError(f"cannot read the COCO file '{path}': {' '.join(str(e).split())}; fix it") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise SelfsupError(f"'{path}' is not a COCO file: it needs lists 'images', 'annotations' and 'categories'")
    return data


def _read_coco(path: str, images: dict[str, str]) -> tuple[dict[str, list], list[tuple[int, str]], dict[str, str]]:
    """({stem: [(class name, xyxy)]}, [(category id, name)], {stem: path}) of a COCO file; bbox [x, y, w, h] ->
    xyxy."""
    data = _read_json(path)
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        files = {im["id"]: im["file_name"] for im in data["images"]}
        annotations = [(a["image_id"], a["category_id"], _bbox(a["bbox"]), a.get("iscrowd", 0))
                       for a in data["annotations"]]
    except (KeyError, TypeError, ValueError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else "has a bbox that is not 4 numbers [x, y, w, h]"
        raise SelfsupError(f"'{path}' is not a COCO file: an entry {what}; see cocodataset.org/#format-data") from None
    stems = _coco_stems(path, files, images)
    objects: dict[str, list] = {s: [] for s in stems.values()}
    for image_id, category, (x, y, w, h), crowd in annotations:
        if category not in categories:
            raise SelfsupError(f"'{path}' has an annotation of unknown category id {category} (image id {image_id}): "
                               f"add it to 'categories' (ids {sorted(categories)[:8]}) or fix the annotation")
        if image_id not in stems:
            raise SelfsupError(f"'{path}' has an annotation of unknown image id {image_id}: add the image to "
                               "'images' or remove the annotation")
        if not crowd:
            objects[stems[image_id]].append((categories[category], [x, y, x + w, y + h]))
    return objects, sorted((i, n) for i, n in categories.items()), dict.fromkeys(objects, path)


def _bbox(bbox) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)  # ValueError unless 4 numbers
    return x, y, w, h


def _coco_stems(path: str, files: dict, images: dict[str, str]) -> dict:
    """COCO image id -> stem of its file in images/ (by path under images/, else by base name); any file named
    but missing, or any image left out of the file, is an error."""
    by_base = {os.path.basename(s): s for s in images}
    stems, missing = {}, []
    for image_id, name in files.items():
        stem = os.path.splitext(str(name).replace("\\", "/"))[0]
        stem = stem if stem in images else by_base.get(os.path.basename(stem))
        if stem is None:
            missing.append(str(name))
        else:
            stems[image_id] = stem
    if missing:
        raise SelfsupError(f"'{path}' names {len(missing)} images missing from images/ ({', '.join(missing[:SHOWN])}"
                           f"{' ...' if len(missing) > SHOWN else ''}): add them or remove their entries")
    left_out = _unmatched(images, stems.values())
    if left_out:
        raise SelfsupError(f"{len(left_out)} images are not in '{path}' ({_named(left_out, images)}): add each to "
                           "its 'images' (with no annotations if it holds no object), or remove the images")
    return stems


def _read_voc(folder: str, images: dict[str, str]) -> tuple[dict[str, list], list[tuple[int, str]], dict[str, str]]:
    """({stem: [(class name, xyxy)]}, [(0, name)] sorted, {stem: VOC file}) of the VOC files in `folder`, one
    per image."""
    files = _by_stem(folder, walk_images(folder, frozenset({".xml"}))[0], "VOC")
    orphans, missing = _unmatched(files, images), _unmatched(images, files)
    if orphans:
        raise SelfsupError(f"{len(orphans)} VOC files in '{folder}' have no image of the same name in images/ "
                           f"({_named(orphans, files)}): add the images or remove the files")
    if missing:
        raise SelfsupError(f"{len(missing)} images have no VOC file in '{folder}' ({_named(missing, images)}): add "
                           "<name>.xml for each (with no <object> if it holds none), or remove the images")
    objects = {stem: _voc_objects(path) for stem, path in files.items()}
    return objects, [(0, n) for n in sorted({c for objs in objects.values() for c, _ in objs})], files


def _voc_objects(path: str) -> list[tuple[str, list[float]]]:
    try:
        root = ET.parse(path).getroot()
        return [(obj.findtext("name").strip(), [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
                for obj in root.iter("object")]
    except (ET.ParseError, OSError) as e:
        raise SelfsupError(f"cannot read the VOC file '{path}': {e}; fix it") from None
    except (AttributeError, TypeError, ValueError):
        raise SelfsupError(f"'{path}' has an <object> without a <name> or a numeric <bndbox> (xmin ymin xmax ymax): "
                           "fix it") from None


def _check_boxes(objects: dict[str, list], sizes: dict[str, tuple[int, int]], images: dict[str, str],
                 sources: dict[str, str]) -> None:
    """Boxes must be non-empty and lie inside their image within TOLERANCE px; those that do are clipped to it."""
    for stem, objs in objects.items():
        w, h = sizes[stem]
        for k, (name, box) in enumerate(objs):
            why = _box_problem(box, w, h)
            if why:
                raise SelfsupError(f"box {box} (xyxy px) of '{images[stem]}' in '{sources[stem]}' {why}: "
                                   "fix the box file")
            objs[k] = (name, [max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)])


def _box_problem(box: list[float], w: int, h: int) -> str | None:
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):  # also NaN
        return "is empty"
    if x0 < -TOLERANCE or y0 < -TOLERANCE or x1 > w + TOLERANCE or y1 > h + TOLERANCE:
        return f"reaches outside the {w}x{h} image (by more than {TOLERANCE:g} px)"
    return None


# --- class names ---------------------------------------------------------------------------------------------

def _classes(root: str, parts: list[_Part]) -> list[str]:
    """The class names of ids 1..K (see the module docstring), shared by the parts; checks the box classes."""
    listed = _classes_txt(root)
    if listed is not None:
        for part in parts:
            for stem, objs in (part.objects or {}).items():
                unknown = next((c for c, _ in objs if c not in listed), None)
                if unknown is not None:
                    raise SelfsupError(f"class '{unknown}' of '{part.images[stem]}' in '{part.sources[stem]}' is not in "
                                       f"'{_classes_txt_path(root)}': add it there")
        return listed
    if any(part.objects is not None for part in parts):
        return list(dict.fromkeys(name for _, name in sorted({n for part in parts for n in part.names})))
    top = max(_largest_id(part.masks) for part in parts)
    if top == 0:
        raise SelfsupError(f"the masks in '{root}' hold no class id (only 0 background and 255 ignore): label the "
                           "objects 1..K")
    return [f"class {c}" for c in range(1, top + 1)]


def _classes_txt_path(root: str) -> str:
    """DIR/classes.txt, or DIR/train/classes.txt when only that exists."""
    inner = os.path.join(root, "train", "classes.txt")
    return inner if not os.path.isfile(os.path.join(root, "classes.txt")) and os.path.isfile(inner) else \
        os.path.join(root, "classes.txt")


def _classes_txt(root: str) -> list[str] | None:
    path = _classes_txt_path(root)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f.read().rstrip().splitlines()]
    if not names or "" in names or len(set(names)) < len(names):
        raise SelfsupError(f"'{path}' must name each class once, one per line with no blank line (line c names "
                           "class id c): fix it")
    return names


def _largest_id(masks: dict[str, str]) -> int:
    """The largest class id (not IGNORE) in any of the masks: reads every mask."""
    def top(path: str) -> int:
        with Image.open(path) as img:
            ids = np.unique(np.asarray(img))
        ids = ids[ids != IGNORE]
        return int(ids.max()) if ids.size else 0
    with ThreadPoolExecutor(8) as pool:
        return max(pool.map(top, masks.values()), default=0)
