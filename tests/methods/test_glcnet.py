import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from selfsup.checkpoints import load_exported, load_method, read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.glcnet import GLCNetLoss, patch_vectors, style_vector
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.glcnet import GLCNet
from selfsup.nn import stage_features
from selfsup.views import Bands
from selfsup.views.glcnet import GLCNetViews
from tests.resume_check import trains_resumes_and_exports
from tests.test_multiband import tile_folder

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "decoder_channels": 32,
         "proj_hidden_dim": 32, "proj_dim": 16}
TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--image-size", "32",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}", "--set", "decoder_channels=32",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16"]


def test_registered_with_the_paper_defaults():
    assert METHODS["glcnet"] is GLCNet and "σ" in GLCNet.deviations
    c = make_config("glcnet")
    assert (c.temperature, c.global_weight, c.local_weight, c.n_patches) == (0.5, 0.5, 0.5, 4)
    assert (c.patch_fraction, c.crop_min_scale, c.output_stride, c.atrous_rates) == (48 / 256, 0.4, 16, "6,12,18")
    method = create("glcnet", in_chans=6, **SMALL)
    assert isinstance(method.default_views(32, 6), GLCNetViews)
    assert method.config.backbone_kwargs["output_stride"] == 16  # recorded, so export rebuilds the dilated backbone


# ---- the index map: matched patches are the same source pixels in both views -----------------------------------

def position_image(H, W):
    """uint8 (2, H, W): band 0 holds each pixel's row, band 1 its column."""
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([rows, cols]).to(torch.uint8)


def decoded(view):
    """A normalised view of position_image (2 bands: mean 0.5, std 0.5) -> (rows, cols) (S, S) of its pixels."""
    values = ((view * 0.5 + 0.5) * 255).round().long()
    return values[0], values[1]


def in_box(rows, cols, box):
    y0, x0, y1, x1 = box.tolist()
    return (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)


@pytest.mark.parametrize("H, W", [(48, 40), (24, 24)])
def test_matched_patches_cover_the_same_source_pixels_in_both_views(H, W):
    views = GLCNetViews(32, 2, jitter_p=0.0, interpolation=v2.InterpolationMode.NEAREST)
    image = position_image(H, W)
    orientations = set()
    torch.manual_seed(0)
    for _ in range(16):
        x1, x2, masks1, masks2, boxes = views.draw(image)
        assert masks1.shape == masks2.shape == (4, 32, 32) and boxes.shape == (4, 4)
        (r1, c1), (r2, c2) = decoded(x1), decoded(x2)
        for p, box in enumerate(boxes):
            # each view's patch is exactly the view's pixels whose value (their source position) lies in the box
            assert torch.equal(masks1[p], in_box(r1, c1, box)) and torch.equal(masks2[p], in_box(r2, c2, box))
            assert masks1[p].any() and masks2[p].any()
            if H <= 32:  # both crops upsampled: every source pixel of the box is seen, in both views
                seen = [{(int(r), int(c)) for r, c in zip(rows[m], cols[m])}
                        for rows, cols, m in ((r1, c1, masks1[p]), (r2, c2, masks2[p]))]
                y0, x0, y1, x1 = box.tolist()
                assert seen[0] == seen[1] == {(r, c) for r in range(y0, y1) for c in range(x0, x1)}
        for rows, cols in ((r1, c1), (r2, c2)):  # which way the source's rows and columns run in the view
            orientations.add((int(torch.sign(rows[-1, 0] - rows[0, 0])), int(torch.sign(cols[0, -1] - cols[0, 0]))))
    assert len(orientations) >= 4  # flips and rotations happened, so the masks were tracked through them


def test_bilinear_views_keep_each_patch_within_a_sampling_step_of_its_box():
    """The training views resample the image bilinearly (antialiased) and the index map by nearest neighbour: each
    patch pixel's interpolated source position stays within one sampling step (here at most 64 / 32 = 2 px) of its
    box, whatever the flips and rotations."""
    views = GLCNetViews(32, 2, jitter_p=0.0)
    torch.manual_seed(1)
    step = 2 + 1e-3
    for _ in range(8):
        x1, x2, masks1, masks2, boxes = views.draw(position_image(64, 56))
        for x, masks in ((x1, masks1), (x2, masks2)):
            values = (x * 0.5 + 0.5) * 255  # interpolated positions
            for p, (y0, x0, y1, x1_) in enumerate(boxes.tolist()):
                rows, cols = values[0][masks[p]], values[1][masks[p]]
                assert rows.min() >= y0 - step and rows.max() <= y1 - 1 + step
                assert cols.min() >= x0 - step and cols.max() <= x1_ - 1 + step


def test_colour_follows_the_band_rule(spied):
    torch.manual_seed(0)
    for channels in (4, 6, Bands(3, rgb=False)):
        views = GLCNetViews(32, channels)
        for _ in range(8):
            views(torch.randint(0, 256, (int(channels), 40, 40), dtype=torch.uint8))
    assert spied == []
    views = GLCNetViews(32, 3)  # RGB: jitter and grayscale do apply, so the check above can fail
    for _ in range(8):
        views(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert spied and {channels for _, channels in spied} == {3}


def test_crops_that_share_no_pixels_are_refused_with_the_fix():
    views = GLCNetViews(8, 1, min_scale=0.01)
    views.patches = lambda *args: None  # as if no two crops ever overlapped
    with pytest.raises(SelfsupError, match="pass a larger crop_min_scale"):
        views.draw(torch.zeros(1, 32, 32, dtype=torch.uint8))


# ---- the network and the training step ---------------------------------------------------------------------------

def test_deeplab_is_smp_deeplabv3_plus_decoder_on_the_dilated_backbone():
    torch.manual_seed(0)
    method = create("glcnet", in_chans=4, **SMALL).eval()
    x = torch.randn(2, 4, 32, 32)
    a, y = method.deeplab(x)
    c2, _, _, c5 = stage_features(method.backbone, x)
    assert c2.shape[-1] == 8 and c5.shape[-1] == 2  # strides 4 and 16 (the last stage dilated)
    torch.testing.assert_close(y, method.decoder([x, None, c2, None, None, c5]))  # smp's own forward
    assert a.shape == (2, 32, 2, 2) and method.dense_features(x).shape == (2, 32, 8, 8)
    assert method.embed(x).shape == (2, method.backbone.num_features)
    assert method.dense_features(torch.randn(1, 4, 36, 36)).shape == (1, 32, 9, 9)  # not a multiple of 16
    method.train().dense_features(x).square().mean().backward()  # segmentation fine-tuning trains the decoder too
    assert all(p.grad is not None for p in [*method.backbone.parameters(), *method.decoder.parameters()])


def _batch(method, B=4, C=3, S=32):
    views = method.default_views(S, C)
    torch.manual_seed(1)
    items = [views(torch.randint(0, 256, (C, 40, 40), dtype=torch.uint8)) for _ in range(B)]
    return [torch.stack([item[k] for item in items]) for k in range(4)]


def test_step_is_the_loss_of_the_style_vectors_and_the_matched_patches():
    method = create("glcnet", in_chans=3, **SMALL)
    x1, x2, m1, m2 = batch = _batch(method)
    method.eval()  # no dropout: the reference below sees the same network
    out = method.training_step(batch)
    (a1, y1), (a2, y2) = method.deeplab(x1), method.deeplab(x2)
    g1, g2 = method.global_head(style_vector(a1)), method.global_head(style_vector(a2))
    l1 = method.local_head(patch_vectors(y1, m1).flatten(0, 1)).view(4, 4, -1)
    l2 = method.local_head(patch_vectors(y2, m2).flatten(0, 1)).view(4, 4, -1)
    loss, loss_g, loss_l = GLCNetLoss(0.5, 0.5, 0.5)(g1, g2, l1, l2)
    torch.testing.assert_close(out["loss"], loss)
    torch.testing.assert_close(out["global_loss"], loss_g.detach())
    torch.testing.assert_close(out["local_loss"], loss_l.detach())
    method.train()
    method.training_step(batch)["loss"].backward()
    for part in (method.backbone, method.decoder, method.global_head, method.local_head):
        assert all(p.grad is not None for p in part.parameters() if p.requires_grad)
    names = [name for name, _, _ in method.view_masks(batch)]
    assert names == ["view 1", "view 2"]


@pytest.mark.parametrize("options, message", [
    ({"output_stride": 32}, "takes output_stride 8 or 16"),
    ({"backbone_kwargs": {"output_stride": 8}}, "set it once"),
    ({"n_patches": 0}, "n_patches >= 1"),
    ({"patch_fraction": 1.5}, "patch_fraction in"),
    ({"aspp_dropout": 1.0}, "aspp_dropout must lie"),
    ({"atrous_rates": "6,12"}, "three positive integers"),
    ({"backbone": "torchvision:resnet18"}, "does not accept these options"),
])
def test_bad_options_are_refused_with_one_line(options, message):
    with pytest.raises(SelfsupError, match=message):
        create("glcnet", in_chans=3, **{**SMALL, **options})


# ---- from the command line ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_trains_from_the_cli_resumes_exactly_and_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    checkpoint = trains_resumes_and_exports("glcnet", tmp_path / "images", TINY, tmp_path / "full")
    method, _ = load_method(checkpoint)
    assert method.dense_features(torch.randn(2, 3, 32, 32)).shape == (2, 32, 8, 8)


@pytest.mark.slow
def test_a_four_band_tiff_folder_trains_and_exports(tmp_path, capsys):
    data = tile_folder(tmp_path / "tiles", 4, np.uint16, "interleaved")
    out = tmp_path / "run"
    assert main(["train", "glcnet", "--data", str(data), "--out", str(out), *TINY, "--max-steps", "3"]) == 0
    assert "4x32 px" in capsys.readouterr().out
    checkpoint = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert checkpoint["selfsup"]["in_chans"] == 4 and len(checkpoint["selfsup"]["data_meta"]["bands"]["mean"]) == 4
    exported = tmp_path / "backbone.safetensors"
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--out", str(exported)]) == 0
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["in_chans"] == 4 and sidecar["kwargs"]["output_stride"] == 16
    method, _ = load_method(out / "checkpoints" / "last.ckpt")
    x = torch.randn(2, 4, 32, 32)
    torch.testing.assert_close(load_exported(exported).eval()(x), method.embed(x))


def test_a_resume_with_the_first_runs_backbone_kwargs_is_accepted(tmp_path, capsys):
    # glcnet's config holds backbone_kwargs with output_stride added (dilated); the user's own options, passed again
    # with --resume, were refused as a change ("the run was made with {..., 'output_stride': 16}")
    data = tile_folder(tmp_path / "tiles", 3, np.uint8, "planar")
    same = ["train", "glcnet", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
            "--set", "backbone_kwargs={drop_rate: 0.0}"]
    assert main([*same, "--max-steps", "1"]) == 0
    assert main([*same, "--max-steps", "2", "--resume"]) == 0, capsys.readouterr().err
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert main([*same[:-1], "backbone_kwargs={drop_rate: 0.1}", "--max-steps", "3", "--resume"]) == 1
    assert "cannot resume with backbone_kwargs" in capsys.readouterr().err
