"""The built-in spoken words: the ten digits and the 25 other words of Speech Commands, synthesised by Debian's
espeak-ng in 8 English voices (accent + timbre) at 3 speeds and 3 pitches, 2,520 clips of about a second.

They are generated once into CACHE/spoken-words/WORD/VOICE-sSPEED-pPITCH.wav (CACHE being $SELFSUP_CACHE or
~/.cache/selfsup), in a temporary folder renamed into place after its manifest is written: a half-generated
folder is never taken for a complete one, even with several processes generating at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
from tqdm import tqdm

from selfsup.data.cache import CACHE_ENV, cache_root, move_into_place, read_cache, write_cache
from selfsup.errors import SelfsupError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = DIGITS + ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "bird", "cat",
                  "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward", "follow",
                  "learn", "visual")
# espeak-ng's formant voices of 8 English accents, each with its own variant (timbre), half of them female:
# `espeak-ng --voices=en` and `--voices=variant` list them (the mb-* voices need mbrola, not installed).
VOICES = ("en-gb+m3", "en-us+f2", "en-gb-scotland+m1", "en-gb-x-rp+f4", "en-gb-x-gbclan+m5", "en-gb-x-gbcwmd+f3",
          "en-029+m7", "en-us-nyc+f1")
SPEEDS = (130, 160, 190)  # words per minute; espeak-ng's default is 175
PITCHES = (35, 50, 65)  # 0..99; the default is 50
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete
BREAK = 0.6  # seconds of silence between the words of one espeak-ng call; none inside a word lasts half as long
MARGIN = 0.1  # seconds of silence kept around each word
SILENCE = 100  # int16 level (-50 dBFS) under which a sample is silent: the female variants breathe in pauses


@dataclass(frozen=True)
class SpokenWord:
    """One generated clip: its WAV file (22.05 kHz mono) and what was said, by which voice, how fast and how high."""

    path: str
    word: str
    voice: str
    speed: int
    pitch: int


def spoken_words(folder: str | os.PathLike | None = None, words: Sequence[str] = WORDS,
                 voices: Sequence[str] = VOICES, speeds: Sequence[int] = SPEEDS,
                 pitches: Sequence[int] = PITCHES) -> list[SpokenWord]:
    """Every (word, voice, speed, pitch) clip, generated into `folder` (default CACHE/spoken-words) unless a
    complete folder of this recipe is already there; a folder of another recipe is replaced."""
    root = Path(folder) if folder is not None else default_folder()
    recipe = [list(words), list(voices), [int(s) for s in speeds], [int(p) for p in pitches]]
    key = json.dumps(recipe)
    clips = _read_manifest(root, key)
    if clips is None:
        _generate(root, key, _jobs(*recipe))
        clips = _read_manifest(root, key)
        if clips is None:
            raise SelfsupError(f"cannot write the spoken words into '{root}': set {CACHE_ENV} to a writable folder")
    return [SpokenWord(str(root / _relative(*c)), *c) for c in clips]


def default_folder() -> Path:
    """CACHE/spoken-words, CACHE being $SELFSUP_CACHE or ~/.cache/selfsup (selfsup.data.cache)."""
    return cache_root() / "spoken-words"


def _jobs(words: list[str], voices: list[str], speeds: list[int], pitches: list[int]) -> list[list]:
    return [[w, v, s, p] for w in words for v in voices for s in speeds for p in pitches]


def _relative(word: str, voice: str, speed: int, pitch: int) -> str:
    return os.path.join(word, f"{voice}-s{speed}-p{pitch}.wav")


def _read_manifest(root: Path, key: str) -> list[list] | None:
    data = read_cache(root / MANIFEST, key)
    return None if data is None else data["clips"]


def _generate(root: Path, key: str, jobs: list[list]) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SelfsupError("the built-in spoken words are synthesised by espeak-ng, which is not installed: "
                           "apt-get install espeak-ng (or pass a folder of audio files)")
    if root.exists() and not (root / MANIFEST).is_file():
        raise SelfsupError(f"'{root}' exists but holds no spoken words ({MANIFEST} is missing): remove it, "
                           "or pass another folder")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        raise SelfsupError(f"cannot write the spoken words into '{root}': {e.strerror}; "
                           f"set {CACHE_ENV} to a writable folder") from None
    try:
        words = list(dict.fromkeys(job[0] for job in jobs))
        for word in words:
            (temp / word).mkdir()
        settings = list(dict.fromkeys((v, s, p) for _, v, s, p in jobs))
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # the threads wait on espeak-ng processes
            done = pool.map(lambda setting: _speak(espeak, temp, words, *setting), settings)
            for _ in tqdm(done, total=len(settings), desc="generating spoken words (espeak-ng, once)", disable=None):
                pass
        write_cache(temp / MANIFEST, key, {"clips": jobs})
        if not (temp / MANIFEST).is_file():
            raise SelfsupError(f"cannot write '{temp / MANIFEST}': set {CACHE_ENV} to a writable folder")
        move_into_place(temp, root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _speak(espeak: str, folder: Path, words: list[str], voice: str, speed: int, pitch: int) -> None:
    """Every word in one voice, speed and pitch: one espeak-ng call (starting one per word takes 10x longer)
    says them as sentences separated by BREAK seconds of silence, where the recording is then cut."""
    text = f'<break time="{round(BREAK * 1000)}ms"/>'.join(f"{escape(w)}." for w in words)
    out = folder / f"{voice}-s{speed}-p{pitch}.wav"
    run = subprocess.run([espeak, "-m", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out),
                          f"<speak>{text}</speak>"], capture_output=True, text=True)
    if run.returncode != 0 or not out.is_file():
        why = " ".join(run.stderr.split()) or f"exit status {run.returncode}"
        raise SelfsupError(f"espeak-ng could not speak with voice {voice}: {why}; "
                           "`espeak-ng --voices=en` lists the voices installed")
    wave, rate = sf.read(out, dtype="int16")
    out.unlink()
    margin = round(rate * MARGIN)  # silence kept on each side, as espeak-ng leaves around a single word
    wave = np.pad(wave, margin)  # the first word starts right away
    segments = _cut_at_silences(wave, round(rate * BREAK / 2))
    if len(segments) != len(words):
        raise SelfsupError(f"espeak-ng's recording of {len(words)} words in voice {voice} (speed {speed}, pitch "
                           f"{pitch}) splits into {len(segments)} parts at its silences; report this with "
                           "`espeak-ng --version`")
    for word, (start, end) in zip(words, segments):
        clip = wave[start - margin:end + margin]
        sf.write(folder / _relative(word, voice, speed, pitch), clip, rate, subtype="PCM_16")


def _cut_at_silences(wave: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """[(start, end)] of the parts of int16 `wave` (T,) between runs of at least `min_gap` silent samples."""
    quiet = np.abs(wave.astype(np.int32)) <= SILENCE
    silent = np.concatenate([[1], quiet.astype(np.int8), [1]])  # padded so the ends count as silence
    edges = np.flatnonzero(np.diff(silent))  # alternately where a sound starts and where it ends
    parts: list[list[int]] = []
    for start, end in zip(edges[0::2], edges[1::2]):
        if parts and start - parts[-1][1] < min_gap:  # a short silence inside a word (a stop consonant)
            parts[-1][1] = end
        else:
            parts.append([start, end])
    return [(int(s), int(e)) for s, e in parts]
