import gzip
import struct

import numpy as np
import pytest

from selfsup.data import read_idx
from selfsup.errors import SelfsupError


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_reads_known_bytes(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    # magic 0x00000803, dims 2 x 2 x 3, then the values 0..11 in row-major order
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(12)))
    array = read_idx(str(path))
    assert array.dtype == np.uint8 and array.shape == (2, 2, 3)
    assert array[1, 0, 2] == 8 and array.ravel().tolist() == list(range(12))
    array[0, 0, 0] = 5  # writable: torch.from_numpy will not warn
    assert array[0, 0, 0] == 5


def test_reads_gzipped_labels(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "y-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    assert read_idx(str(path)).tolist() == [3, 1, 4, 1, 5]


def test_reads_big_endian_int16(tmp_path):
    path = tmp_path / "z.idx"
    path.write_bytes(idx_bytes(np.array([-2, 300], dtype=">i2"), 0x0B))
    array = read_idx(str(path))
    assert array.tolist() == [-2, 300] and array.dtype.isnative


def test_wrong_magic_names_the_file(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(SelfsupError, match="not an idx file") as e:
        read_idx(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [2, 10, 20])
def test_truncated_file_names_the_file(tmp_path, cut):
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8))[:cut])
    with pytest.raises(SelfsupError, match="truncated|not an idx file") as e:
        read_idx(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_trailing_bytes_are_rejected(tmp_path):
    path = tmp_path / "long-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(SelfsupError, match="header promises 12"):
        read_idx(str(path))


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10)))[:-30])
    with pytest.raises(SelfsupError, match="cannot read idx file") as e:
        read_idx(str(path))
    assert str(path) in str(e.value)
