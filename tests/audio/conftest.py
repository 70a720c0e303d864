"""Helpers shared by the audio tests: small sound files written with soundfile, and a small spoken-words set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from selfsup.audio import VOICES, spoken_words

SMALL_WORDS = ("one", "two", "yes", "stop")
SMALL_VOICES = VOICES[:4]


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine wave (T,)."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    """`wave` (T,) or (T, channels) at `path` (format from its extension), parents created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype=subtype)
    return path


@pytest.fixture(scope="session")
def small_words(tmp_path_factory):
    """4 words x 4 voices at one speed and pitch, generated with espeak-ng (installed by scripts/setup.sh)."""
    folder = tmp_path_factory.mktemp("spoken") / "spoken-words"
    return spoken_words(folder, SMALL_WORDS, SMALL_VOICES, speeds=(160,), pitches=(50,))
