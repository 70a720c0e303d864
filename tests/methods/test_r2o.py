import shutil

import numpy as np
import torch
from PIL import Image
from sklearn.cluster import KMeans

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.losses.r2o import RegionBYOLLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.r2o import R2O, region_count
from selfsup.nn.kmeans import batched_kmeans
from selfsup.views.detcon import R2OViews

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "small_stem": True,
         "proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}
TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--set",
        "small_stem=true", "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "pred_hidden_dim=32",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}", "--set", "slic_segments=12"]


def test_registered_with_the_paper_defaults():
    assert METHODS["r2o"] is R2O and R2O.deviations
    c = make_config("r2o")
    assert (c.ema_base, c.mask_source, c.slic_segments, c.k_start, c.k_end) == (0.99, "slic", 100, 128, 4)
    assert (c.proj_hidden_dim, c.proj_dim, c.pred_hidden_dim) == (4096, 256, 4096)
    assert abs(c.k_hold_fraction - 40 / 300) < 1e-12


def test_n_masks_which_r2o_does_not_use_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "r2o", "--set", "n_masks=8", "--max-steps", "1", "--no-progress", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "n_masks=8 would be ignored" in err and "k_start" in err
    assert not out.exists()  # no empty run folder left behind


def test_region_count_holds_then_falls_by_a_cosine_to_k_end():
    assert [region_count(s, 300, 128, 4, 40 / 300) for s in (0, 20, 40)] == [128, 128, 128]
    assert region_count(170, 300, 128, 4, 40 / 300) == 66  # half way down the cosine: (128 + 4) / 2
    assert region_count(300, 300, 128, 4, 40 / 300) == 4 and region_count(400, 300, 128, 4, 40 / 300) == 4


def test_batched_kmeans_finds_what_sklearn_finds_on_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.5 * torch.randn(20, 2) for c in centres])[torch.randperm(60)]  # (60, 2)
    ours = batched_kmeans(torch.stack([x, x + 100]), torch.ones(2, 60, dtype=torch.bool), 3, iterations=20)
    theirs = KMeans(3, n_init=10, random_state=0).fit_predict(x.numpy())
    for labels in ours:  # the same partition up to the clusters' names
        pairs = set(zip(labels.tolist(), theirs.tolist()))
        assert len(pairs) == 3


def test_batched_kmeans_ignores_padding_and_handles_fewer_points_than_k():
    x = torch.tensor([[[0.0], [1.0], [99.0], [50.0]]])
    valid = torch.tensor([[True, True, False, False]])
    a = batched_kmeans(x, valid, 4)
    assert a[0, 0] != a[0, 1]  # two valid points, four clusters: each its own


def naive_region_loss(q1, q2, z1, z2, valid):
    total, n = 0.0, 0
    for b in range(q1.shape[0]):
        for k in range(q1.shape[1]):
            if valid[b, k]:
                for q, z in ((q1[b, k], z2[b, k]), (q2[b, k], z1[b, k])):
                    total = total + ((q / q.norm() - z / z.norm()) ** 2).sum()
                n += 1
    return total / n


def test_region_loss_matches_a_naive_loop_values_and_gradients():
    torch.manual_seed(0)
    inputs = [torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    valid = torch.rand(3, 5) > 0.4
    ours, reference = RegionBYOLLoss()(*inputs, valid), naive_region_loss(*inputs, valid)
    torch.testing.assert_close(ours, reference)
    for g, r in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(reference, inputs)):
        torch.testing.assert_close(g, r)


def test_step_pools_regions_of_the_superpixels_and_the_views_carry_the_whole_image():
    views = R2OViews(16, 1)
    image = torch.randint(0, 255, (1, 20, 20), dtype=torch.uint8)
    superpixels = torch.arange(4).repeat_interleave(100).reshape(20, 20).to(torch.int16)  # 4 horizontal bands
    v1, v2, whole, s1, s2, s_whole = views((image, superpixels))
    assert whole.shape == (1, 16, 16) and s_whole.shape == (16, 16) and set(s_whole.unique().tolist()) == {0, 1, 2, 3}
    method = create("r2o", in_chans=1, k_start=2, **SMALL)
    batch = [torch.stack([t] * 4) for t in (v1, v2, whole, s1, s2, s_whole)]
    cluster = method.regions(batch[2], batch[5])
    assert cluster.shape == (4, 4) and set(cluster.unique().tolist()) <= {0, 1}
    out = method.training_step(batch)
    out["loss"].backward()
    assert 0 < out["loss"].item() <= 8 and 1 <= out["regions"].item() <= 2
    assert all(p.grad is None for p in method.target_backbone.parameters())


def test_trains_from_the_cli_resumes_exactly_and_shrinks_k(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    base = ["--data", str(tmp_path / "images"), "--image-size", "16", *TINY]
    assert main(["train", "r2o", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    shutil.copytree(tmp_path / "full", tmp_path / "half")
    for path in (tmp_path / "half" / "checkpoints").iterdir():
        if read_checkpoint(path)["global_step"] > 2:
            path.unlink()
    assert main(["train", "r2o", "--resume", "--out", str(tmp_path / "half"), "--no-progress"]) == 0
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "half" / "checkpoints" / "last.ckpt")["state_dict"]
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
    assert full["method.k"].item() == 4
