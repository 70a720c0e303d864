"""The MFCC baseline: a fixed-size vector per clip that tells different sounds apart."""

import numpy as np
import torch

from selfsup.audio import MFCC_DIM, decode_audio, mfcc_features
from tests.audio.conftest import sine


def test_shape_and_type():
    for seconds in (0.1, 1.0, 3.3):
        features = mfcc_features(torch.from_numpy(sine(440, seconds, 16_000)))
        assert features.shape == (MFCC_DIM,) and features.dtype == torch.float32
        assert torch.isfinite(features).all()
    assert torch.isfinite(mfcc_features(torch.zeros(16_000))).all()  # silence: log of zero energy avoided


def test_different_sounds_differ_more_than_the_same_sound_twice():
    rng = np.random.default_rng(0)
    low, high = sine(300, 1.0, 16_000), sine(3000, 1.0, 16_000)
    noisy_low = low + 0.01 * rng.standard_normal(len(low)).astype(np.float32)
    f = {name: mfcc_features(torch.from_numpy(x)) for name, x in
         (("low", low), ("noisy_low", noisy_low), ("high", high))}
    assert torch.dist(f["low"], f["high"]) > 3 * torch.dist(f["low"], f["noisy_low"])
    torch.testing.assert_close(mfcc_features(torch.from_numpy(low)), f["low"])  # deterministic


def test_spoken_words_are_closer_to_the_same_word_in_another_voice(small_words):
    """Nearest neighbour across voices finds the word more often than chance (1/4) would."""
    features = {(c.word, c.voice): mfcc_features(decode_audio(c.path)) for c in small_words}
    voices = sorted({v for _, v in features})
    hits, trials = 0, 0
    for (word, voice), f in features.items():
        others = {k: torch.dist(f, g) for k, g in features.items() if k[1] != voice}
        hits += min(others, key=others.get)[0] == word
        trials += 1
    assert trials == 4 * len(voices) and hits / trials > 0.5
