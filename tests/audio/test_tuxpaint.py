"""The tuxpaint recordings (Debian's tuxpaint-stamps-default, installed by scripts/setup.sh): found with their
language and stamp; language identification on the 9 large languages, split so no stamp is on both sides."""

import collections
import os

import pytest

from selfsup.audio import LANGUAGES, decode_audio, open_audio, open_labeled_audio, tuxpaint_recordings
from selfsup.audio.tuxpaint import TUXPAINT_DIR
from selfsup.errors import SelfsupError


def test_recordings_carry_their_language_and_stamp():
    recordings = tuxpaint_recordings()
    assert len(recordings) > 7000, f"{len(recordings)} recordings: is tuxpaint-stamps-default installed in full?"
    counts = collections.Counter(r.language for r in recordings)
    assert len(counts) == 12
    assert {language for language, n in counts.items() if n >= 300} == set(LANGUAGES)
    for r in recordings[::500]:
        assert os.path.isfile(r.path) and r.path.startswith(TUXPAINT_DIR + "/")
        assert r.path.startswith(os.path.join(TUXPAINT_DIR, r.stamp) + f"_desc_{r.language}.ogg")
        assert os.path.isfile(os.path.join(TUXPAINT_DIR, r.stamp) + ".png") or os.path.isfile(
            os.path.join(TUXPAINT_DIR, r.stamp) + ".svg")  # the picture described


def test_a_recording_decodes_to_16khz_mono():
    recording = tuxpaint_recordings()[0]
    wave = decode_audio(recording.path, max_samples=48_000)
    assert wave.dim() == 1 and 1_600 <= len(wave) <= 48_000 and wave.abs().max() > 0.01


def test_language_identification_splits_by_stamp():
    train, test, classes = open_labeled_audio("tuxpaint-languages", seed=0)
    assert classes == list(LANGUAGES)
    assert not set(train.groups) & set(test.groups)
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.25
    for clips in (train, test):
        assert sorted(set(clips.labels.tolist())) == list(range(9))  # every language on both sides
        for path, label in zip(clips.paths[::97], clips.labels[::97].tolist()):
            assert path.endswith(f"_desc_{classes[label]}.ogg")
    other = open_labeled_audio("tuxpaint-languages", seed=1)[1]
    assert set(other.groups) != set(test.groups)


def test_pretraining_hears_every_language_but_no_test_stamp():
    _, test, _ = open_labeled_audio("tuxpaint-languages", seed=0)
    pretrain = open_audio("tuxpaint")
    assert pretrain.labels is None and pretrain.crop == "random"
    assert not set(pretrain.groups) & set(test.groups)
    languages = {path.rsplit("_desc_", 1)[1].split(".")[0] for path in pretrain.paths}
    assert set(LANGUAGES) < languages


def test_a_missing_package_says_what_to_install(tmp_path):
    with pytest.raises(SelfsupError, match="apt-get install tuxpaint-stamps-default"):
        tuxpaint_recordings(str(tmp_path / "nowhere"))
    with pytest.raises(SelfsupError, match="reinstall tuxpaint-stamps-default"):
        tuxpaint_recordings(str(tmp_path))
