import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.infonce import InfoNCELoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.moco import MoCoV2
from selfsup.train.run import train
from selfsup.views import MoCoV1Views, SimCLRViews
from tests.distributed import run_distributed
from tests.learning import knn_before_and_after

SMALL = dict(backbone="resnet10t", backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8}, proj_dim=8,
             queue_size=32)
CLI = ["--backbone", "resnet10t", "--batch-size", "32", "--num-workers", "0", "--no-progress",
       "--set", "proj_dim=16", "--set", "queue_size=64", "--set", "bn_group_size=16",
       "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def test_registry_lists_both_with_paper_defaults():
    assert {"mocov1", "mocov2"} <= set(METHODS)
    v1, v2 = make_config("mocov1"), make_config("mocov2")
    assert (v1.optimizer, v1.lr, v1.weight_decay, v1.momentum, v1.warmup_fraction) == ("sgd", 0.03, 1e-4, 0.9, 0.0)
    assert (v1.temperature, v1.ema_rate, v1.proj_dim, v1.queue_size) == (0.07, 0.999, 128, 4096)
    assert (v2.temperature, v2.proj_hidden_dim, v2.ema_rate, v2.lr) == (0.2, 2048, 0.999, 0.03)
    assert "65536" in METHODS["mocov1"].deviations and "65536" in METHODS["mocov2"].deviations


def test_heads_and_views():
    v1, v2 = create("mocov1", in_chans=1, **SMALL), create("mocov2", in_chans=1, proj_hidden_dim=12, **SMALL)
    assert isinstance(v1.head, nn.Linear) and v1.head.out_features == 8  # v1: a linear fc to 128-d
    assert [type(m) for m in v2.head] == [nn.Linear, nn.ReLU, nn.Linear] and v2.head[0].out_features == 12
    assert isinstance(v1.default_views(28, 1), MoCoV1Views) and isinstance(v2.default_views(28, 1), SimCLRViews)
    assert v2.default_views(28, 3).transform.transforms[0].scale == (0.2, 1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_v1_views_per_image_and_batched(channels):
    torch.manual_seed(0)
    recipe = MoCoV1Views(16, channels)
    image = torch.randint(0, 256, (channels, 20, 20), dtype=torch.uint8)
    views = recipe(image)
    assert len(views) == 2 and all(v.shape == (channels, 16, 16) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])
    batch = recipe.batch(image.expand(6, -1, -1, -1))
    assert all(v.shape == (6, channels, 16, 16) for v in batch)
    assert len({tuple(row.tolist()) for row in batch[0].flatten(1)}) == 6  # per-sample parameters
    assert ("Grayscale" in repr(recipe.transform)) == (channels == 3)


def test_training_step_is_infonce_against_the_queue_and_only_the_query_encoder_learns():
    torch.manual_seed(0)
    method = create("mocov1", in_chans=1, bn_group_size=0, **SMALL)  # one BN group: keys do not depend on the shuffle
    x_q, x_k = torch.randn(6, 1, 16, 16), torch.randn(6, 1, 16, 16)
    loss = method.training_step([x_q, x_k])["loss"]
    with torch.no_grad():
        k = method.key_encoder(x_k)
    expected = InfoNCELoss(0.07)(method.head(method.backbone(x_q)), k, method.queue.keys)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.key_encoder.parameters())


def test_after_step_is_the_ema_of_the_key_encoder_and_enqueues_the_keys():
    torch.manual_seed(0)
    method = create("mocov2", in_chans=1, ema_rate=0.9, proj_hidden_dim=12, **SMALL)
    method.training_step([torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)])
    new_keys = method._new_keys.clone()
    with torch.no_grad():  # stands in for an optimiser step
        for p in [*method.backbone.parameters(), *method.head.parameters()]:
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in method.key_encoder.parameters()]
    online = [*method.backbone.parameters(), *method.head.parameters()]
    method.after_step(1, 10)
    for xi, before, theta in zip(method.key_encoder.parameters(), old, online, strict=True):
        torch.testing.assert_close(xi, 0.9 * before + 0.1 * theta)
    torch.testing.assert_close(method.queue.keys[:4], F.normalize(new_keys, dim=1))
    assert method.queue.ptr.item() == 4 and method._new_keys is None


def _bn_key_encoder(method):
    """Keys = per-group batch normalisation of the flattened images: shows which images shared a BN batch."""
    method.key_encoder = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(16, affine=False))
    return method


def _normalised(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)


def test_split_bn_on_one_device_normalises_keys_within_shuffled_groups():
    method = _bn_key_encoder(create("mocov1", in_chans=1, **{**SMALL, "backbone_kwargs": SMALL["backbone_kwargs"]},
                                    bn_group_size=4))
    x = torch.randn(12, 1, 4, 4)
    torch.manual_seed(3)
    keys = method._shuffled_keys(x)
    torch.manual_seed(3)
    perm = torch.randperm(12)
    expected = torch.empty(12, 16)
    for group in perm.tensor_split(3):  # 3 groups of 4 images drawn at random
        expected[group] = _normalised(x[group])
    torch.testing.assert_close(keys, expected)
    consecutive = torch.cat([_normalised(chunk) for chunk in x.tensor_split(3)])  # the queries' BN groups
    assert not torch.allclose(keys, consecutive)


def _shuffle_bn_on_each_rank(rank: int, world: int, x_all: torch.Tensor):
    method = _bn_key_encoder(create("mocov1", in_chans=1, bn_group_size=0, **SMALL))
    torch.manual_seed(rank)  # different generators: every rank must still use rank 0's permutation
    keys = method._shuffled_keys(x_all.chunk(world)[rank])
    torch.manual_seed(0)
    return keys, torch.randperm(len(x_all))


def test_shuffle_bn_across_two_devices_encodes_shards_of_the_shuffled_global_batch():
    torch.manual_seed(0)
    x_all = torch.randn(8, 1, 4, 4)  # 2 devices x 4 images
    (keys0, perm), (keys1, _) = run_distributed(_shuffle_bn_on_each_rank, world=2, args=(x_all,))
    expected = torch.empty(8, 16)
    for shard in perm.view(2, 4):  # device d encoded the shuffled images perm[4d:4d+4]
        expected[shard] = _normalised(x_all[shard])
    torch.testing.assert_close(torch.cat([keys0, keys1]), expected)  # unshuffled back to each image's owner


def test_queue_shorter_than_a_global_batch_is_refused():
    method = create("mocov1", in_chans=1, **{**SMALL, "queue_size": 16})
    with pytest.raises(SelfsupError, match="queue_size 16 is shorter than one global batch.*queue_size=32"):
        method.prepare(1000, 1000 // 32)
    create("mocov1", in_chans=1, **SMALL).prepare(1000, 1000 // 32)  # 32 slots hold a batch of 32


def test_resume_restores_queue_pointer_and_key_encoder(tmp_path, monkeypatch):
    options = dict(data="digits", max_steps=2, batch_size=16, num_workers=0, proj_hidden_dim=16,
                   bn_group_size=8, **{**SMALL, "queue_size": 48})
    out = tmp_path / "run"
    train("mocov2", options, out=str(out), progress=False)
    saved = read_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    restored = []
    step = MoCoV2.training_step

    def spy(self, views, indices=None):  # the method's state when training resumes
        if not restored:
            restored.append({k: v.clone() for k, v in self.state_dict().items()})
        return step(self, views, indices)

    monkeypatch.setattr(MoCoV2, "training_step", spy)
    train("mocov2", {"max_steps": 4}, out=str(out), resume=True, progress=False)
    state = restored[0]
    assert saved["method.queue.ptr"].item() == 2 * 16  # two batches of 16 keys enqueued
    names = [k for k in state if k.startswith(("queue.", "key_encoder."))]
    assert "queue.keys" in names and len(names) > 10
    for name in names:
        torch.testing.assert_close(state[name], saved["method." + name], rtol=0, atol=0)
    final = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 4 and final["state_dict"]["method.queue.ptr"].item() == 4 * 16 % 48
    assert not torch.equal(final["state_dict"]["method.key_encoder.1.0.weight"], saved["method.key_encoder.1.0.weight"])


@pytest.mark.parametrize("name", ["mocov1", "mocov2"])
def test_trains_from_the_cli_on_digits(tmp_path, name):
    assert main(["train", name, "--data", "digits", "--max-steps", "3", "--out", str(tmp_path), *CLI]) == 0
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 3 and checkpoint["selfsup"]["method"] == name
    assert checkpoint["state_dict"]["method.queue.keys"].shape == (64, 16)


def test_trains_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    assert main(["train", "mocov2", "--data", str(tmp_path / "images"), "--image-size", "16", "--max-steps", "2",
                 "--out", str(tmp_path / "run"), *CLI]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["selfsup"]["in_chans"] == 3


@pytest.mark.slow
def test_mocov2_beats_random_init_on_fashion_mnist(tmp_path):
    # SimCLR's short-run settings (τ 0.2, crops 0.4-1, jitter 0.5, warm-up 0.1, CPU-sized head) plus a queue of
    # 8 batches and m 0.99, so the keys follow the queries within a 150-step run. Without the warm-up and with
    # jitter 1.0: +0.0195; with m 0.9: -0.001.
    random_init, pretrained = knn_before_and_after("mocov2", tmp_path, queue_size=1024, ema_rate=0.99,
                                                   temperature=0.2, proj_hidden_dim=256, crop_min_scale=0.4,
                                                   jitter_strength=0.5, warmup_fraction=0.1, max_steps=300)
    # 150 steps gave +0.0195 until 2026-11 and 0.6445 (below random init) with the packages pip resolved on
    # 2026-11-30; 300 steps: 0.7170
    assert pretrained > random_init + 0.02


@pytest.mark.slow
def test_mocov1_beats_random_init_on_fashion_mnist(tmp_path):
    # v1's linear head and always-on jitter 0.4; the rest as the v2 test (τ 0.2 instead of v1's 0.07), but a key
    # encoder EMA of 0.9: with 0.99 the margin was +0.012 at 1 thread (0.655 -> 0.667); with 0.9 it is +0.049 at 1
    # thread and +0.030 at 2 (measured 2026-12-01)
    random_init, pretrained = knn_before_and_after("mocov1", tmp_path, queue_size=1024, ema_rate=0.9,
                                                   temperature=0.2, crop_min_scale=0.4, warmup_fraction=0.1)
    assert pretrained > random_init + 0.02
