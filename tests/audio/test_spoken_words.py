"""The espeak-ng spoken words: generated once, atomically, one clip per (word, voice, speed, pitch) holding that
word; the labeled split keeps test voices unheard and every word on both sides."""

import json
import subprocess

import numpy as np
import pytest
import python_speech_features as psf

import selfsup.audio.data as audio_data
from selfsup.audio import VOICES, WORDS, decode_audio, open_audio, open_labeled_audio, spoken_words
from selfsup.audio.spoken_words import MANIFEST, _cut_at_silences
from selfsup.errors import SelfsupError
from tests.audio.conftest import SMALL_VOICES, SMALL_WORDS


def test_one_clip_per_word_and_voice_each_holding_one_word(small_words):
    assert len(small_words) == len(SMALL_WORDS) * len(SMALL_VOICES)
    assert {(c.word, c.voice) for c in small_words} == {(w, v) for w in SMALL_WORDS for v in SMALL_VOICES}
    for clip in small_words:
        wave = decode_audio(clip.path)
        assert 0.3 * 16_000 < len(wave) < 1.2 * 16_000  # one short word, not two, not a fragment
        assert wave[:800].abs().max() < 0.01 and wave[-800:].abs().max() < 0.01  # 0.05 s of silence at each end
        assert wave.abs().max() > 0.05


@pytest.mark.parametrize("voice", SMALL_VOICES[:2])
def test_each_clip_is_the_word_it_is_named_after(small_words, tmp_path, voice):
    """A clip matches espeak-ng saying its word alone, in the same voice, better than saying any other word
    (MFCCs aligned by dynamic time warping: the clips are cut from one longer, slightly faster recording)."""
    alone = {}
    for word in SMALL_WORDS:
        out = tmp_path / f"{word}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-p", "50", "-w", str(out), f"{word}."], check=True)
        alone[word] = spoken_frames(str(out))
    for clip in (c for c in small_words if c.voice == voice):
        distance = {word: dtw_distance(spoken_frames(clip.path), frames) for word, frames in alone.items()}
        assert min(distance, key=distance.get) == clip.word, distance


def spoken_frames(path: str) -> np.ndarray:
    """(frames, 13) MFCCs of the loud frames of a file, centred."""
    mfcc = psf.mfcc(decode_audio(path).double().numpy(), 16_000, winfunc=np.hamming)
    mfcc = mfcc[mfcc[:, 0] > mfcc[:, 0].max() - 8]  # within 8 nepers of the loudest frame's log energy
    return mfcc - mfcc.mean(axis=0)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The mean frame distance along the best monotonic alignment of a (n, D) with b (m, D)."""
    cost = np.linalg.norm(a[:, None] - b[None], axis=2)  # (n, m)
    total = np.full((len(a) + 1, len(b) + 1), np.inf)
    total[0, 0] = 0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
    return float(total[-1, -1] / (len(a) + len(b)))


def test_generated_once_then_read_from_the_manifest(small_words, monkeypatch):
    folder = small_words[0].path.rsplit("/", 2)[0]
    manifest = json.loads(open(f"{folder}/{MANIFEST}").read())
    assert len(manifest["clips"]) == len(small_words)
    monkeypatch.setattr(subprocess, "run", fail)  # a second call must not synthesise anything
    again = spoken_words(folder, SMALL_WORDS, SMALL_VOICES, speeds=(160,), pitches=(50,))
    assert again == small_words


def fail(*args, **kwargs):
    raise AssertionError("espeak-ng was called again")


def test_a_folder_without_manifest_is_not_taken_for_complete(tmp_path):
    (tmp_path / "words" / "one").mkdir(parents=True)
    (tmp_path / "words" / "one" / "x.wav").write_bytes(b"half written")
    with pytest.raises(SelfsupError, match="holds no spoken words .*manifest.json is missing.*remove it"):
        spoken_words(tmp_path / "words", ("one",), SMALL_VOICES[:1], (160,), (50,))


def test_another_recipe_replaces_the_folder(tmp_path):
    first = spoken_words(tmp_path / "w", ("one",), SMALL_VOICES[:2], (160,), (50,))
    second = spoken_words(tmp_path / "w", ("two",), SMALL_VOICES[:1], (130, 190), (50,))
    assert [(c.word, c.speed) for c in second] == [("two", 130), ("two", 190)]
    assert first and not (tmp_path / "w" / "one").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temporary folder left behind


def test_without_espeak_ng_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SelfsupError, match="apt-get install espeak-ng"):
        spoken_words(tmp_path / "w", ("one",), SMALL_VOICES[:1], (160,), (50,))
    assert not (tmp_path / "w").exists()


def test_an_unknown_voice_is_a_clear_error(tmp_path):
    with pytest.raises(SelfsupError, match="espeak-ng could not speak with voice xx-nowhere"):
        spoken_words(tmp_path / "w", ("one",), ("xx-nowhere",), (160,), (50,))
    assert list(tmp_path.iterdir()) == []


def test_cut_at_silences_ignores_short_pauses_and_quiet_noise():
    wave = np.zeros(100, np.int16)
    wave[10:20] = 1000
    wave[23:30] = -1000  # 3 quiet samples inside a word
    wave[31:40] = 50  # quiet breath: silent
    wave[70:80] = 2000
    assert _cut_at_silences(wave, min_gap=10) == [(10, 30), (70, 80)]
    assert _cut_at_silences(np.zeros(50, np.int16), 10) == []


def test_the_labeled_split_holds_out_voices_and_keeps_every_word(small_words, monkeypatch):
    monkeypatch.setattr(audio_data, "spoken_words", lambda: small_words)
    monkeypatch.setattr(audio_data, "WORDS", SMALL_WORDS)
    train, test, classes = open_labeled_audio("spoken-words", seed=0)
    assert classes == list(SMALL_WORDS)
    assert not set(train.groups) & set(test.groups) and len(set(test.groups)) == 1  # 1 of 4 voices
    for clips in (train, test):
        assert sorted(set(clips.labels.tolist())) == list(range(len(SMALL_WORDS)))
        for path, label in zip(clips.paths, clips.labels.tolist()):
            assert f"/{classes[label]}/" in path
    assert {tuple(open_labeled_audio("spoken-words", seed=s)[1].groups) for s in range(6)} != {tuple(test.groups)}
    pretrain = open_audio("spoken-words")
    assert pretrain.labels is None and pretrain.crop == "random" and set(pretrain.paths) == set(train.paths)


def test_the_default_voices_are_installed():
    languages = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    variants = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    for voice in VOICES:
        language, variant = voice.split("+")
        assert f" {language} " in languages and f"!v/{variant} " in variants, voice
    assert len(set(VOICES)) == 8 and len(set(WORDS)) == len(WORDS) == 35
