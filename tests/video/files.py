"""Tiny video files for the video tests, written with PyAV, and a tiny `moving-objects` in the test's own cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.cache import cache_root


def write_video(path: Path, frames: int = 20, size: tuple[int, int] = (48, 40), codec: str = "libx264",
                seed: int = 0) -> Path:
    """`frames` frames of `size` (width, height) at `path` (parents created): frame t is noise around a grey level
    10 t + 20 (so frames tell apart, in order), a bright 8 x 8 square at x = 2 t. Returns the path."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.clip(10 * t + 20 + rng.normal(0, 3, (height, width, 3)), 0, 255).astype(np.uint8)
            image[4:12, 2 * t % (width - 8): 2 * t % (width - 8) + 8] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_tiny_moving_objects(train: int = 16, test: int = 8) -> None:
    """The set's files and manifest, as load_moving_objects expects them, with `train` and `test` clips."""
    from selfsup.video import moving_objects

    rng = np.random.default_rng(0)
    backgrounds = {split: [rng.integers(0, 255, (40, 64, 80, 3), dtype=np.uint8)] for split in ("train", "test")}
    moving_objects._generate(cache_root() / f"moving-objects-v{moving_objects.VERSION}", moving_objects._recipe(),
                             backgrounds, {"train": train, "test": test})
