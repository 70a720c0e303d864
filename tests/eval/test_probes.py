"""The one kNN and linear probe on features: accuracies in [0, 1], perfect on separable features, chance on noise;
audio features of every clip, in order, through any encoder's batch and embed."""

import numpy as np
import pytest
import torch

from selfsup.audio import MFCC_DIM, AudioClips, collate_waveforms
from selfsup.errors import SelfsupError
from selfsup.eval import FrozenEncoder, extract_features, frozen_encoder
from selfsup.eval.run import top1
from tests.audio.conftest import sine, write_audio


def clusters(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes of 8-d features, each near its own axis."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    features = torch.eye(8)[labels] * 5 + 0.3 * torch.randn(len(labels), 8, generator=g)
    return features, labels


def probe(train_x, train_y, test_x, test_y, k=20):
    return {p: top1(p, train_x, train_y, test_x, test_y, k) for p in ("knn", "linear")}


def pooled_features(embed, clips, batch_size=64):
    """Features through an encoder whose batch is the zero-padded waves and their lengths."""
    encoder = FrozenEncoder("audio", "test", lambda waves: collate_waveforms(waves), lambda b: embed(*b))
    return extract_features(encoder, clips, batch_size)


def test_separable_features_are_probed_perfectly():
    (train_x, train_y), (test_x, test_y) = clusters(30, 0), clusters(10, 1)
    result = probe(train_x, train_y, test_x, test_y, k=20)
    assert result == {"knn": 1.0, "linear": 1.0}
    swapped = probe(train_x, train_y, test_x, (test_y + 1) % 3)  # wrong answers score zero
    assert swapped == {"knn": 0.0, "linear": 0.0}


def test_noise_scores_near_chance_within_zero_and_one():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 16, generator=g), torch.randint(0, 4, (600,), generator=g)
    result = probe(x[:400].numpy(), y[:400].numpy(), x[400:].numpy(), y[400:].numpy())
    assert set(result) == {"knn", "linear"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert all(abs(v - 0.25) < 0.12 for v in result.values()), result


@pytest.fixture
def tones(tmp_path):
    """6 labeled clips of rising pitch and length, one of them 44.1 kHz stereo."""
    paths = []
    for i in range(6):
        rate = 44_100 if i == 2 else 16_000
        wave = sine(200 * (i + 1), (3200 + 800 * i) / 16_000, rate)
        paths.append(str(write_audio(tmp_path / f"{i}.wav", np.stack([wave, wave], 1) if i == 2 else wave, rate)))
    return AudioClips(paths, labels=[0, 1, 0, 1, 0, 1], crop="start")


def test_pooled_features_keep_order_and_see_the_lengths(tones):
    def embed(waves, lengths):  # (B, T), (B,) -> (B, 2): the length and the mean energy of the real samples
        assert waves.shape == (len(lengths), int(lengths.max()))
        energy = (waves ** 2).sum(dim=1) / lengths
        return torch.stack([lengths.float(), energy], dim=1)

    features, labels = pooled_features(embed, tones, batch_size=4)
    assert features.shape == (6, 2) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert features[:, 0].tolist() == [3200 + 800 * i for i in range(6)]
    torch.testing.assert_close(features[:, 1], torch.full((6,), 0.125), atol=2e-3, rtol=0)  # sine of 0.5: 0.5²/2


def test_an_empty_set_is_refused(tones):
    with pytest.raises(SelfsupError, match="no examples to evaluate"):
        pooled_features(lambda w, n: w, tones.subset([]))


def test_mfcc_features_of_a_set_are_one_row_per_clip_in_order(tones):
    mfcc = frozen_encoder("mfcc")
    features, labels = extract_features(mfcc, tones)
    assert features.shape == (6, MFCC_DIM) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert len({tuple(f.tolist()) for f in features}) == 6
    in_workers = extract_features(mfcc, tones, num_workers=2)
    torch.testing.assert_close(in_workers[0], features)
    assert in_workers[1].tolist() == labels.tolist()
