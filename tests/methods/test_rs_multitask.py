import json

import numpy as np
import pytest
import torch

from selfsup.checkpoints import load_exported, load_method, read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.rs_multitask import RSMultitaskLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.rs_multitask import RSMultitask
from selfsup.nn import stage_features
from selfsup.views import Bands
from selfsup.views.rs_multitask import TRANSFORMS, RSMultitaskViews, inverse, transform
from tests.resume_check import trains_resumes_and_exports
from tests.test_multiband import tile_folder

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]},
         "decoder_channels": "32,32,16,8,8", "proj_hidden_dim": 32, "proj_dim": 16}
TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--image-size", "32",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}", "--set", "decoder_channels=32,32,16,8,8",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16"]


def test_registered_with_the_paper_defaults():
    assert METHODS["rs-multitask"] is RSMultitask and "epsilon" in RSMultitask.deviations
    c = make_config("rs-multitask")
    assert (c.inpaint_weight, c.transform_weight, c.instance_weight, c.temperature) == (20.0, 1.0, 1.0, 1.0)
    assert (c.square_min, c.square_max, c.breaker_min_scale, c.breaker_max_scale) == (0.2, 0.33, 0.7, 0.95)
    assert c.backbone == "resnet18"
    assert isinstance(create("rs-multitask", in_chans=6, **SMALL).default_views(32, 6), RSMultitaskViews)


# ---- the six transformations --------------------------------------------------------------------------------------

def test_the_six_transformations_are_the_flips_and_rotations_and_invert_exactly():
    a = torch.tensor([[1, 2], [3, 4]])
    expected = {"rot0": [[1, 2], [3, 4]], "rot90": [[2, 4], [1, 3]], "rot180": [[4, 3], [2, 1]],
                "rot270": [[3, 1], [4, 2]], "hflip": [[2, 1], [4, 3]], "vflip": [[3, 4], [1, 2]]}
    assert [transform(a, k).tolist() for k in range(6)] == [expected[name] for name in TRANSFORMS]
    x = torch.randn(3, 2, 7, 7)
    outs = [transform(x, k) for k in range(6)]
    for k in range(6):
        assert torch.equal(inverse(outs[k], k), x) and torch.equal(transform(inverse(x, k), k), x)
    assert all(not torch.equal(outs[i], outs[j]) for i in range(6) for j in range(i))  # six different maps


def test_the_label_names_the_transformation_of_the_second_view():
    """Shortcut breakers off (crop of scale 1, no jitter; 6 bands, so no grayscale): t is exactly T_k(x), and only
    T_k's inverse gives x back."""
    views = RSMultitaskViews(16, 6, breaker_scale=(1.0, 1.0), jitter_p=0.0)
    torch.manual_seed(0)
    labels = []
    for _ in range(24):
        x, _, t, k, _ = views(torch.randint(0, 256, (6, 24, 20), dtype=torch.uint8))
        labels.append(int(k))
        assert [torch.equal(inverse(t, j), x) for j in range(6)] == [j == int(k) for j in range(6)]
    assert set(labels) == set(range(6))


# ---- the corrupted square -----------------------------------------------------------------------------------------

def geometric_matches(patch, original):
    """Which flips / rotations of the original square give the corrupted one."""
    candidates = {"hflip": original.flip(-1), "vflip": original.flip(-2),
                  **{f"rot{90 * r}": torch.rot90(original, r, dims=(-2, -1)) for r in (1, 2, 3)}}
    return {name for name, c in candidates.items() if torch.equal(patch, c)}


@pytest.mark.parametrize("channels, S", [(3, 32), (6, 40), (4, 17)])
def test_one_square_of_20_to_33_percent_of_the_side_is_corrupted_and_nothing_else(channels, S):
    views = RSMultitaskViews(S, channels)
    torch.manual_seed(2)
    kinds, sides = set(), set()
    for _ in range(40):
        x, x_tilde, _, _, box = views(torch.randint(0, 256, (channels, 50, 45), dtype=torch.uint8))
        y0, x0, y1, x1 = box.tolist()
        side = y1 - y0
        assert x1 - x0 == side and 0.2 * S <= side <= 0.33 * S and 0 <= y0 and y1 <= S and 0 <= x0 and x1 <= S
        sides.add(side)
        outside = torch.ones(S, S, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(x_tilde[:, outside], x[:, outside])  # only the square changed
        patch, original = x_tilde[:, y0:y1, x0:x1], x[:, y0:y1, x0:x1]
        matches = geometric_matches(patch, original)
        kinds.add("geometric" if matches else "jitter")
        if not matches:  # colour: the square's values changed, not where they lie
            assert not torch.equal(patch, original)
    assert kinds == {"geometric", "jitter"} and len(sides) > 1


def test_a_view_too_small_for_the_square_is_refused_with_the_fix():
    with pytest.raises(SelfsupError, match="larger --image-size"):
        RSMultitaskViews(2, 3)


def test_views_are_a_function_of_the_seed():
    views = RSMultitaskViews(24, 4)
    image = torch.randint(0, 256, (4, 40, 40), dtype=torch.uint8)
    torch.manual_seed(5)
    first = views(image)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, views(image)))


def test_rgb_only_operations_never_touch_other_band_counts(spied):
    torch.manual_seed(0)
    for channels in (4, 6, Bands(3, rgb=False)):
        views = RSMultitaskViews(32, channels)
        for _ in range(12):
            views(torch.randint(0, 256, (int(channels), 40, 40), dtype=torch.uint8))
    assert spied == []
    views = RSMultitaskViews(32, 3)  # RGB: jitter and grayscale do apply, so the check above can fail
    for _ in range(12):
        views(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert spied and {channels for _, channels in spied} == {3}


# ---- the network and the training step ----------------------------------------------------------------------------

def test_unet_is_smps_decoder_over_the_backbone_stages():
    torch.manual_seed(0)
    method = create("rs-multitask", in_chans=6, **SMALL).eval()
    for S in (32, 36):
        x = torch.randn(2, 6, S, S)
        c = stage_features(method.backbone, x)
        half = x.new_zeros(2, 0, 2 * c[0].shape[-2], 2 * c[0].shape[-1])  # no skip at stride 2
        torch.testing.assert_close(method.unet(x), method.decoder([x, half, *c]))  # smp's own forward
        assert method.unet(x).shape == (2, 8, S, S)
        assert method.dense_features(x).shape == (2, 16, *c[0].shape[-2:])  # block 3, at stage 1's stride
    assert method.embed(x).shape == (2, method.backbone.num_features)
    method.train().dense_features(x).square().mean().backward()  # segmentation fine-tuning trains the decoder too
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert all(p.grad is not None for block in method.decoder.blocks[:3] for p in block.parameters())


def _batch(method, B=4, C=3, S=32):
    views = method.default_views(S, C)
    torch.manual_seed(1)
    items = [views(torch.randint(0, 256, (C, 40, 40), dtype=torch.uint8)) for _ in range(B)]
    return [torch.stack([item[k] for item in items]) for k in range(5)]


@pytest.mark.parametrize("C", [3, 6])
def test_step_is_the_loss_of_the_three_tasks(C):
    method = create("rs-multitask", in_chans=C, **SMALL)
    x, x_tilde, t, k, boxes = batch = _batch(method, C=C)
    method.eval()  # BatchNorm from running statistics: the reference below sees the same network
    out = method.training_step(batch)
    x_hat = method.restore(method.unet(x_tilde))
    h, h_t = method.backbone(x), method.backbone(t)
    logits = method.transform_head(torch.cat([h, h_t], 1))
    loss, l_inp, l_tr, l_inst = RSMultitaskLoss(1.0, 20.0, 1.0, 1.0)(x, x_tilde, x_hat, logits, k,
                                                                      method.instance_head(h), method.instance_head(h_t))
    assert x_hat.shape == x.shape and logits.shape == (4, 6)
    torch.testing.assert_close(out["loss"], loss)
    for name, value in (("inpaint_loss", l_inp), ("transform_loss", l_tr), ("instance_loss", l_inst)):
        torch.testing.assert_close(out[name], value.detach())
    torch.testing.assert_close(out["transform_accuracy"], (logits.argmax(1) == k).float().mean())
    method.train()
    method.training_step(batch)["loss"].backward()
    for part in (method.backbone, method.decoder, method.restore, method.transform_head, method.instance_head):
        assert all(p.grad is not None for p in part.parameters() if p.requires_grad)
    (name, views, ids), = method.view_masks(batch)
    assert torch.equal(views, x_tilde) and torch.equal((ids == 0).flatten(1).sum(1), (boxes[:, 2] - boxes[:, 0]) ** 2)


@pytest.mark.parametrize("options, message", [
    ({"square_min": 0.4}, "square_min <= square_max"),
    ({"square_max": 1.0}, "square_max < 1"),
    ({"breaker_min_scale": 0.0}, "0 < breaker_min_scale"),
    ({"decoder_channels": "32,16"}, "five positive integers"),
    ({"backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"img_size": 64}}, "a ViT keeps one resolution.*--backbone resnet18"),
])
def test_bad_options_are_refused_with_one_line(options, message):
    with pytest.raises(SelfsupError, match=message):
        create("rs-multitask", in_chans=3, **{**SMALL, **options})


# ---- from the command line ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_trains_from_the_cli_resumes_exactly_and_exports(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    checkpoint = trains_resumes_and_exports("rs-multitask", tmp_path / "images", TINY, tmp_path / "full")
    method, _ = load_method(checkpoint)
    assert method.dense_features(torch.randn(2, 3, 32, 32)).shape == (2, 16, 8, 8)


@pytest.mark.slow
def test_a_six_band_tiff_folder_trains_and_exports(tmp_path, capsys):
    data = tile_folder(tmp_path / "tiles", 6, np.uint8, "planar")
    out = tmp_path / "run"
    assert main(["train", "rs-multitask", "--data", str(data), "--out", str(out), *TINY, "--max-steps", "3"]) == 0
    assert "6x32 px" in capsys.readouterr().out
    checkpoint = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert checkpoint["selfsup"]["in_chans"] == 6 and len(checkpoint["selfsup"]["data_meta"]["bands"]["mean"]) == 6
    exported = tmp_path / "backbone.safetensors"
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--out", str(exported)]) == 0
    assert json.loads(exported.with_suffix(".json").read_text())["in_chans"] == 6
    method, _ = load_method(out / "checkpoints" / "last.ckpt")
    x = torch.randn(2, 6, 32, 32)
    torch.testing.assert_close(load_exported(exported).eval()(x), method.embed(x))
    assert method.dense_features(x).shape == (2, 16, 8, 8)
