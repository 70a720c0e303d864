import numpy as np
import pytest

from selfsup.data.cache import cache_root
from selfsup.data.video import BadVideoError, builtin_clip_paths, decode_video, index_videos, video_frames
from selfsup.errors import SelfsupError
from tests.video.files import write_video


@pytest.mark.parametrize("codec,suffix", [("libx264", "mp4"), ("mpeg4", "avi"), ("libvpx", "webm")])
def test_decode_keeps_every_frame_in_order_at_the_short_side(tmp_path, codec, suffix):
    path = write_video(tmp_path / f"v.{suffix}", frames=15, size=(48, 40), codec=codec)
    frames = decode_video(str(path), 20)
    assert frames.dtype == np.uint8 and frames.shape == (15, 20, 24, 3)  # 40 -> 20, 48 -> 24: aspect kept
    grey = frames[:, 10:, :, :].astype(float).mean(axis=(1, 2, 3))  # below the bright square
    assert np.all(np.diff(grey) > 5)  # 10 grey levels apart, lossy codecs or not
    assert abs(grey[0] - 20) < 6


def test_odd_sizes_are_rounded_to_even_sides(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=3, size=(64, 36))
    assert decode_video(str(path), 15).shape == (3, 16, 26, 3)  # 64 * 15/36 = 26.7 -> 26 (even), 15 -> 16


def test_frames_are_decoded_once_then_read_from_the_cache(tmp_path):
    path = str(write_video(tmp_path / "v.mp4", frames=6))
    first = video_frames(path, 16)
    cached = list((cache_root() / "video-frames").glob("*.npy"))
    assert len(cached) == 1
    again = video_frames(path, 16)
    assert isinstance(again, np.memmap) and np.array_equal(first, again)
    video_frames(path, 24)  # another size: another file
    assert len(list((cache_root() / "video-frames").glob("*.npy"))) == 2


def test_an_undecodable_file_names_itself(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(BadVideoError, match="broken.mp4") as e:
        video_frames(str(bad), 16)
    assert e.value.path == str(bad) and e.value.reason
    with pytest.raises(BadVideoError, match="check the path"):
        video_frames(str(tmp_path / "missing.mp4"), 16)


def test_index_finds_videos_at_any_depth_and_skips_hidden_ones(tmp_path):
    for name in ("a.mp4", "sub/b.AVI", "sub/deeper/c.webm", ".hidden/d.mp4", "notes.txt", "e.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p[len(str(tmp_path)) + 1:] for p in index_videos(str(tmp_path))] == [
        "a.mp4", "sub/b.AVI", "sub/deeper/c.webm"]


def test_missing_builtin_clips_name_the_setup_step():
    with pytest.raises(SelfsupError, match="scripts/setup.sh"):
        builtin_clip_paths()  # each test has its own empty cache


def test_an_unwritable_cache_decodes_from_memory_with_a_warning(tmp_path, monkeypatch, caplog):
    path = str(write_video(tmp_path / "v.mp4", frames=5))
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "not-a-folder"))
    frames = video_frames(path, 16)
    assert not isinstance(frames, np.memmap) and frames.shape == (5, 16, 20, 3)
    assert "cannot write the decoded frames" in caplog.text
