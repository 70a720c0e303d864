import logging

import numpy as np
import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.video import ClipViews, VideoClips, clip_span, far_apart_starts, open_videos
from tests.video.files import write_video


def test_clip_span():
    assert clip_span(16, 2) == 31 and clip_span(8, 1) == 8 and clip_span(1, 5) == 1
    with pytest.raises(SelfsupError, match="stride >= 1"):
        clip_span(8, 0)


@pytest.mark.parametrize("length,span", [(100, 15), (40, 15), (20, 15), (15, 15)])
def test_two_clips_fit_and_are_as_far_apart_as_the_video_allows(length, span):
    g = torch.Generator().manual_seed(0)
    last = length - span
    firsts = []
    for _ in range(300):
        t1, t2 = far_apart_starts(length, span, g)
        assert 0 <= t1 <= last and 0 <= t2 <= last  # both clips inside the video
        assert abs(t2 - t1) >= min(span, last)  # no overlap when two clips fit, else as far apart as possible
        firsts.append(t1 < t2)
    if last > 0:
        assert 0.35 < np.mean(firsts) < 0.65  # either clip comes first


def test_a_video_shorter_than_one_clip_is_refused():
    with pytest.raises(SelfsupError, match="shorter than one clip of 15"):
        far_apart_starts(14, 15)
    with pytest.raises(SelfsupError, match="fewer than one clip of 15"):
        VideoClips([np.zeros((14, 8, 8, 3), np.uint8)], 8, 2, lambda a, b: (a, b))


def test_items_per_video_follow_its_length_and_clips_follow_the_stride():
    videos = [np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(3, -1) for n in (10, 31, 5)]  # frame t = t
    clips = VideoClips(videos, 3, 2, lambda a, b: (a, b))  # span 5
    assert len(clips) == 2 + 6 + 1 and list(clips.video_of) == [0] * 2 + [1] * 6 + [2]
    torch.manual_seed(0)
    a, b = clips[3]  # video 1
    assert a.shape == (3, 1, 1, 3) and a.dtype == torch.uint8
    for clip in (a, b):
        t = clip[:, 0, 0, 0].tolist()
        assert t[1] - t[0] == 2 and t[2] - t[1] == 2  # stride 2
    assert abs(int(a[0, 0, 0, 0]) - int(b[0, 0, 0, 0])) >= 5  # 31 frames hold two clips of 5: apart


def test_a_folder_with_bad_and_short_videos_skips_and_counts_them(tmp_path, caplog):
    for i in range(2):
        write_video(tmp_path / f"good{i}.mp4", frames=12, seed=i)
    write_video(tmp_path / "short.mp4", frames=3)
    (tmp_path / "broken.avi").write_bytes(b"RIFF....AVI junk")
    with caplog.at_level(logging.WARNING):
        clips = open_videos(str(tmp_path), 4, 2, 20, ClipViews(16, 3), progress=False)  # span 7
    assert [p.rsplit("/", 1)[1] for p in clips.names] == ["good0.mp4", "good1.mp4"]
    assert all(isinstance(v, str) and v.endswith(".npy") for v in clips.videos)  # frame caches, mapped on access
    assert clips.lengths.tolist() == [12, 12] and len(clips) == 2  # 12 // 7 = 1 item per video
    assert sorted(p.rsplit("/", 1)[1] for p, _ in clips.skipped) == ["broken.avi", "short.mp4"]
    line = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(line) == 1 and "skipped 2 of 4 videos" in line[0] and "1 cannot be decoded (e.g. '" in line[0] \
        and "1 too short for one clip (e.g. '" in line[0] and "short.mp4': 3 frames, fewer than the 7 of one" in line[0]
    x1, x2, boxes = clips[0]
    assert x1.shape == x2.shape == (3, 4, 16, 16) and boxes.shape == (3, 4)


def test_folders_without_usable_videos_are_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.jpg").write_bytes(b"")
    with pytest.raises(SelfsupError, match="contains no video files .* pass a folder of videos"):
        open_videos(str(tmp_path / "empty"), 4, 2, 20, ClipViews(16), progress=False)
    write_video(tmp_path / "short" / "a.mp4", frames=3)
    with pytest.raises(SelfsupError, match="none of the 1 videos .* too short for one clip.*pass videos of at least 7"):
        open_videos(str(tmp_path / "short"), 4, 2, 20, ClipViews(16), progress=False)
    with pytest.raises(SelfsupError, match="does not exist"):
        open_videos(str(tmp_path / "nowhere"), 4, 2, 20, ClipViews(16), progress=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_in_loader_workers_gives_what_the_main_process_gives(tmp_path, workers):
    from selfsup.video import decode_videos

    paths = [str(write_video(tmp_path / f"{i}.mp4", frames=8 + i, seed=i)) for i in range(3)]
    (tmp_path / "bad.mp4").write_bytes(b"junk")
    videos, kept, skipped = decode_videos([*paths, str(tmp_path / "bad.mp4")], 16, 9, "here", False, workers)
    assert kept == paths[1:] and [p for p, _ in skipped] == [str(tmp_path / "bad.mp4"), paths[0]]
    assert [len(np.load(v, mmap_mode="r")) for v in videos] == [9, 10]
