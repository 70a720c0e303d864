"""Reader for the idx format of (Fashion-)MNIST: a magic number, big-endian dimensions, raw values."""

from __future__ import annotations

import gzip

import numpy as np

from selfsup.errors import SelfsupError

# Third byte of the magic number -> element type; multi-byte values are big-endian by the format.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (gzipped when its name ends in .gz) into a writable array shaped by its header."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # a cut .gz raises EOFError, a damaged one gzip.BadGzipFile (an OSError)
        raise SelfsupError(f"cannot read idx file '{path}': {e}; replace it with an intact copy") from None
    return parse_idx(data, path)


def parse_idx(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an idx file; `path` only names the file in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise SelfsupError(
            f"'{path}' is not an idx file (magic number {data[:4].hex() or 'missing'}); "
            "pass the original (Fashion-)MNIST idx files"
        )
    ndim, dtype = data[3], np.dtype(_DTYPES[data[2]])
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4)) if len(data) >= header else ()
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < header or len(data) != expected:
        raise SelfsupError(
            f"idx file '{path}' has {len(data)} bytes but its header promises {max(expected, header)}: "
            "it is truncated or damaged; replace it with an intact copy"
        )
    # astype copies into native byte order: the result is writable and owns its memory.
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
