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
