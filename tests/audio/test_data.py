"""Audio decoding (any format, rate and channel count to 16 kHz mono), cropping, batching, and the folders and
bad files `open_audio` / `open_labeled_audio` meet."""

import numpy as np
import pytest
import torch

from selfsup.audio import (
    AudioClips,
    BadAudioError,
    audio_problem,
    collate_waveforms,
    decode_audio,
    index_audio,
    open_audio,
    open_labeled_audio,
    split_by_group,
)
from selfsup.errors import SelfsupError
from tests.audio.conftest import sine, write_audio


def peak_frequency(wave: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("name, rate, seconds", [("a.wav", 44_100, 1.0), ("b.flac", 22_050, 0.5),
                                                 ("c.ogg", 8_000, 0.75), ("d.wav", 16_000, 0.3)])
def test_any_rate_and_format_becomes_16khz_with_the_same_frequency(tmp_path, name, rate, seconds):
    path = write_audio(tmp_path / name, sine(440, seconds, rate), rate)
    wave = decode_audio(str(path))
    assert wave.dtype == torch.float32 and wave.shape == (round(seconds * 16_000),)
    assert abs(peak_frequency(wave, 16_000) - 440) <= 1 / seconds  # within one FFT bin
    assert 0.3 < wave.abs().max() < 0.7  # the amplitude (0.5) survives resampling and lossy coding


def test_down_sampling_removes_what_16khz_cannot_hold(tmp_path):
    # 10 kHz is above the new Nyquist frequency (8 kHz): kept, it would alias to 6 kHz.
    path = write_audio(tmp_path / "high.wav", sine(10_000, 0.5, 44_100) + sine(1_000, 0.5, 44_100, 0.1), 44_100)
    wave = decode_audio(str(path))
    assert abs(peak_frequency(wave, 16_000) - 1_000) <= 2


def test_channels_are_averaged_into_mono(tmp_path):
    left, right = np.full(8000, 0.5, np.float32), np.full(8000, 0.1, np.float32)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16_000, "FLOAT")
    wave = decode_audio(str(path))
    assert wave.shape == (8000,)
    torch.testing.assert_close(wave, torch.full((8000,), 0.3))


def test_crops_stay_within_max_seconds_and_follow_the_seed(tmp_path):
    ramp = np.linspace(-1, 1, 48_000, dtype=np.float32)  # 3 s at 16 kHz: every window is different
    long = write_audio(tmp_path / "long.wav", ramp, 16_000, "FLOAT")
    short = write_audio(tmp_path / "short.wav", ramp[:8000], 16_000, "FLOAT")
    clips = AudioClips([str(long), str(short)], max_seconds=1.0)
    crops = []
    for seed in (0, 0, 1, 2):
        torch.manual_seed(seed)
        crops.append(clips[0][0])
    assert all(c.shape == (16_000,) for c in crops)
    torch.testing.assert_close(crops[0], crops[1])
    assert not torch.equal(crops[0], crops[2]) or not torch.equal(crops[0], crops[3])
    for crop in crops:  # a window of the clip itself
        offset = int(np.argmin(np.abs(ramp - crop[0].item())))
        torch.testing.assert_close(crop, torch.from_numpy(ramp[offset:offset + 16_000]))
    assert clips[1][0].shape == (8000,)  # shorter than max_seconds: whole
    start = AudioClips([str(long)], max_seconds=0.5, crop="start")[0][0]
    torch.testing.assert_close(start, torch.from_numpy(ramp[:8000]))
    assert AudioClips([str(long)], max_seconds=None)[0][0].shape == (48_000,)


def test_a_resampled_crop_has_max_samples(tmp_path):
    path = write_audio(tmp_path / "long.ogg", sine(300, 3.0, 44_100), 44_100)
    torch.manual_seed(0)
    wave = AudioClips([str(path)], max_seconds=1.0)[0][0]
    assert wave.shape == (16_000,) and abs(peak_frequency(wave, 16_000) - 300) <= 1


def test_collate_pads_with_zeros_and_keeps_lengths():
    a, b = torch.ones(3), torch.full((5,), 2.0)
    waves, lengths = collate_waveforms([a, b])
    assert waves.dtype == torch.float32 and waves.shape == (2, 5)
    assert lengths.tolist() == [3, 5] and lengths.dtype == torch.int64
    assert waves[0].tolist() == [1, 1, 1, 0, 0] and waves[1].tolist() == [2] * 5
    waves, lengths, labels = collate_waveforms([(a, 4), (b, 7)])
    assert labels.tolist() == [4, 7] and lengths.tolist() == [3, 5]
    assert len(collate_waveforms([(a,), (b,)])) == 2


def test_a_loader_of_labeled_clips_gives_padded_batches(tmp_path):
    paths = [str(write_audio(tmp_path / f"{i}.wav", sine(200, 0.2 + 0.1 * i, 16_000), 16_000)) for i in range(3)]
    clips = AudioClips(paths, labels=[0, 1, 2], crop="start")
    waves, lengths, labels = next(iter(torch.utils.data.DataLoader(clips, batch_size=3, collate_fn=collate_waveforms)))
    assert waves.shape == (3, 6400) and lengths.tolist() == [3200, 4800, 6400] and labels.tolist() == [0, 1, 2]


def write_mixed_folder(folder):
    """Good files beside every kind of bad one; returns the good ones."""
    good = [write_audio(folder / "a" / "good.wav", sine(300, 0.5, 16_000), 16_000),
            write_audio(folder / "b" / "c" / "good.flac", sine(300, 0.5, 22_050), 22_050),
            write_audio(folder / "good.OGG", sine(300, 0.5, 16_000), 16_000)]
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.flac").write_bytes(b"fLaC" + np.random.default_rng(0).bytes(300))
    (folder / "text.ogg").write_text("not audio")
    write_audio(folder / "short.wav", sine(300, 0.05, 16_000), 16_000)  # under MIN_SECONDS
    (folder / "notes.mp3").write_bytes(b"ID3 not read")  # not a format selfsup reads: not listed
    write_audio(folder / ".hidden" / "x.wav", sine(300, 0.5, 16_000), 16_000)
    return sorted(str(p) for p in good)


def test_bad_files_are_skipped_and_counted(tmp_path, caplog):
    good = write_mixed_folder(tmp_path)
    assert len(index_audio(str(tmp_path))) == 7
    clips = open_audio(str(tmp_path))
    assert sorted(clips.paths.tolist()) == good and clips.labels is None and clips.crop == "random"
    skipped = sorted(p.rsplit("/", 1)[1] for p, _ in clips.skipped)
    assert skipped == ["corrupt.flac", "empty.wav", "short.wav", "text.ogg"]
    assert "shorter than the 0.1 s" in dict(clips.skipped)[str(tmp_path / "short.wav")]
    assert "skipping 4 of 7 audio files" in caplog.text
    assert all(clips[i][0].shape == (8000,) for i in range(len(clips)))


def test_on_bad_error_names_the_file(tmp_path):
    write_mixed_folder(tmp_path)
    with pytest.raises(BadAudioError, match=r"4 of 7 audio files .* e\.g\. '.*(corrupt\.flac|empty\.wav)'") as error:
        open_audio(str(tmp_path), on_bad="error")
    assert error.value.path.endswith(("corrupt.flac", "empty.wav")) and error.value.reason


def test_a_file_that_fails_when_decoded_is_replaced_by_the_next(tmp_path):
    good = write_audio(tmp_path / "good.wav", sine(300, 0.5, 16_000), 16_000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVE" + bytes(30))
    log_file = tmp_path / "bad.txt"
    clips = AudioClips([str(tmp_path / "broken.wav"), str(good)], labels=[0, 1], log_file=log_file)
    wave, label = clips[0]
    assert label == 1 and wave.shape == (8000,)
    clips[0]
    assert log_file.read_text().count("broken.wav\t") == 1  # reported once
    with pytest.raises(BadAudioError, match="broken.wav"):
        AudioClips([str(tmp_path / "broken.wav"), str(good)], on_bad="error")[0]


def test_header_checks(tmp_path):
    assert audio_problem(str(write_audio(tmp_path / "ok.flac", sine(300, 0.2, 48_000), 48_000))) is None
    (tmp_path / "empty.wav").write_bytes(b"")
    assert audio_problem(str(tmp_path / "empty.wav"))
    assert "shorter" in audio_problem(str(write_audio(tmp_path / "s.wav", sine(300, 0.09, 44_100), 44_100)))


def test_missing_or_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(SelfsupError, match=r"'.*nowhere' does not exist: pass a built-in name \(spoken-words"):
        open_audio(str(tmp_path / "nowhere"))
    with pytest.raises(SelfsupError, match="is a file, not a folder"):
        open_audio(str(write_audio(tmp_path / "one.wav", sine(300, 0.5, 16_000), 16_000)))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"png")
    with pytest.raises(SelfsupError, match=r"contains no audio files \(read: .wav .flac .ogg\)"):
        open_audio(str(tmp_path / "images"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    with pytest.raises(BadAudioError, match="1 of 1 audio files .*empty.wav"):
        open_audio(str(tmp_path / "bad"))
    with pytest.raises(SelfsupError, match="tuxpaint is unlabeled"):
        open_labeled_audio("tuxpaint")
    with pytest.raises(SelfsupError, match="crop"):
        AudioClips([], crop="middle")


def write_labeled(folder, counts):
    for c, n in counts.items():
        for i in range(n):
            write_audio(folder / c / f"{i}.wav", sine(100 + 50 * i, 0.2, 16_000), 16_000)


def test_a_labeled_folder_is_split_per_class_with_the_seed(tmp_path):
    write_labeled(tmp_path, {"dog": 5, "cat": 10})
    train, test, classes = open_labeled_audio(str(tmp_path), seed=3, test_fraction=0.2)
    assert classes == ["cat", "dog"] and train.classes == classes
    assert len(test) == 3 and sorted(test.labels.tolist()) == [0, 0, 1]
    assert not set(train.paths) & set(test.paths) and len(train) + len(test) == 15
    assert train.crop == test.crop == "start"
    again = open_labeled_audio(str(tmp_path), seed=3, test_fraction=0.2)[1]
    assert test.paths.tolist() == again.paths.tolist()
    other = [open_labeled_audio(str(tmp_path), seed=s)[1].paths.tolist() for s in range(4, 8)]
    assert any(o != test.paths.tolist() for o in other)
    assert [train[i][1] for i in range(len(train))] == train.labels.tolist()


def test_a_labeled_folder_with_train_and_test(tmp_path):
    write_labeled(tmp_path / "train", {"a": 2, "b": 2})
    write_labeled(tmp_path / "val", {"b": 1, "c": 1})
    train, test, classes = open_labeled_audio(str(tmp_path))
    assert classes == ["a", "b", "c"] and train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [1, 2]
    assert test[1][1] == 2


def test_a_class_needs_two_files_to_split(tmp_path):
    write_labeled(tmp_path, {"a": 3, "b": 1})
    with pytest.raises(SelfsupError, match="class 'b' has 1 usable audio file"):
        open_labeled_audio(str(tmp_path))


def test_split_by_group_keeps_each_group_on_one_side():
    groups = np.repeat(np.array(["v0", "v1", "v2", "v3", "v4"]), [3, 1, 4, 2, 5])
    train, test = split_by_group(groups, 0.4, seed=0)
    assert len(set(groups[train]) | set(groups[test])) == 5 and not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == 2 and sorted(np.concatenate([train, test]).tolist()) == list(range(15))
    assert split_by_group(groups, 0.4, 0)[1].tolist() == test.tolist()
    assert len({tuple(groups[split_by_group(groups, 0.4, s)[1]]) for s in range(10)}) > 1
