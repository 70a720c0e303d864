
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.detco import DetCoLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.detco import DetCo
from selfsup.nn import feature_map, stage_features
from selfsup.views.detco import DetCoViews
from tests.resume_check import resumed_like_uninterrupted

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "small_stem": True,
         "proj_hidden_dim": 32, "proj_dim": 16, "queue_size": 32}
TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--set",
        "small_stem=true", "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "queue_size=16",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def test_registered_with_the_paper_defaults():
    assert METHODS["detco"] is DetCo and "65536" in DetCo.deviations and "64/224" in DetCo.deviations
    c = make_config("detco")
    assert (c.temperature, c.ema_rate, c.proj_dim, c.proj_hidden_dim) == (0.2, 0.999, 128, 2048)
    assert (c.optimizer, c.lr, c.weight_decay, c.momentum, c.crop_min_scale) == ("sgd", 0.03, 1e-4, 0.9, 0.2)
    weights = (c.stage_weight_2, c.stage_weight_3, c.stage_weight_4, c.stage_weight_5)
    assert weights == (0.1, 0.4, 0.7, 1.0) and c.patch_fraction == 64 / 224 and c.queue_size == 4096
    views = create("detco", in_chans=1, **SMALL).default_views(28, 1)
    assert isinstance(views, DetCoViews) and views.patch_size == 8


@pytest.mark.parametrize("backbone, widths", [("resnet10t", [16, 32, 64, 128]), ("resnet18", [64, 128, 256, 512]),
                                              ("torchvision:resnet18", [64, 128, 256, 512])])
def test_stage_features_have_the_four_stages_widths(backbone, widths):
    kwargs = {"channels": widths} if backbone == "resnet10t" else {}
    method = create("detco", in_chans=1, backbone=backbone, small_stem=True, backbone_kwargs=kwargs,
                    proj_hidden_dim=8, proj_dim=4)
    x = torch.randn(2, 1, 16, 16)
    maps = stage_features(method.backbone.eval(), x)
    assert [m.shape[1] for m in maps] == widths
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]  # small stem: strides 1, 2, 4, 8
    torch.testing.assert_close(maps[-1], feature_map(method.backbone, x))  # the last stage is the backbone's output
    assert [h[0].in_features for h in method.global_heads] == widths
    assert [h[0].in_features for h in method.local_heads] == [9 * w for w in widths]


def _views(B=4, S=16, p=5, C=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C, S, S, generator=g), torch.randn(B, C, S, S, generator=g),
            torch.randn(B, 9, C, p, p, generator=g), torch.randn(B, 9, C, p, p, generator=g)]


def test_step_is_the_detco_loss_of_the_encoded_views_and_only_the_query_encoder_learns():
    torch.manual_seed(0)
    method = create("detco", in_chans=1, bn_group_size=0, **SMALL)  # one BN group: keys do not depend on the shuffle
    x_q, x_k, p_q, p_k = views = _views()
    out = method.training_step(views)
    q_g, q_l = method.encode(method.backbone, method.global_heads, method.local_heads, x_q, p_q)
    with torch.no_grad():
        k_g, k_l = method.encode(method.key_backbone, method.key_global_heads, method.key_local_heads, x_k, p_k)
    # the local vector of stage s is the local head on the 9 patches' pooled maps, concatenated in grid order
    pooled = stage_features(method.backbone, p_q.flatten(0, 1))[2].mean((2, 3)).reshape(4, 9, -1)  # (B, 9, C_3)
    torch.testing.assert_close(q_l[2], method.local_heads[2](pooled.flatten(1)))
    queues = [[q.keys for q in method.global_queues], [q.keys for q in method.local_queues]]
    expected = DetCoLoss(0.2, (0.1, 0.4, 0.7, 1.0))(q_g, q_l, k_g, k_l, *queues)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["loss"], out["loss_gg"] + out["loss_ll"] + out["loss_gl"])
    out["loss"].backward()
    online = [method.backbone, *method.global_heads, *method.local_heads]
    assert all(p.grad is not None for m in online for p in m.parameters())
    frozen = [method.key_backbone, method.key_global_heads, method.key_local_heads]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())


def test_after_step_is_the_ema_of_the_key_encoder_and_enqueues_every_stages_keys():
    torch.manual_seed(0)
    method = create("detco", in_chans=1, ema_rate=0.9, **SMALL)
    method.training_step(_views())
    k_g, k_l = [k.clone() for k in method._new_keys[0]], [k.clone() for k in method._new_keys[1]]
    online = [method.backbone, method.global_heads, method.local_heads]
    with torch.no_grad():  # stands in for an optimiser step
        for p in [p for m in online for p in m.parameters()]:
            p.add_(torch.randn_like(p))
    keys = [method.key_backbone, method.key_global_heads, method.key_local_heads]
    before = [p.clone() for m in keys for p in m.parameters()]
    method.after_step(1, 10)
    after = [p for m in keys for p in m.parameters()]
    for xi, old, theta in zip(after, before, [p for m in online for p in m.parameters()], strict=True):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta)
    for queue, new in zip([*method.global_queues, *method.local_queues], [*k_g, *k_l], strict=True):
        torch.testing.assert_close(queue.keys[:4], F.normalize(new, dim=1))
        assert queue.ptr.item() == 4
    assert method._new_keys is None


def test_embed_and_encoder_are_the_query_backbones():
    method = create("detco", in_chans=1, **SMALL).eval()
    x = torch.randn(3, 1, 16, 16)
    assert method.encoder() is method.backbone
    torch.testing.assert_close(method.embed(x), stage_features(method.backbone, x)[-1].mean((2, 3)))
    assert method.dense_features(x).shape == (3, 128, 2, 2)


def test_queue_sizes_are_checked_against_the_batch_and_the_data():
    method = create("detco", in_chans=1, **{**SMALL, "queue_size": 16})
    with pytest.raises(SelfsupError, match="queue_size 16 is shorter than one global batch"):
        method.prepare(1000, 1000 // 32)
    assert "queue_size=" in method.prepare(20, 20 // 8)  # 16 keys of 20 images: own keys become negatives
    assert method.prepare(1000, 1000 // 8) is None


def test_trains_from_the_cli_resumes_exactly_and_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(40):  # a folder of images of varying sizes: views per sample in the loader
        side = 20 + i % 5
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    base = ["--data", str(tmp_path / "images"), "--image-size", "16", *TINY]
    assert main(["train", "detco", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    full, resumed = resumed_like_uninterrupted("detco", tmp_path / "full")
    assert resumed["global_step"] == full["global_step"] == 4
    assert full["state_dict"]["method.local_queues.3.ptr"].item() == 4 * 8 % 16
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "encoder.safetensors")]) == 0
    assert (tmp_path / "encoder.safetensors").stat().st_size > 0


def test_trains_on_digits_with_batched_views(tmp_path):
    assert main(["train", "detco", "--data", "digits", "--image-size", "16", "--max-steps", "2",
                 "--out", str(tmp_path), *TINY]) == 0
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["state_dict"]["method.global_queues.0.keys"].shape == (16, 16)
