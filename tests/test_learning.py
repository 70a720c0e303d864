"""A short seeded SimCLR run on a Fashion-MNIST subset must beat the same encoder at random init."""

import pytest
import torch
from torch.utils.data import Subset

from selfsup.data import open_labeled
from selfsup.eval import extract_features, knn_predict, load_encoder
from selfsup.train.run import train

NARROW = {"channels": [16, 32, 64, 128], "stem_width": 16}  # a quarter-width ResNet-18: fast on 2 cores


def knn_top1(checkpoint: str, train_set, test_set) -> float:
    encoder = load_encoder(checkpoint, channels=1, native_size=28, backbone="resnet18", backbone_kwargs=NARROW)
    train_x, train_y = extract_features(encoder, train_set)
    test_x, test_y = extract_features(encoder, test_set)
    return float((knn_predict(train_x, train_y, test_x, k=20) == test_y).float().mean())


@pytest.mark.slow
def test_simclr_beats_random_init_on_fashion_mnist(tmp_path):
    options = dict(data="fashion-mnist", limit_samples=8192, backbone="resnet18", backbone_kwargs=NARROW,
                   max_steps=150, batch_size=128, optimizer="adamw", lr=0.002, weight_decay=1e-4, temperature=0.2,
                   crop_min_scale=0.4, jitter_strength=0.5, proj_hidden_dim=256, seed=0)
    run_dir = train("simclr", options, out=str(tmp_path / "run"), progress=False)

    train_set, test_set = open_labeled("fashion-mnist")
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(1))
    train_set, test_set = Subset(train_set, order[:4000].tolist()), Subset(test_set, range(2000))
    torch.manual_seed(0)
    random_init = knn_top1("random", train_set, test_set)
    pretrained = knn_top1(str(run_dir / "checkpoints" / "last.ckpt"), train_set, test_set)
    print(f"kNN top-1: random init {random_init:.4f}, after 150 SimCLR steps {pretrained:.4f}")
    assert pretrained > random_init + 0.03
