"""The built-in `--data emoji`: Google's and Twitter's 64 px colour drawings of 1,906 emoji, labelled by their
Unicode category, read from the npm packages emoji-datasource-google and emoji-datasource-twitter 16.0.0 (MIT),
whose emoji.json and img/<vendor>/64/*.png `bash scripts/setup.sh` unpacks into CACHE/emoji/ (emoji.json, google/,
twitter/); `emoji:DIR` reads another folder laid out the same way. Nothing here downloads.

Images: every base emoji and each of its skin-tone variants, drawn by both vendors: 2 x (1,906 + 1,875) = 7,562
uint8 RGB images (3, 64, 64). The drawings are RGBA; they are composited onto mid-grey (BACKGROUND = 128), not white:
on white the white parts of a drawing (eyes, clouds, ghosts, snow, white flags; Twitter's drawings have no
outlines) would merge into the background, on black the black ones (hair, outlines, bowling balls) would; grey
keeps both edges, and its level is near the images' mean, so normalisation is not dominated by the background.

Labels: the 9 categories of CATEGORIES, numbered in Unicode's order. emoji.json's tenth category, "Component" (the
5 bare skin-tone swatches), is left out: they are colour patches, not pictures of anything. A category with fewer
than MIN_EMOJI base emoji would be left out too (none is in 16.0.0: the smallest, Activities, has 85).

Split, so that no drawing of one emoji is on both sides: emoji are put into groups, and each group goes wholly to
train or to test. A group holds a base emoji with its skin-tone variants and both vendors' drawings of them, and
also joins (union-find) emoji that
- share a drawing: emoji.json gives identical images to different emoji (Norway, Svalbard & Jan Mayen and Bouvet
  Island have one flag; France and Saint Martin; Twitter draws the families of 2, 3 and 4 people with one
  picture per family size);
- are one emoji in another gender: sequences equal after dropping the gender signs and zero-width joiners and
  reading man / woman as person, boy / girl as child, old man / old woman as older person (man, woman and person
  firefighter; the "obsoletes" pairs of emoji.json, such as RUNNER and MAN RUNNING, are such pairs too).
The 1,906 emoji form 1,697 groups (the largest: 10 families of four), which are split by `stratified_split`
(seeded by SEED, TEST_FRACTION of each category's groups to test), so train/test is about 80/20 in every category
(counts in load_emoji's docstring).
`--test-fraction` and `--seed` do not change it: like Fashion-MNIST's, it is the set's one split.

The decoded images are cached in CACHE/emoji-v1/ (train.npy, test.npy: uint8 (N, 3, 64, 64), and manifest.json,
written last, naming each image's emoji, vendor and file), so later loads read 93 MB of arrays instead of decoding
7,562 PNGs (about 4 s on one core) again; a changed source folder (emoji.json or a vendor folder modified) is
decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.errors import SelfsupError

from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from .images import ArrayImageSet
from .split import stratified_split

log = logging.getLogger(__name__)

VERSION = "16.0.0"  # of the npm packages, pinned in scripts/setup.sh
PACKAGES = f"emoji-datasource-google and emoji-datasource-twitter {VERSION}"
VENDORS = ("google", "twitter")
CATEGORIES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
              "Activities", "Objects", "Symbols", "Flags")
LEFT_OUT = ("Component",)  # skin-tone swatches
MIN_EMOJI = 20  # base emoji a category needs to be a class
SIZE = 64  # px side of img/<vendor>/64/
BACKGROUND = 128  # grey level the RGBA drawings are composited onto
TEST_FRACTION, SEED = 0.2, 0
SOURCE = "emoji"  # CACHE/emoji, filled by scripts/setup.sh
FOLDER = "emoji-v1"  # CACHE/emoji-v1, the decoded arrays
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete
MISSING = (f"--data emoji reads the npm packages {PACKAGES}, not found in {{dir}}: run `bash scripts/setup.sh` "
           f"(with the same {CACHE_ENV}) to fetch them, or pass emoji:DIR with a folder holding their emoji.json, "
           "google/ and twitter/ (img/<vendor>/64/*.png)")
# Code points that only say which gender a ZWJ sequence shows, and the gendered people read as the neutral one.
_GENDER_SIGNS = {"FE0F", "200D", "2640", "2642"}
_NEUTRAL = {"1F468": "1F9D1", "1F469": "1F9D1", "1F466": "1F9D2", "1F467": "1F9D2", "1F474": "1F9D3", "1F475": "1F9D3"}


class EmojiSet(ArrayImageSet):
    """`set[i]` -> (uint8 RGB image (3, 64, 64), category 0..8 (index into CATEGORIES)).

    emoji[i]: the base emoji's code points as emoji.json writes them ("1F44B" for a waving hand and for each of its
    skin tones); vendors[i]: 'google' | 'twitter'; files[i]: the PNG's name (its skin tone's, e.g. "1f44b-1f3fd.png").
    """

    def __init__(self, split: str, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, list[str]]):
        super().__init__(images, labels, name=f"emoji/{split}", classes=list(CATEGORIES))
        self.emoji, self.vendors, self.files = meta["emoji"], meta["vendor"], meta["file"]


def source_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding emoji.json, google/ and twitter/: `root`, or CACHE/emoji."""
    return Path(root).expanduser() if root is not None else cache_root() / SOURCE


def load_emoji(split: str = "train", root: str | os.PathLike | None = None) -> EmojiSet:
    """The `split` ('train' | 'test') of the emoji set: uint8 images (N, 3, 64, 64), labels 0..8.

    Decoded from `source_dir(root)` once, then read from CACHE/emoji-v1. With 16.0.0: 6,116 train and 1,446 test
    images; train/test per category: Smileys & Emotion 270/68, People & Body 3,682/840 (skin tones: 59 % of all
    images), Animals & Nature 254/64, Food & Drink 210/52, Travel & Places 348/88, Activities 136/34, Objects 422/106,
    Symbols 358/90, Flags 436/104.
    Raises SelfsupError when the folder, emoji.json or a drawing it names is missing or unreadable.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}' of emoji: pass 'train' or 'test'")
    folder = source_dir(root)
    key = recipe(folder, explicit=root is not None)
    cached = cache_root() / FOLDER
    meta = _read_manifest(cached, key)
    if meta is not None:
        try:
            images = torch.from_numpy(np.load(cached / f"{split}.npy"))
            return EmojiSet(split, images, torch.tensor(meta[split]["label"]), meta[split])
        except (OSError, ValueError):  # an unreadable or truncated array: decode again and rewrite the cache
            pass
    arrays, meta = build(folder)
    _save(cached, key, arrays, meta)
    return EmojiSet(split, torch.from_numpy(arrays[split]), torch.tensor(meta[split]["label"]), meta[split])


def recipe(folder: Path, explicit: bool = False) -> str:
    """The key of the cache: the source folder and when its files changed, and how they are decoded and split.
    Raises SelfsupError when the folder lacks emoji.json or a vendor's drawings."""
    stats = {}
    for name in ("emoji.json", *VENDORS):
        try:
            stat = os.stat(folder / name)
        except OSError:
            if explicit:
                raise SelfsupError(f"'{folder}' has no {name}: emoji:DIR needs emoji.json, google/ and twitter/ "
                                   f"(img/<vendor>/64/*.png) of the npm packages {PACKAGES}") from None
            raise SelfsupError(MISSING.format(dir=folder)) from None
        stats[name] = [stat.st_size, stat.st_mtime_ns]
    return json.dumps({"folder": os.path.realpath(folder), "stats": stats, "categories": CATEGORIES,
                       "min_emoji": MIN_EMOJI, "background": BACKGROUND, "test": TEST_FRACTION, "seed": SEED,
                       "grouping": 2})


def read_catalogue(folder: Path) -> list[dict]:
    """emoji.json's base emoji of CATEGORIES: [{unified, label, obsoletes, images: {vendor: [file, ...]}}], the base
    drawing first, then its skin tones. A drawing emoji.json says a vendor lacks (has_img_<vendor> false) is left
    out."""
    try:
        with open(folder / "emoji.json", encoding="utf-8") as f:
            entries = json.load(f)
        counts = Counter(e["category"] for e in entries)
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise SelfsupError(f"cannot read {folder / 'emoji.json'} ({reason}): remove {folder} and run "
                           f"`bash scripts/setup.sh` to fetch {PACKAGES} again") from None
    small = [c for c in CATEGORIES if counts.get(c, 0) < MIN_EMOJI]
    if small:
        raise SelfsupError(f"{folder / 'emoji.json'} has fewer than {MIN_EMOJI} emoji in {', '.join(small)}: it is "
                           f"not the emoji.json of {PACKAGES}; run `bash scripts/setup.sh` to fetch those")
    catalogue = []
    for e in entries:
        if e["category"] not in CATEGORIES:  # Component (LEFT_OUT), or a category of a later version
            continue
        variants = [e, *(e.get("skin_variations") or {}).values()]
        catalogue.append({
            "unified": e["unified"], "label": CATEGORIES.index(e["category"]),
            "related": [u for u in (e.get("obsoletes"), e.get("obsoleted_by")) if u],
            "images": {v: [x["image"] for x in variants if x.get(f"has_img_{v}", True)] for v in VENDORS},
        })
    return catalogue


def decode(path: Path) -> np.ndarray:
    """uint8 (3, SIZE, SIZE): the RGBA drawing at `path` composited onto BACKGROUND grey."""
    try:
        with Image.open(path) as img:
            rgba = img.convert("RGBA")
    except Exception as e:  # whatever PIL raises, the file is what is wrong
        reason = getattr(e, "strerror", None) or " ".join(str(e).split()) or type(e).__name__
        raise SelfsupError(f"cannot decode {path} ({reason}): remove {path.parent.parent} and run "
                           f"`bash scripts/setup.sh` to fetch {PACKAGES} again") from None
    if rgba.size != (SIZE, SIZE):
        raise SelfsupError(f"{path} is {rgba.size[0]}x{rgba.size[1]} px, not {SIZE}x{SIZE}: pass the img/<vendor>/64 "
                           f"drawings of {PACKAGES} (`bash scripts/setup.sh` unpacks them)")
    grey = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(grey, rgba).convert("RGB")).transpose(2, 0, 1)  # (3, SIZE, SIZE)


def groups(catalogue: list[dict], drawings: dict[str, list[np.ndarray]]) -> np.ndarray:
    """int64 (E,): the group of each catalogue entry (see the module docstring), numbered 0.. in first appearance.

    drawings[u]: the decoded images (3, SIZE, SIZE) of entry u, all vendors and skin tones."""
    parent = list(range(len(catalogue)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = {e["unified"]: i for i, e in enumerate(catalogue)}
    first: dict[str, int] = {}  # a key (a drawing's hash, a gender-free sequence, a code) -> its first entry
    for i, e in enumerate(catalogue):
        keys = [hashlib.sha1(d.tobytes()).hexdigest() for d in drawings[e["unified"]]]
        keys.append("-".join(_NEUTRAL.get(c, c) for c in e["unified"].split("-") if c not in _GENDER_SIGNS))
        keys += [f"code {u}" for u in (e["unified"], *e["related"]) if u in index]
        for key in keys:
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(catalogue))]
    numbers: dict[int, int] = {}
    return np.array([numbers.setdefault(r, len(numbers)) for r in roots], dtype=np.int64)


def build(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, list]]]:
    """Decode and split: ({split: uint8 (N, 3, SIZE, SIZE)}, {split: {label, emoji, vendor, file}: lists of N})."""
    catalogue = read_catalogue(folder)
    drawings: dict[str, list[np.ndarray]] = {}
    rows: list[tuple[int, str, str, str]] = []  # (label, emoji, vendor, file) of each drawing, in drawings' order
    for e in catalogue:
        drawings[e["unified"]] = []
        for vendor in VENDORS:
            for file in e["images"][vendor]:
                path = folder / vendor / file
                if not path.is_file():
                    raise SelfsupError(f"{path} is missing: remove {folder} and run `bash scripts/setup.sh` to fetch "
                                       f"{PACKAGES} again")
                drawings[e["unified"]].append(decode(path))
                rows.append((e["label"], e["unified"], vendor, file))
    group = groups(catalogue, drawings)  # (E,)
    group_label = np.full(group.max() + 1, -1, dtype=np.int64)  # (G,): a group's label is its first entry's
    for e, g in zip(catalogue, group):
        if group_label[g] < 0:
            group_label[g] = e["label"]
    test_groups = set(stratified_split(group_label, TEST_FRACTION, SEED, list(CATEGORIES))[1].tolist())
    test_emoji = {e["unified"] for e, g in zip(catalogue, group) if g in test_groups}
    images = np.stack([d for e in catalogue for d in drawings[e["unified"]]])  # (N, 3, SIZE, SIZE)
    is_test = np.array([row[1] in test_emoji for row in rows])  # (N,)
    arrays, meta = {}, {}
    for split, chosen in (("train", ~is_test), ("test", is_test)):
        arrays[split] = np.ascontiguousarray(images[chosen])
        picked = [row for row, c in zip(rows, chosen) if c]
        meta[split] = {k: [row[j] for row in picked] for j, k in enumerate(("label", "emoji", "vendor", "file"))}
    return arrays, meta


def _read_manifest(root: Path, key: str) -> dict | None:
    data = read_cache(root / MANIFEST, key)
    if data is None or not all((root / f"{s}.npy").is_file() for s in ("train", "test")):
        return None
    return data["meta"]


def _save(root: Path, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write the arrays into `root` through a temporary folder renamed into place after its manifest is written;
    a cache that cannot be written is a warning (the next load decodes again), never an error."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        log.warning("cannot cache the emoji images in %s (%s): set %s to a writable folder", root, e.strerror,
                    CACHE_ENV)
        return
    try:
        for split, array in arrays.items():
            with open(temp / f"{split}.npy", "wb") as f:
                np.save(f, array)
        write_cache(temp / MANIFEST, key, {"meta": meta})
        if (temp / MANIFEST).is_file():
            move_into_place(temp, root)
    except OSError as e:
        log.warning("cannot cache the emoji images in %s (%s): set %s to a writable folder", root, e.strerror,
                    CACHE_ENV)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
