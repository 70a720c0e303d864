"""Clip sampling: two clips of T frames at stride s cut out of one video far apart in time (ConST-CL's two
"spatio-temporally distant views"), and the `--data` spec of a video method: the built-in clips, `moving-objects`
or a folder of videos.

A video of L frames gives max(1, L // span) training items per epoch (span = (T - 1) * s + 1 frames, one clip's
extent), so long videos are visited more often than short ones; each item draws its two clips afresh. Decoding
is data/video.py's: every video is decoded once at a small size into the frame cache (by DataLoader workers, in
parallel), then memory-mapped here while a clip is cut from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.data.open import existing_folder
from selfsup.data.video import VIDEO_EXTENSIONS, BadVideoError, builtin_clip_paths, index_videos, video_frames
from selfsup.errors import SelfsupError

log = logging.getLogger(__name__)

BUILTIN_VIDEO = ("clips", "moving-objects")
_NO_VIDEOS = f"no video files (read: {' '.join(VIDEO_EXTENSIONS)})"


def clip_span(frames: int, stride: int) -> int:
    """Frames of the video one clip of `frames` frames at `stride` covers: (frames - 1) * stride + 1."""
    if frames < 1 or stride < 1:
        raise SelfsupError(f"a clip needs frames >= 1 and stride >= 1, got frames={frames}, stride={stride}")
    return (frames - 1) * stride + 1


def far_apart_starts(length: int, span: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """Start frames (t1, t2) of two clips of `span` frames in a video of `length` frames, far apart in time: their
    distance d = |t2 - t1| is uniform in [min(span, last), last], last = length - span the latest start, so the
    clips never overlap when the video holds two of them, and are as far apart as it allows otherwise; which clip
    comes first is random. Draws from `generator` (default: torch's global RNG). A SelfsupError if length < span."""
    last = length - span
    if last < 0:
        raise SelfsupError(f"a video of {length} frames is shorter than one clip of {span} frames")
    d = int(torch.randint(min(span, last), last + 1, (), generator=generator))  # distance between the starts
    t = int(torch.randint(0, last - d + 1, (), generator=generator))
    return (t, t + d) if bool(torch.rand((), generator=generator) < 0.5) else (t + d, t)


def centre_clip(video: torch.Tensor, frames: int, stride: int) -> torch.Tensor:
    """video (N, ...) -> (frames, ...): the clip of `frames` frames at `stride` in the middle of the video, what
    evaluation embeds; a video shorter than the clip's span repeats its last frame."""
    start = max(0, (len(video) - clip_span(frames, stride)) // 2)
    index = (start + stride * torch.arange(frames)).clamp(max=len(video) - 1)  # (frames,)
    return video[index]


class VideoClips(Dataset):
    """Pairs of clips of videos held as uint8 frame arrays (N_v, H, W, 3).

    In: the videos' frames, each an array or the path of a .npy file (a frame cache, memory-mapped only while a clip
    is cut from it: a process keeps no file open per video, so folders of thousands of videos work); frames per
    clip T, stride s; `views` (a callable (clip 1, clip 2), each uint8 (T, H, W, 3) -> a tuple, e.g.
    video.views.ClipViews); names (for messages); skipped [(path, reason)] of the videos left out. Every video must
    hold one clip (span = (T - 1) * s + 1 frames).
    Out: item i -> views(clip 1, clip 2) of video `video_of[i]`, clips from `far_apart_starts` drawn from torch's
    global RNG (a seeded caller, as KeyedSamples is, gets the same clips).
    """

    def __init__(self, videos: Sequence[np.ndarray | str], frames: int, stride: int, views: Callable[..., tuple],
                 names: Sequence[str] | None = None, skipped: list[tuple[str, str]] | None = None):
        self.videos, self.frames, self.stride, self.views = list(videos), frames, stride, views
        self.span = clip_span(frames, stride)
        self.names = list(names) if names is not None else [f"video {i}" for i in range(len(self.videos))]
        self.lengths = np.array([len(self._frames(v)) for v in range(len(self.videos))], dtype=np.int64)
        short = [(n, length) for n, length in zip(self.names, self.lengths) if length < self.span]
        if short:
            raise SelfsupError(f"video '{short[0][0]}' has {short[0][1]} frames, fewer than one clip of {self.span} "
                               f"(frames {frames} at stride {stride}); pass fewer --set frames or a smaller stride")
        if not self.videos:
            raise SelfsupError("VideoClips got no videos; pass at least one")
        counts = np.maximum(1, self.lengths // self.span)
        self.video_of = np.repeat(np.arange(len(self.videos)), counts)  # (items,) video index of each item
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return len(self.video_of)

    def _frames(self, video: int) -> np.ndarray:
        frames = self.videos[video]
        return np.load(frames, mmap_mode="r") if isinstance(frames, str) else frames

    def clip(self, video: int, start: int) -> torch.Tensor:
        """uint8 (T, H, W, 3): frames start, start + s, ... of video `video`."""
        frames = self._frames(video)[start: start + self.span: self.stride]
        return torch.from_numpy(np.array(frames))  # a copy: the frame cache is read-only (and then unmapped)

    def __getitem__(self, i: int) -> tuple:
        v = int(self.video_of[i])
        t1, t2 = far_apart_starts(int(self.lengths[v]), self.span)
        return self.views(self.clip(v, t1), self.clip(v, t2))


class _Decoded(Dataset):
    """Item i -> (path i, its frame cache's path or its frames, or the reason it cannot be decoded): one video
    decoded into the frame cache, in whichever DataLoader worker reads the item."""

    def __init__(self, paths: Sequence[str], short_side: int):
        self.paths, self.short_side = list(paths), short_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | str | None, str]:
        try:
            frames = video_frames(self.paths[i], self.short_side)
        except BadVideoError as e:
            return self.paths[i], None, e.reason
        # a path crosses from a worker for nothing (the frames stay on disk), and the map is closed here
        return self.paths[i], str(frames.filename) if isinstance(frames, np.memmap) else frames, ""


def _as_is(item: tuple) -> tuple:
    """The DataLoader's collate_fn: frames kept as numpy arrays (its default would make them tensors)."""
    return item


def decode_videos(paths: Sequence[str], short_side: int, span: int, where: str, progress: bool = True,
                  workers: int | None = None) -> tuple[list[np.ndarray | str], list[str], list[tuple[str, str]]]:
    """(frames of the usable videos: the path of each one's frame cache, or its frames where the cache could not be
    written; their video paths; [(path, reason)] of the skipped ones). Each video is decoded once into the frame
    cache (data/video.py) by DataLoader workers (default: up to 4, one core left to the main process; a tqdm bar),
    a video that cannot be decoded or is shorter than one clip of `span` frames skipped and counted in one logged
    line. A SelfsupError when none is usable."""
    if workers is None:
        workers = max(0, min(4, (os.cpu_count() or 1) - 1, len(paths) - 1))
    loader = DataLoader(_Decoded(paths, short_side), batch_size=None, num_workers=workers, collate_fn=_as_is)
    videos, kept, undecodable, short = [], [], [], []
    # disable=None: no bar where stderr is not a terminal (logs, tests)
    for path, frames, reason in tqdm(loader, total=len(paths), desc=f"decoding videos at {short_side} px",
                                     unit="video", disable=None if progress else True, leave=False):
        if frames is None:
            undecodable.append((path, reason))
            continue
        length = len(np.load(frames, mmap_mode="r")) if isinstance(frames, str) else len(frames)
        if length < span:
            short.append((path, f"{length} frames, fewer than the {span} of one clip"))
            continue
        videos.append(frames)
        kept.append(path)
    skipped = undecodable + short
    if skipped:
        parts = "; ".join(f"{len(found)} {what} (e.g. '{found[0][0]}': {found[0][1]})"
                          for found, what in ((undecodable, "cannot be decoded"), (short, "too short for one clip"))
                          if found)
        if not videos:
            raise SelfsupError(f"none of the {len(paths)} videos in '{where}' is usable: {parts}; pass videos of at "
                               f"least {span} frames, or fewer --set frames / a smaller --set stride")
        log.warning("skipped %d of %d videos in '%s': %s", len(skipped), len(paths), where, parts)
    return videos, kept, skipped


def open_videos(data: str | os.PathLike, frames: int, stride: int, short_side: int, views: Callable[..., tuple],
                progress: bool = True) -> VideoClips:
    """Unlabelled pairs of clips for pretraining: `clips` (the built-in real videos), `moving-objects` (its train
    clips, labels unused) or every video file under a folder (any depth). Unusable videos are skipped and counted
    (`skipped`); a SelfsupError for a folder without videos or without a usable one."""
    data = os.fspath(data)
    span = clip_span(frames, stride)
    if data == "moving-objects":
        from .moving_objects import load_moving_objects

        clips = load_moving_objects("train")
        if clips.frames.shape[1] < span:
            raise SelfsupError(f"moving-objects clips have {clips.frames.shape[1]} frames, fewer than one clip of "
                               f"{span} (frames {frames} at stride {stride}); pass fewer --set frames or a smaller "
                               "--set stride")
        names = [f"moving-objects/train/{i}" for i in range(len(clips))]
        return VideoClips(list(clips.frames), frames, stride, views, names)
    if data == "clips":
        paths, where = builtin_clip_paths(), "clips"
    else:
        root = existing_folder(data, BUILTIN_VIDEO, "videos")
        paths, where = index_videos(root), data
        if not paths:
            raise SelfsupError(f"'{data}' contains {_NO_VIDEOS}: pass a folder of videos or a built-in name "
                               f"({'|'.join(BUILTIN_VIDEO)})")
    videos, kept, skipped = decode_videos(paths, short_side, span, where, progress)
    return VideoClips(videos, frames, stride, views, kept, skipped)
