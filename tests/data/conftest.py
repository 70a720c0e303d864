"""Helpers shared by the data tests: tiny image files written with PIL."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def write_image(path: Path, value: int = 100, size: tuple[int, int] = (5, 4), mode: str = "L", fmt: str | None = None) -> Path:
    """A uniform image of `value` (an int, or a tuple per band) at `path`, parents created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, fmt)
    return path


@pytest.fixture
def make_image():
    return write_image


def write_shards(folder: Path, sizes: list[int], bad: tuple[int, ...] = ()) -> list[Path]:
    """folder/0.tar, 1.tar ... holding sizes[j] samples each, numbered k = 0, 1, ... across the shards:
    k.png of 4+k%3 x 3 pixels whose red value is k, beside k.cls (not an image); sample k in `bad` is
    garbage bytes instead. Written with webdataset's TarWriter."""
    import io

    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    paths, k = [], 0
    for j, size in enumerate(sizes):
        paths.append(folder / f"{j}.tar")
        with wds.TarWriter(str(paths[-1]), encoder=False) as writer:
            for _ in range(size):
                buffer = io.BytesIO()
                Image.new("RGB", (4 + k % 3, 3), (k, 0, 0)).save(buffer, "PNG")
                image = b"not an image" if k in bad else buffer.getvalue()
                writer.write({"__key__": f"sample{k:05d}", "png": image, "cls": str(k % 2).encode()})
                k += 1
    return paths
