"""A short seeded SimCLR run on a Fashion-MNIST subset must beat the same encoder at random init."""

import pytest

from tests.learning import knn_before_and_after


@pytest.mark.slow
def test_simclr_beats_random_init_on_fashion_mnist(tmp_path):
    random_init, pretrained = knn_before_and_after("simclr", tmp_path, temperature=0.2, crop_min_scale=0.4,
                                                   jitter_strength=0.5, proj_hidden_dim=256)
    assert pretrained > random_init + 0.03
