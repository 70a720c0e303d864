
import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.eval.plots import plot_masks
from selfsup.losses.detcon import DetConLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.detcon import DetConB, DetConS
from selfsup.nn import feature_map
from selfsup.views.detcon import WHOLE_VIEW, DetConViews
from tests.resume_check import resumed_like_uninterrupted

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "small_stem": True,
         "proj_hidden_dim": 32, "proj_dim": 16}
TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--set",
        "small_stem=true", "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set",
        "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def test_registered_with_the_paper_defaults():
    assert METHODS["detcon-s"] is DetConS and METHODS["detcon-b"] is DetConB and DetConS.deviations
    s, b = make_config("detcon-s"), make_config("detcon-b")
    assert (s.temperature, s.n_masks, s.mask_source, s.fh_scale, s.fh_min_size) == (0.1, 16, "fh", 1000.0, 1000)
    assert (s.optimizer, s.lr, s.proj_hidden_dim, s.proj_dim) == ("lars", 0.2, 2048, 128)
    assert (b.proj_hidden_dim, b.proj_dim, b.pred_hidden_dim, b.ema_base) == (4096, 256, 4096, 0.996)
    assert isinstance(create("detcon-s", in_chans=1, backbone="resnet10t").default_views(32, 1), DetConViews)


def test_mask_vectors_average_the_feature_map_inside_each_mask():
    torch.manual_seed(0)
    method = create("detcon-s", in_chans=1, **SMALL).eval()
    x = torch.randn(2, 1, 16, 16)
    segments = torch.zeros(2, 16, 16, dtype=torch.int64)
    segments[:, :, 8:] = 1  # left and right halves
    ids = torch.tensor([[0, 1, WHOLE_VIEW], [1, 1, 0]])
    h = method.mask_vectors(method.backbone, x, segments, ids)  # (2, 3, D)
    f = feature_map(method.backbone, x)  # (2, D, 4, 4) with the CIFAR stem: stride 4... at 16 px
    w = f.shape[-1]
    left, right, whole = f[..., : w // 2].mean((2, 3)), f[..., w // 2:].mean((2, 3)), f.mean((2, 3))
    torch.testing.assert_close(h[0], torch.stack([left[0], right[0], whole[0]]))
    torch.testing.assert_close(h[1], torch.stack([right[1], right[1], left[1]]))


def _batch(B=4, S=16, C=1):
    torch.manual_seed(1)
    segments = torch.randint(0, 3, (B, 1, 1)).expand(B, S, S).clone()
    segments[:, : S // 2] += 3
    ids = torch.stack([torch.unique(s)[torch.randint(2, (4,))] for s in segments])
    return [torch.randn(B, C, S, S), torch.randn(B, C, S, S), segments, segments.clone(), ids]


def test_detcon_s_step_is_the_loss_of_the_projected_mask_vectors():
    method = create("detcon-s", in_chans=1, **SMALL)
    x1, x2, s1, s2, ids = views = _batch()
    out = method.training_step(views)
    z1 = method.projector(method.mask_vectors(method.backbone, x1, s1, ids).flatten(0, 1)).reshape(4, 4, -1)
    z2 = method.projector(method.mask_vectors(method.backbone, x2, s2, ids).flatten(0, 1)).reshape(4, 4, -1)
    torch.testing.assert_close(out["loss"], DetConLoss(0.1)(z1, z2, z1, z2, ids))


def test_detcon_b_trains_only_the_online_network_and_moves_the_target():
    method = create("detcon-b", in_chans=1, pred_hidden_dim=32, **SMALL)
    out = method.training_step(_batch())
    out["loss"].backward()
    assert all(p.grad is not None for p in [*method.backbone.parameters(), *method.predictor.parameters()])
    assert all(p.grad is None for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()])
    before = [p.clone() for p in method.target_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    method.after_step(1, 100)
    assert all(not torch.equal(a, b) for a, b in zip(before, method.target_backbone.parameters()))
    assert 0.996 < method.tau.item() < 1


def test_small_feature_maps_are_warned_about():
    method = create("detcon-s", in_chans=1, backbone="resnet10t")
    method.data_meta["image_size"] = 28
    assert "1x1" in method.prepare(100, 10)
    small_stem = create("detcon-s", in_chans=1, backbone="resnet10t", small_stem=True)
    small_stem.data_meta["image_size"] = 28
    assert small_stem.prepare(100, 10) is None


def test_trains_from_the_cli_resumes_exactly_and_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    from PIL import Image

    (tmp_path / "images").mkdir()
    for i in range(16):  # photos of two flat regions: FH finds them
        pixels = np.zeros((24, 24, 3), dtype=np.uint8)
        pixels[:, : 8 + i % 8] = rng.integers(0, 255, 3)
        pixels[:, 8 + i % 8:] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
    base = ["--data", str(tmp_path / "images"), "--image-size", "16", *TINY, "--set", "pred_hidden_dim=32"]
    assert main(["train", "detcon-b", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    full, resumed = resumed_like_uninterrupted("detcon-b", tmp_path / "full")
    assert resumed["global_step"] == full["global_step"] == 4
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "encoder.safetensors")]) == 0
    assert (tmp_path / "encoder.safetensors").stat().st_size > 0
    figure = plot_masks(str(tmp_path / "full" / "checkpoints" / "last.ckpt"), tmp_path / "masks.png", n=2)
    assert figure.stat().st_size > 1000


def test_mask_figures_need_a_method_whose_views_carry_masks():
    with pytest.raises(SelfsupError, match="byol's views carry no masks"):
        create("byol", in_chans=1, backbone="resnet10t").view_masks([])
