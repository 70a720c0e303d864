"""Image folders: fast indexing of image files and robust decoding of any PIL mode to RGB uint8."""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

from .images import ImageSet

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_EXTENSIONS = frozenset(IMAGE_EXTENSIONS)
_TIFF = (".tif", ".tiff")  # read with tifffile when their headers are checked (data.tiff)
# Integer modes whose values span 16 bits (PIL rescales 16-bit PGM into "I" too).
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Larger images are refused rather than decoded (20000 x 20000 RGB would take 1.2 GB per worker):
# PIL's own decompression-bomb threshold, about 9500 x 9500.
MAX_PIXELS = 89_478_485
# A folder's default image side (`selfsup train` without --image-size, and the random / pixels baselines evaluated on
# it): the median shorter side of up to SIZE_SAMPLE of its images (a sample seeded by 0, read from the file headers),
# rounded to a multiple of SIZE_STEP (network strides, ViT patches of 4 or 8) and kept within [SIZE_MIN, SIZE_MAX].
SIZE_SAMPLE = 512
SIZE_STEP, SIZE_MIN, SIZE_MAX = 8, 16, 224


class BadImageError(SelfsupError):
    """An image file that cannot be decoded: corrupt, truncated, empty, too large or of an unsupported kind."""

    def __init__(self, message: str, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


def index_images(root: str) -> list[str]:
    """Paths of every image file under `root` at any depth, sorted; hidden files and folders skipped.

    os.scandir reads the file type from the directory entry, so no file is opened or stat'ed:
    100k files index in well under a second on a local disk.
    """
    return walk_images(root)[0]


def walk_images(root: str, extensions: frozenset[str] = _EXTENSIONS) -> tuple[list[str], list[tuple[str, int]]]:
    """(paths of the files under `root` whose extension is in `extensions` (images by default), sorted,
    [(folder, mtime_ns)] of every folder walked, each stat'ed before it was read). Hidden entries are skipped, a
    folder reached twice (a symlink loop) is walked once."""
    found: list[str] = []
    root_stat = _stat(root)
    stack, folders = [(root, root_stat)], []
    seen = {(root_stat.st_dev, root_stat.st_ino)}  # (device, inode) of folders, so symlink loops end
    while stack:
        folder, stat = stack.pop()
        folders.append((folder, stat.st_mtime_ns))
        try:
            entries = os.scandir(folder)
        except OSError as e:
            raise SelfsupError(f"cannot read folder '{folder}': {e.strerror}; check that it exists and is readable") from None
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                wanted = os.path.splitext(entry.name)[1].lower() in extensions
                try:
                    is_dir = entry.is_dir()
                    sub = os.stat(entry.path) if is_dir else None
                except OSError:  # a symlink to itself or a loop: a file to list as unusable, not a crash
                    if wanted:
                        found.append(entry.path)
                    continue
                if is_dir:
                    if (sub.st_dev, sub.st_ino) not in seen:
                        seen.add((sub.st_dev, sub.st_ino))
                        stack.append((entry.path, sub))
                elif wanted and (entry.is_file() or entry.is_symlink()):
                    found.append(entry.path)
    found.sort()
    return found, folders


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as e:
        raise SelfsupError(f"cannot read folder '{path}': {e.strerror}; check that it exists and is readable") from None


def decode_image(path: str, draft_size: int | None = None) -> torch.Tensor:
    """Decode one image file into a uint8 RGB tensor (3, H, W); raise BadImageError naming the file if it cannot be."""
    return _decode(path, path, draft_size)


def decode_bytes(data: bytes, name: str, draft_size: int | None = None) -> torch.Tensor:
    """decode_image of an image file's bytes (e.g. a member of a tar shard); errors name it `name`."""
    return _decode(io.BytesIO(data), name, draft_size)


def _decode(source: str | IO[bytes], name: str, draft_size: int | None) -> torch.Tensor:
    try:
        with _open(source) as img:
            if draft_size and img.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale in the DCT domain, keeping both sides >= draft_size.
                img.draft("RGB", (draft_size, draft_size))
            img.load()  # decode here, inside the try: a truncated file raises now instead of yielding garbage later
            array = _rgb_array(img)
    except Exception as e:  # whatever a decoder raises on a user's file, the file is what is wrong
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadImageError(f"cannot decode image '{name}': {reason}; remove or fix the file", name, reason) from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _open(source: str | IO[bytes]) -> Image.Image:
    """Image.open (reads the header only), refusing images of more than MAX_PIXELS pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(source)
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise ValueError(f"{img.width}x{img.height} pixels, more than the {MAX_PIXELS} selfsup decodes")
    return img


def header_problem(path: str) -> str | None:
    """Why `path` cannot be used, judged from its header alone (empty, not an image, too large), or None. TIFF files
    are judged by tifffile (data.tiff), which reads any band count."""
    if path.lower().endswith(_TIFF):
        from .tiff import tiff_problem  # tiff imports this module

        return tiff_problem(path)
    try:
        with _open(path):
            return None
    except Exception as e:  # the decoder's reason, whatever its type
        return " ".join(str(e).split()) or type(e).__name__


def header_side(path: str) -> int | None:
    """The shorter side in pixels of the image file `path`, read from its header; None when it cannot be used."""
    if path.lower().endswith(_TIFF):
        from .tiff import tiff_side

        return tiff_side(path)
    try:
        with _open(path) as img:
            return min(img.size)
    except Exception:  # an unusable file has no say in the size; the header scan lists it
        return None


def folder_image_size(paths: Sequence[str], threads: int = 8) -> tuple[int, float] | None:
    """(default training side, median shorter side) of image files `paths` (see SIZE_SAMPLE): the median of a
    seeded sample's shorter sides, rounded half up to a multiple of SIZE_STEP and kept within [SIZE_MIN, SIZE_MAX].
    The same files in the same order give the same size whatever the run's seed. None when no header can be read."""
    order = np.random.default_rng(0).permutation(len(paths))[:SIZE_SAMPLE] if len(paths) > SIZE_SAMPLE \
        else range(len(paths))
    with ThreadPoolExecutor(threads) as pool:
        sides = [s for s in pool.map(header_side, [str(paths[i]) for i in order]) if s]
    if not sides:
        return None
    median = float(np.median(sides))
    rounded = SIZE_STEP * math.floor(median / SIZE_STEP + 0.5)
    return min(SIZE_MAX, max(SIZE_MIN, rounded)), median


def scan_images(paths: Sequence[str], threads: int = 8,
                problem: Callable[[str], str | None] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """(usable paths, [(path, reason)] of the others), reading only each file's header with `problem` (images'
    by default; audio passes its own), threaded: the time is spent waiting on the disk. Truncated pixel data is
    found later, when decoded."""
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(problem or header_problem, [str(p) for p in paths]))
    good = [str(p) for p, why in zip(paths, problems) if why is None]
    return good, [(str(p), why) for p, why in zip(paths, problems) if why is not None]


class SkipBadImages(Dataset):
    """images[i]; when that file fails to decode, the next index that does (wrapping round), so a
    batch keeps its size and the run its data order. Each failing file is logged once per process
    and appended to `log_file` (one 'path<TAB>reason' line) when given."""

    def __init__(self, images: Dataset, log_file: str | Path | None = None):
        self.images, self.log_file = images, log_file
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        for j in range(i, i + len(self.images)):
            try:
                return self.images[j % len(self.images)]
            except BadImageError as e:
                self._report(e)
        raise SelfsupError(f"none of the {len(self.images)} images can be decoded; check the files")

    def _report(self, error: BadImageError) -> None:
        report_bad_image(error, self._reported, self.log_file)


def report_bad_image(error: BadImageError, reported: set[str], log_file: str | Path | None) -> None:
    """Log `error` and append 'path<TAB>reason' to `log_file`, once per path (`reported` holds those done)."""
    if error.path in reported:
        return
    reported.add(error.path)
    log.warning("skipping an image: %s", error)
    if log_file is not None:
        with open(log_file, "a") as f:  # one short append per file: whole lines, even from workers
            f.write(f"{error.path}\t{error.reason}\n")


def _rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of any PIL mode; alpha is dropped."""
    if img.mode in _SIXTEEN_BIT:
        # PIL's own convert clips 16-bit values at 255; keep the high byte instead (65535 -> 255, 32768 -> 128).
        gray = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when a palette image with transparency goes straight to RGB
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img)


class FolderImageSet(ImageSet):
    """Image files decoded on access.

    In: paths of image files; labels (N,) or None (all -1); class names; a name for logs; draft_size,
    when set, lets JPEGs decode at a reduced scale keeping both sides >= draft_size (faster for big photos);
    root: the folder the paths were indexed from, whose cache file remembers their header checks, or None.
    Out: (uint8 RGB tensor (3, H, W), label); sizes vary from file to file.
    """

    channels = 3
    native_size = None

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None = None,
        classes: list[str] | None = None,
        name: str = "images",
        draft_size: int | None = None,
        root: str | None = None,
    ) -> None:
        # A numpy array, not a list of str: forked DataLoader workers touching Python strings would
        # write their refcounts and so copy the pages, growing memory with every epoch.
        self.paths = np.array(paths, dtype=str)
        n = len(self.paths)
        self.labels = torch.full((n,), -1, dtype=torch.int64) if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        if self.labels.shape != (n,):
            raise SelfsupError(f"FolderImageSet got {n} paths but labels of shape {tuple(self.labels.shape)}; pass one label per path")
        self.classes, self.name, self.draft_size, self.root = classes, name, draft_size, root

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return decode_image(str(self.paths[i]), self.draft_size), int(self.labels[i])

    def subset(self, indices: Sequence[int] | np.ndarray) -> FolderImageSet:
        """The same kind of set over paths[indices]."""
        indices = np.asarray(indices, dtype=np.int64)
        return FolderImageSet(self.paths[indices], self.labels[indices], self.classes, self.name, self.draft_size,
                              self.root)
