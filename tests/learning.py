"""Does a short seeded run learn? kNN on a Fashion-MNIST subset, pretrained vs the same encoder at random init."""

from pathlib import Path

import torch
from torch.utils.data import Subset

from selfsup.data import open_labeled
from selfsup.eval import extract_features, frozen_encoder, knn_predict
from selfsup.train.run import train

NARROW = {"channels": [16, 32, 64, 128], "stem_width": 16}  # a quarter-width ResNet-18: fast on 2 cores
# What every method's learning test shares: 8192 training images, quarter-width ResNet-18, AdamW.
SHORT_RUN = dict(data="fashion-mnist", limit_samples=8192, backbone="resnet18", backbone_kwargs=NARROW,
                 max_steps=150, batch_size=128, optimizer="adamw", lr=0.002, weight_decay=1e-4, seed=0,
                 probe_every=0,  # the test measures kNN itself; no online probe
                 recipe="paper")  # each test's own settings over the paper's, not a CPU recipe's
# The masked image models' learning tests: a 2-block, 96-d ViT with 7 px patches (16 tokens + class token).
SMALL_VIT = dict(backbone="timm:vit_tiny_patch16_224", weight_decay=0.05,
                 backbone_kwargs={"img_size": 28, "patch_size": 7, "depth": 2, "embed_dim": 96, "num_heads": 3})
# the same with the mean patch token as the feature, for the methods that never train the class token
SMALL_VIT_AVG_POOL = dict(SMALL_VIT, backbone_kwargs={**SMALL_VIT["backbone_kwargs"], "global_pool": "avg"})


def knn_top1(checkpoint: str, train_set, test_set, backbone: str, backbone_kwargs: dict) -> float:
    encoder = frozen_encoder(checkpoint, channels=1, native_size=28, backbone=backbone, backbone_kwargs=backbone_kwargs)
    train_x, train_y = extract_features(encoder, train_set)
    test_x, test_y = extract_features(encoder, test_set)
    return float((knn_predict(train_x, train_y, test_x, k=20) == test_y).float().mean())


def knn_before_and_after(method: str, tmp_path: Path, **options) -> tuple[float, float]:
    """Train `method` with SHORT_RUN updated by `options`; kNN top-1 (4000 train -> 2000 test
    images) of the random-init encoder and of the trained one."""
    settings = {**SHORT_RUN, **options}
    run_dir = train(method, settings, out=str(tmp_path / "run"), progress=False)
    train_set, test_set = open_labeled("fashion-mnist")
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(1))
    train_set, test_set = Subset(train_set, order[:4000].tolist()), Subset(test_set, range(2000))
    torch.manual_seed(0)
    encoder = {"backbone": settings["backbone"], "backbone_kwargs": settings["backbone_kwargs"]}
    random_init = knn_top1("random", train_set, test_set, **encoder)
    pretrained = knn_top1(str(run_dir / "checkpoints" / "last.ckpt"), train_set, test_set, **encoder)
    print(f"kNN top-1 {method}: random init {random_init:.4f}, after {settings['max_steps']} steps "
          f"{pretrained:.4f}")
    return random_init, pretrained
