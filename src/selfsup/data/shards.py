"""Images stored in WebDataset tar shards (`--data shards:PATTERN`): many samples to a file, read as a
stream, so that large and multi-node runs do not open millions of small files.

A sample is a run of consecutive tar members with the same key (the name up to its first dot, as
webdataset groups them) that are image files: `000123.jpg`, or `000123.png` beside `000123.cls`
(members that are not images are never read). Each shard's sample count is read once from its tar
headers and cached, checked against the shard's size and mtime: it gives every epoch a known length.
"""

from __future__ import annotations

import os
import re
import tarfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tarfile_samples

from selfsup.errors import SelfsupError

from .cache import cache_file, read_cache, settled, write_cache
from .folder import IMAGE_EXTENSIONS

SPEC_PREFIX = "shards:"
_META = re.compile(r"__[^/]*__($|/)")  # members webdataset's tar reader skips (tar_file_iterator's skip_meta)
_EXAMPLE = "shards:/data/train-{000000..000099}.tar, shards:FILE.tar or shards:FOLDER (its .tar files)"
_SUFFIXES = frozenset(IMAGE_EXTENSIONS)


def is_shard_spec(spec: str | os.PathLike) -> bool:
    return os.fspath(spec).startswith(SPEC_PREFIX)


class ShardSet:
    """Image samples in tar shards, read in runs rather than one at a time.

    In: shard paths, the number of samples in each, a name for logs. Out: read(order, start, n) yields
    (index, name, image bytes), index numbering the samples 0 .. len-1 in the shards' given order
    whatever order they are read in; decode the bytes with decode_bytes. channels (3) and native_size
    (None: sizes vary) as an ImageSet's.
    """

    channels = 3
    native_size = None
    classes = None

    def __init__(self, paths: Sequence[str], counts: Sequence[int], name: str = "shards"):
        self.paths, self.counts, self.name = list(paths), [int(c) for c in counts], name
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)]).tolist()
        self._shard = {p: j for j, p in enumerate(self.paths)}

    def __len__(self) -> int:
        return self.offsets[-1]

    def read(self, order: Sequence[int], start: int, n: int) -> Iterator[tuple[int, str, bytes]]:
        """n samples from position `start` of the sequence the shards make when laid end to end in
        `order` (a permutation of their indices), wrapping round at its end; only the shards that
        hold them are opened, the first read from its beginning."""
        ends = np.cumsum([self.counts[j] for j in order])
        while n > 0:
            start %= len(self)
            take = min(n, len(self) - start)
            first = int(np.searchsorted(ends, start, side="right"))  # the shard holding position start
            last = int(np.searchsorted(ends, start + take - 1, side="right"))
            skip = start - (int(ends[first - 1]) if first else 0)
            yield from islice(self._stream([order[k] for k in range(first, last + 1)]), skip, skip + take)
            start, n = start + take, n - take

    def _stream(self, shards: list[int]) -> Iterator[tuple[int, str, bytes]]:
        """Every sample of `shards` in turn, through webdataset's tar reader and grouping."""
        samples = tarfile_samples([{"url": self.paths[j]} for j in shards], select_files=is_image_member)
        url, position = None, 0
        for sample in samples:
            if sample["__url__"] != url:
                url, position = sample["__url__"], 0
            suffix = next(k for k in sample if not k.startswith("__"))
            yield self.offsets[self._shard[url]] + position, f"{url}:{sample['__key__']}.{suffix}", sample[suffix]
            position += 1


def open_shards(spec: str) -> ShardSet:
    """The ShardSet a `shards:PATTERN` spec names (see shard_paths), its samples counted."""
    paths = shard_paths(spec)
    counts = shard_counts(paths)
    if sum(counts) == 0:
        raise SelfsupError(f"the {len(paths)} shards of '{spec}' hold no image members: write each image as "
                           f"a member named KEY.EXT, EXT one of {' '.join(e[1:] for e in IMAGE_EXTENSIONS)}")
    return ShardSet(paths, counts, spec)


def shard_paths(spec: str) -> list[str]:
    """The tar files of `shards:PATTERN`: a brace pattern (/data/train-{000000..000099}.tar), one tar
    file, or a folder (every .tar file in it, sorted); each must exist."""
    pattern = os.path.expanduser(spec[len(SPEC_PREFIX):] if is_shard_spec(spec) else spec)
    if not pattern:
        raise SelfsupError(f"'{spec}' names no shards: pass {_EXAMPLE}")
    if os.path.isdir(pattern):
        with os.scandir(pattern) as entries:
            paths = sorted(e.path for e in entries
                           if e.name.endswith(".tar") and not e.name.startswith(".") and e.is_file())
        if not paths:
            raise SelfsupError(f"folder '{pattern}' holds no .tar files: pass a folder of tar shards, or {_EXAMPLE}")
        return paths
    try:
        paths = expand_urls(pattern)
    except (AssertionError, ValueError) as e:  # webdataset asserts on an unknown ${VAR}
        raise SelfsupError(f"cannot expand shard pattern '{pattern}': {e}; pass {_EXAMPLE}") from None
    missing = [p for p in paths if not os.path.isfile(p)]
    if len(paths) == 1 and missing:
        raise SelfsupError(f"shard file '{pattern}' does not exist: check the path, or pass {_EXAMPLE}")
    if missing:
        raise SelfsupError(f"shard pattern '{pattern}' names {len(paths)} files, {len(missing)} of which do not exist, "
                           f"e.g. '{missing[0]}': check the pattern, or pass {_EXAMPLE}")
    if len(set(paths)) < len(paths):
        raise SelfsupError(f"shard pattern '{pattern}' names some shards twice: name each shard once")
    return paths


def shard_counts(paths: Sequence[str], threads: int = 8) -> list[int]:
    """Samples in each shard: from the cache where a shard has the size and mtime it was counted at,
    else counted from its tar headers (threaded) and cached."""
    key = "\n".join(os.path.realpath(p) for p in paths)
    file = cache_file("shards", key)
    cached = (read_cache(file, key) or {}).get("shards")
    if not (isinstance(cached, list) and len(cached) == len(paths)):
        cached = [None] * len(paths)
    start = time.time_ns()
    stats = [[st.st_size, st.st_mtime_ns] for st in map(os.stat, paths)]
    todo = [j for j, (st, c) in enumerate(zip(stats, cached))
            if not (isinstance(c, list) and len(c) == 3 and c[:2] == st)]
    with ThreadPoolExecutor(threads) as pool:
        for j, n in zip(todo, pool.map(count_samples, [paths[j] for j in todo])):
            # an mtime too close to now is stored as None, which never matches: counted again next time
            cached[j] = [stats[j][0], stats[j][1] if settled(stats[j][1], start) else None, n]
    if todo:
        write_cache(file, key, {"shards": cached})
    return [int(c[2]) for c in cached]


def count_samples(path: str) -> int:
    """Samples in one shard, grouped as the stream groups them, from the tar headers alone."""
    try:
        with tarfile.open(path) as tar:  # random access: the reader seeks past each member's data
            members = ({"fname": m.name, "data": b"", "__url__": path} for m in tar
                       if m.isreg() and is_image_member(m.name) and not _META.match(m.name))
            return sum(1 for _ in group_by_keys(members))
    except (OSError, tarfile.TarError, ValueError) as e:
        raise SelfsupError(f"cannot read shard '{path}': {' '.join(str(e).split())}; fix it or leave it out") from None


def is_image_member(name: str) -> bool:
    """Whether a tar member is an image file, by its extension."""
    return os.path.splitext(name)[1].lower() in _SUFFIXES
