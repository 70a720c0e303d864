"""Multi-band TIFF / GeoTIFF tiles (remote sensing), read with tifffile (no GDAL): N bands stay N channels.

A folder whose image files are all .tif/.tiff opens as a TiffImageSet. Each sample is a uint8 tensor (C, H, W),
C the number of bands kept (all, or those `--bands` picks):
- layouts: 2-D pages (one band), (bands, H, W) (planar or one page per band) and (H, W, bands) (interleaved samples),
  as tifffile's series axes say; other shapes (time stacks, pyramids as one series) are refused per file;
- dtypes: uint8 is used as it is. Any other (uint16, int16, int32, float32/64...) is mapped per band linearly from
  [lo, hi] to [0, 255] and clipped, lo and hi the band's STRETCH_PERCENTILES of a seeded sample of the folder's
  pixels (up to STATS_TILES tiles, a window of at most STATS_SIDE px of each); NaN maps to 0. Evaluation on
  another folder measures that folder's own range (its values are not stored with it);
- large tiles: for training at side S, a tile whose shorter side is at least WINDOW_FACTOR * S is cut into random
  S x S windows, floor(H / S) * floor(W / S) of them per epoch, each read on its own (a memory map of an uncompressed
  tile, so only the window's pages are read; a compressed tile is decoded whole, the last one kept per process), so
  memory grows with the batch, not with the tiles; the index of windows costs 32 bytes a window (their paths refer
  to one str per tile; benchmarks/results/rs_memory.md measures it). Smaller tiles are served whole (the views'
  random resized crop then sizes them).
- no data: pixels equal to the file's GDAL_NODATA value (TIFF tag 42113, as GDAL writes it) are left out of the
  stretch and the band statistics and become 0, as NaN does.

Per-band statistics (`band_meta`): the mean and std of each kept band in [0, 1] units, measured on the same kind of
seeded sample; a run stores them in its data_meta, and its views, evaluation and export normalise with them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image

from selfsup.errors import SelfsupError

from .cache import cache_root
from .folder import MAX_PIXELS, BadImageError, FolderImageSet

TIFF_EXTENSIONS = (".tif", ".tiff")
STATS_TILES = 64  # tiles sampled (seeded by 0) for the stretch and the band statistics
STATS_SIDE = 256  # of each sampled tile, a window of at most this side at a seeded place
STRETCH_PERCENTILES = (0.5, 99.5)  # non-uint8 data: per band, these percentiles map to 0 and 255
GDAL_NODATA = 42113  # the TIFF tag in which GDAL stores a band's no-data value, as ASCII
STD_FLOOR = 1e-3  # a constant band's std, in [0, 1] units: normalising it must not divide by zero
WINDOW_FACTOR = 2  # tiles whose shorter side is at least WINDOW_FACTOR * S are cut into S x S windows
# The built-in Landsat-7 ETM+ tile of Debian's r-cran-stars (GPL-2): 349 x 352 px, 6 bands (1-5 and 7), 30 m, uint8.
LANDSAT = "landsat"  # its --data name
LANDSAT_FILE = "L7_ETMs.tif"
LANDSAT_WINDOW = 32  # 32 px windows (960 m): 110 per epoch from the one tile
LANDSAT_MISSING = ("the Landsat tile is not in {dir}: run scripts/setup.sh (it runs `apt-get download r-cran-stars` "
                   "and keeps usr/lib/R/site-library/stars/tif/L7_ETMs.tif there), or pass a folder of TIFF tiles")


def is_tiff(path: str) -> bool:
    """Whether `path` is named like a TIFF file (.tif or .tiff, any case)."""
    return path.lower().endswith(TIFF_EXTENSIONS)


@dataclass(frozen=True)
class TiffHeader:
    """What a TIFF file's header says: band count, height, width (px), numpy dtype name, whether the bands are an
    RGB image (photometric RGB, 3 samples), whether the bands are the last axis (interleaved), whether the pixels
    lie uncompressed in one block (then they are memory-mapped), whether each band is a page of its own, and the
    no-data value (GDAL_NODATA) if the file has one."""

    bands: int
    height: int
    width: int
    dtype: str
    rgb: bool
    bands_last: bool
    mappable: bool
    pages: bool = False
    nodata: float | None = None


def tiff_header(path: str) -> TiffHeader:
    """The header of the TIFF file `path` (its first series); BadImageError naming the file if it cannot be used."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
            rgb = tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
            nodata = _nodata(tif.pages[0].tags.get(GDAL_NODATA), path)
            mappable = series.dataoffset is not None
            # one page per band, written page by page: as many 2-D series of one shape and dtype
            pages = len(tif.series) > 1 and len(shape) == 2 and all(
                tuple(s.shape) == shape and s.dtype == series.dtype for s in tif.series)
            if pages:
                shape, axes, mappable = (len(tif.series), *shape), "I" + axes, False
    except Exception as e:  # whatever tifffile raises on a user's file, the file is what is wrong
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadImageError(f"cannot read TIFF '{path}': {reason}; remove or fix the file", path, reason) from None
    if len(shape) == 2:
        header = TiffHeader(1, shape[0], shape[1], dtype.name, False, False, mappable, nodata=nodata)
    elif len(shape) == 3 and axes[-1] in "SC" and axes[-3:-1] == "YX":
        header = TiffHeader(shape[2], shape[0], shape[1], dtype.name, rgb and shape[2] == 3, True, mappable,
                            nodata=nodata)
    elif len(shape) == 3 and axes[-2:] == "YX":
        header = TiffHeader(shape[0], shape[1], shape[2], dtype.name, rgb and shape[0] == 3, False, mappable, pages,
                            nodata)
    else:
        reason = f"a {len(shape)}-D series of axes {axes} and shape {shape}"
        raise BadImageError(f"cannot read TIFF '{path}': {reason}; pass tiles of 2-D bands, (bands, H, W) or "
                            "(H, W, bands)", path, reason)
    if dtype.kind not in "uif":
        reason = f"{dtype.name} pixels"
        raise BadImageError(f"cannot read TIFF '{path}': {reason}; pass integer or float bands", path, reason)
    if header.height * header.width > MAX_PIXELS:
        reason = f"{header.width}x{header.height} pixels, more than the {MAX_PIXELS} selfsup reads"
        raise BadImageError(f"cannot read TIFF '{path}': {reason}; cut it into tiles first", path, reason)
    return header


def tiff_problem(path: str) -> str | None:
    """Why the TIFF file `path` cannot be used, judged from its header, or None."""
    try:
        tiff_header(path)
        return None
    except BadImageError as e:
        return e.reason


def tiff_side(path: str) -> int | None:
    """The shorter side in px of the TIFF file `path`; None when it cannot be used."""
    try:
        header = tiff_header(path)
    except BadImageError:
        return None
    return min(header.height, header.width)


def read_bands(path: str, header: TiffHeader, index: Sequence[int] | None = None,
               window: tuple[int, int, int] | None = None) -> np.ndarray:
    """The bands `index` (all when None) of the TIFF file `path`, (C, h, w) in the file's dtype; window (top, left,
    side) reads that square only. An uncompressed file is memory-mapped, so only the window's pages are read."""
    if header.mappable:
        data = tifffile.memmap(path, mode="r")
    else:  # compressed, tiled or one page per band: decoded whole
        data = tifffile.imread(path, key=range(header.bands)) if header.pages else tifffile.imread(path)
    data = data.reshape(header.height, header.width, header.bands) if header.bands_last else \
        data.reshape(header.bands, header.height, header.width)
    rows, cols = (slice(window[0], window[0] + window[2]), slice(window[1], window[1] + window[2])) if window \
        else (slice(None), slice(None))
    bands = slice(None) if index is None else list(index)
    if header.bands_last:
        return without_nodata(np.ascontiguousarray(data[rows, cols, bands].transpose(2, 0, 1)), header.nodata)
    return without_nodata(np.ascontiguousarray(data[bands, rows, cols]), header.nodata)


def without_nodata(bands: np.ndarray, nodata: float | None) -> np.ndarray:
    """`bands` with pixels equal to `nodata` made NaN, in a float dtype that holds the values exactly (float32 for
    8- and 16-bit bands): the stretch and the band statistics leave NaN out, to_uint8 maps it to 0."""
    if nodata is None or np.isnan(nodata):  # NaN no-data is NaN already
        return bands
    missing = bands == nodata
    if not missing.any():
        return bands
    floats = bands.astype(np.float64 if bands.dtype.itemsize > 2 else np.float32)
    floats[missing] = np.nan
    return floats


def _nodata(tag: Any, path: str) -> float | None:
    """The GDAL_NODATA tag's value (an ASCII number) as a float; None without the tag or with text that is not a
    number: then no pixel is treated as missing, and one warning line names the file (once per file and process)."""
    if tag is None:
        return None
    text = str(tag.value).strip().strip("\x00")
    try:
        return float(text)
    except ValueError:
        if path not in _WARNED and len(_WARNED) < NAMED_WARNINGS:
            _WARNED.add(path)
            more = "; further files with such a tag are not named" if len(_WARNED) == NAMED_WARNINGS else ""
            print(f"selfsup: warning: '{path}' has a GDAL_NODATA tag that is not a number ({text[:40]!r}); no "
                  f"pixel of it is treated as missing{more}", file=sys.stderr)
        return None


class _NodataParseFilter(logging.Filter):
    """tifffile logs a warning each time it opens a page whose GDAL_NODATA tag is not a number of the pixel type
    (every header read and every window); selfsup reads the tag itself (_nodata) and says so once per file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "parsing GDAL_NODATA tag" not in record.getMessage()


_WARNED: set[str] = set()  # files named in such a warning
NAMED_WARNINGS = 3
logging.getLogger("tifffile").addFilter(_NodataParseFilter())


def to_uint8(bands: np.ndarray, stretch: Sequence[Sequence[float]] | None) -> np.ndarray:
    """(C, h, w) bands -> uint8 (C, h, w): as they are when `stretch` is None (uint8 data), else band c mapped
    linearly from [lo_c, hi_c] = stretch[c] to [0, 255], clipped and rounded; NaN -> 0."""
    if stretch is None:
        if bands.dtype == np.uint8:
            return bands
        if bands.dtype.kind == "f":  # uint8 bands whose no-data pixels without_nodata made NaN
            return np.nan_to_num(bands, nan=0.0).astype(np.uint8)
        raise ValueError(f"{bands.dtype} bands need a stretch to become uint8")
    lo, hi = (np.asarray(v, dtype=np.float32)[:, None, None] for v in zip(*stretch))  # (C, 1, 1) each
    scaled = (bands.astype(np.float32) - lo) * (255 / (hi - lo))  # (C, h, w)
    return np.nan_to_num(scaled, nan=0.0).clip(0, 255).round().astype(np.uint8)


class TiffImageSet(FolderImageSet):
    """Multi-band TIFF tiles decoded on access; open with `open_tiffs`.

    Out: (uint8 tensor (C, H, W), label), C = len(index) bands of the `count` each file holds; with `window` S set
    (see `windows`), tiles of shorter side >= WINDOW_FACTOR * S give S x S windows at random places, several samples
    per tile. `paths`, `labels` and `sizes` ((N, 2) height, width) are per sample.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int] | None, classes: list[str] | None, name: str,
                 root: str | None, sizes: np.ndarray, headers: dict[str, TiffHeader], count: int, dtype: str,
                 rgb: bool, stretch: list[list[float]] | None, index: Sequence[int] | None = None,
                 window: int | None = None, whole: TiffImageSet | None = None) -> None:
        # Windows: every sample of a tile refers to the tile's one path str (an object array: 8 bytes a sample), where
        # a str array would copy it (4 bytes a character): the index of 2,048 tiles' 2 million 64 px windows takes
        # 60 MB, not 375 (benchmarks/rs_memory.py). Forked workers that read it write only those strings' refcounts.
        shared = isinstance(paths, np.ndarray) and paths.dtype == object
        super().__init__([] if shared else paths, None if shared else labels, classes, name, None, root)
        if shared:
            self.paths = paths
            self.labels = torch.full((len(paths),), -1, dtype=torch.int64) if labels is None else \
                torch.as_tensor(labels, dtype=torch.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.headers, self.count, self.dtype = headers, count, dtype
        self.index = tuple(range(count)) if index is None else tuple(index)
        self.files_rgb = rgb  # every file says its 3 bands are RGB
        self.rgb = rgb and self.index == (0, 1, 2)  # and the bands kept are those, in that order
        self.stretch, self.window, self.whole = stretch, window, whole
        self.channels = len(self.index)
        cut = self._cut()
        self.native_size = window if window and len(cut) and cut.all() else None
        self._last: tuple[str, np.ndarray] | None = None  # a compressed tile decoded whole, kept for its next window

    def _cut(self) -> np.ndarray:
        """(N,) bool: which samples are windows of their tile."""
        if not self.window:
            return np.zeros(len(self.paths), dtype=bool)
        return self.sizes.min(axis=1) >= WINDOW_FACTOR * self.window

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = str(self.paths[i])
        header = self.headers.get(path)
        if header is None:  # its header could not be read when the set was opened
            header = tiff_header(path)  # raises BadImageError
        window = None
        if self.window and min(header.height, header.width) >= WINDOW_FACTOR * self.window:
            top = int(torch.randint(0, header.height - self.window + 1, ()))
            left = int(torch.randint(0, header.width - self.window + 1, ()))
            window = (top, left, self.window)
        try:
            bands = self._read(path, header, window)
        except Exception as e:  # a truncated or corrupt strip shows only when decoded
            reason = " ".join(str(e).split()) or type(e).__name__
            raise BadImageError(f"cannot decode TIFF '{path}': {reason}; remove or fix the file", path,
                                reason) from None
        return torch.from_numpy(to_uint8(bands, self._kept_stretch())), int(self.labels[i])

    def _read(self, path: str, header: TiffHeader, window: tuple[int, int, int] | None) -> np.ndarray:
        """(C, h, w) kept bands of the tile or its window, in the file's dtype."""
        if header.mappable:
            return read_bands(path, header, self.index, window)
        if self._last is None or self._last[0] != path:  # one decoded tile per process, for its next windows
            self._last = (path, _decode(path, header, self.index))
        return _crop(self._last[1], window)

    def _kept_stretch(self) -> list[list[float]] | None:
        return None if self.stretch is None else [self.stretch[b] for b in self.index]

    def _copy(self, keep: np.ndarray | None = None, **changes: Any) -> TiffImageSet:
        keep = np.arange(len(self.paths)) if keep is None else np.asarray(keep, dtype=np.int64)
        paths = changes.pop("paths") if "paths" in changes else self.paths[keep]
        fields = {"paths": paths, "labels": self.labels[keep], "classes": self.classes, "name": self.name,
                  "root": self.root, "sizes": self.sizes[keep], "headers": self.headers, "count": self.count,
                  "dtype": self.dtype, "rgb": self.files_rgb, "stretch": self.stretch, "index": self.index,
                  "window": self.window, "whole": self.whole}
        fields.update(changes)
        return TiffImageSet(**fields)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> TiffImageSet:
        """The same kind of set over samples[indices] (named `name` when given)."""
        return self._copy(indices, **({"name": name} if name else {}))

    def pick_bands(self, spec: str) -> TiffImageSet:
        """The set keeping the bands `spec` names: 1-based band numbers separated by commas ('4,3,2'), in the order
        wanted. SelfsupError for a number outside 1..count, a repeat, or text that is not such a list."""
        numbers = [part.strip() for part in str(spec).split(",")]
        if not all(n.isdigit() for n in numbers):
            raise SelfsupError(f"--bands '{spec}' is not a list of band numbers: pass e.g. --bands 4,3,2 (1-based)")
        picked = [int(n) for n in numbers]
        if not all(1 <= b <= self.count for b in picked) or len(set(picked)) != len(picked):
            example = ",".join(str(b) for b in range(1, min(self.count, 3) + 1))
            raise SelfsupError(f"--bands '{spec}' must name distinct bands among 1..{self.count} (the tiles of "
                               f"{self.name} hold {self.count}): pass e.g. --bands {example}")
        return self._copy(index=tuple(b - 1 for b in picked))

    def windows(self, side: int) -> TiffImageSet:
        """The set for training at side `side`: every tile of shorter side >= WINDOW_FACTOR * side gives
        floor(H / side) * floor(W / side) samples, each a random side x side window; smaller tiles one whole sample.
        Its `paths` is an object array: a tile's samples share its path str."""
        whole = self.whole or self
        big = whole.sizes.min(axis=1) >= WINDOW_FACTOR * side
        per_tile = np.where(big, (whole.sizes[:, 0] // side) * (whole.sizes[:, 1] // side), 1)
        keep = np.repeat(np.arange(len(whole.paths)), per_tile)
        tiles = np.array([str(p) for p in whole.paths], dtype=object)  # (K,) one str per tile
        return whole._copy(keep, paths=tiles[keep], window=side, whole=whole, index=self.index)

    def band_meta(self) -> dict[str, Any]:
        """What a run stores about the bands (data_meta["bands"]): index (0-based bands kept), count (bands per file),
        dtype, stretch ([lo, hi] per file band, None for uint8), rgb, and mean / std per kept band in [0, 1] units of
        the uint8 pixels, measured on a sample seeded by 0 (the same tiles give the same numbers in every run)."""
        total = np.zeros(self.channels)
        squares = np.zeros(self.channels)
        n = np.zeros(self.channels)
        for bands in self._sample(self.index):
            # no-data pixels (NaN after without_nodata) are left out, as the stretch leaves them out
            valid = np.isfinite(bands).reshape(self.channels, -1)
            pixels = to_uint8(bands, self._kept_stretch()).reshape(self.channels, -1).astype(np.float64) / 255
            pixels = np.where(valid, pixels, 0.0)
            total += pixels.sum(axis=1)
            squares += (pixels ** 2).sum(axis=1)
            n += valid.sum(axis=1)
        n = np.maximum(n, 1)  # a band with no valid pixel in the sample: mean 0, std STD_FLOOR
        mean = total / n
        std = np.maximum(np.sqrt(np.maximum(squares / n - mean ** 2, 0)), STD_FLOOR)
        return {"index": list(self.index), "count": self.count, "dtype": self.dtype, "stretch": self.stretch,
                "rgb": self.rgb, "mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]}

    def _sample(self, index: Sequence[int]) -> list[np.ndarray]:
        return sample_windows(self.whole or self, index)


def _decode(path: str, header: TiffHeader, index: Sequence[int]) -> np.ndarray:
    """read_bands of a compressed tile; one of uint8 1 or 3 bands whose compression tifffile cannot decode without
    the imagecodecs package (JPEG-in-TIFF, say) is decoded by PIL instead."""
    try:
        return read_bands(path, header, index)
    except (ValueError, NotImplementedError, KeyError):
        if header.dtype != "uint8" or header.bands not in (1, 3):
            raise
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB" if header.bands == 3 else "L"))
        return np.ascontiguousarray(pixels.reshape(header.height, header.width, -1).transpose(2, 0, 1)[list(index)])


def _crop(bands: np.ndarray, window: tuple[int, int, int] | None) -> np.ndarray:
    if window is None:
        return bands
    top, left, side = window
    return np.ascontiguousarray(bands[:, top:top + side, left:left + side])


def sample_windows(images: TiffImageSet, index: Sequence[int]) -> list[np.ndarray]:
    """Bands `index` of up to STATS_TILES of the set's distinct readable tiles (chosen with a generator seeded by 0),
    each a window of at most STATS_SIDE px at a seeded place: [(C, h, w)] in the files' dtype."""
    tiles = sorted(set(map(str, images.paths)) & set(images.headers))
    rng = np.random.default_rng(0)
    chosen = sorted(rng.permutation(len(tiles))[:STATS_TILES]) if len(tiles) > STATS_TILES else range(len(tiles))
    out = []
    for i in chosen:
        header = images.headers[tiles[i]]
        side = min(STATS_SIDE, header.height, header.width)
        top, left = int(rng.integers(0, header.height - side + 1)), int(rng.integers(0, header.width - side + 1))
        out.append(read_bands(tiles[i], header, index, (top, left, side)))
    return out


def open_tiffs(paths: Sequence[str], labels: Sequence[int] | None = None, classes: list[str] | None = None,
               name: str = "tiles", root: str | None = None, stretch: list[list[float]] | None = None,
               threads: int = 8) -> TiffImageSet:
    """A TiffImageSet of the TIFF files `paths` (headers read threaded). SelfsupError when the readable files
    differ in band count or dtype, or none is readable. stretch: [lo, hi] per band to map non-uint8 data with
    (another set's, so that both are mapped alike); None: measured here (see the module's docstring)."""
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(_header_or_none, [str(p) for p in paths]))
    headers = {str(p): h for p, h in zip(paths, found) if h is not None}
    if not headers:
        raise SelfsupError(f"none of the {len(paths)} TIFF files in {name} can be read: pass a folder of readable "
                           "TIFF tiles")
    for field, noun, unit in (("bands", "band counts", " bands"), ("dtype", "pixel types", " pixels")):
        kinds: dict[Any, str] = {}
        for path, header in headers.items():
            kinds.setdefault(getattr(header, field), path)
        if len(kinds) > 1:
            (a, pa), (b, pb) = list(kinds.items())[:2]
            raise SelfsupError(f"{name} mixes TIFF tiles of different {noun}: '{pa}' has {a}{unit}, '{pb}' has "
                               f"{b}{unit}; keep tiles of one band count and pixel type in a folder")
    first = next(iter(headers.values()))
    sizes = np.array([(h.height, h.width) if h else (0, 0) for h in found], dtype=np.int64)
    images = TiffImageSet(paths, labels, classes, name, root, sizes, headers, first.bands, first.dtype,
                          all(h.rgb for h in headers.values()), None)
    if first.dtype != "uint8":
        images.stretch = stretch if stretch is not None else measure_stretch(images)
    return images


def _header_or_none(path: str) -> TiffHeader | None:
    try:
        return tiff_header(path)
    except BadImageError:
        return None


def measure_stretch(images: TiffImageSet) -> list[list[float]]:
    """[lo, hi] per file band: its STRETCH_PERCENTILES over a seeded sample of the set's pixels (NaN ignored);
    hi = lo + 1 for a constant band."""
    samples = sample_windows(images, range(images.count))  # [(C, h, w)] in the files' dtype
    stretch = []
    for c in range(images.count):  # one band of the sample at a time in float64, not all of them
        band = np.concatenate([s[c].ravel() for s in samples]).astype(np.float64)
        lo, hi = (float(v) for v in np.nanpercentile(band, STRETCH_PERCENTILES)) if np.isfinite(band).any() else (0, 1)
        stretch.append([lo, hi if hi > lo else lo + 1.0])
    return stretch


def open_landsat() -> TiffImageSet:
    """The built-in Landsat-7 tile (CACHE/landsat/L7_ETMs.tif, fetched by scripts/setup.sh), unlabelled, served as
    random LANDSAT_WINDOW px windows of all 6 bands. SelfsupError naming the fix when the file is missing."""
    folder = cache_root() / "landsat"
    path = folder / LANDSAT_FILE
    if not path.is_file():
        raise SelfsupError(LANDSAT_MISSING.format(dir=folder))
    return open_tiffs([str(path)], name=LANDSAT, root=None).windows(LANDSAT_WINDOW)


def tiff_folder(paths: Sequence[str]) -> bool:
    """Whether image files `paths` form a TIFF set: there are some, and every one is a .tif/.tiff."""
    return bool(paths) and all(is_tiff(str(p)) for p in paths)


