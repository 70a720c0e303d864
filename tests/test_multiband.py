"""Multi-band input end to end: the colour rule of the views (an RGB-only operation never touches a non-RGB band),
band statistics through views, evaluation and export, backbones of N input channels, and 4- and 6-band TIFF
folders trained, evaluated and exported from the command line."""

import json
import pickle

import kornia.augmentation as K
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torchvision.transforms import v2

from selfsup.checkpoints import load_exported, read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone
from selfsup.views import (
    Bands,
    BYOLViews,
    EvalTransform,
    ExemplarViews,
    MultiCropViews,
    SimCLRViews,
    channels_of,
    colour_kind,
    match_channels,
    normalization_for,
)
from selfsup.views.bands import band_jitter
from selfsup.views.detco import DetCoViews
from selfsup.views.detcon import DetConViews

RGB_ONLY = [v2.ColorJitter, v2.RandomGrayscale, v2.RandomSolarize, K.ColorJitter, K.RandomGrayscale, K.RandomSolarize]
RECIPES = [SimCLRViews, BYOLViews, MultiCropViews, ExemplarViews, DetCoViews]
NOT_RGB = [4, 6, 2, Bands(3, rgb=False)]


def test_colour_kind_is_the_one_rule():
    assert colour_kind(3) == "rgb" and colour_kind(Bands(3, rgb=True)) == "rgb"
    assert colour_kind(1) == "grey"
    assert [colour_kind(c) for c in NOT_RGB] == ["bands"] * 4


def run_recipe(recipe, channels, size=64):
    views = recipe(size, channels)
    torch.manual_seed(0)
    for _ in range(8):  # colour steps apply with p 0.8 / 0.2: 8 images meet each of them
        views(torch.randint(0, 256, (int(channels), 80, 72), dtype=torch.uint8))
    views.batch(torch.randint(0, 256, (8, int(channels), size, size), dtype=torch.uint8))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.__name__)
def test_no_rgb_only_operation_touches_a_non_rgb_input(spied, recipe):
    for channels in NOT_RGB:
        run_recipe(recipe, channels)
    assert spied == []
    run_recipe(recipe, 3)  # the spy sees RGB images: the check above can fail
    assert spied and {c for _, c in spied} == {3}


def test_detcon_views_of_six_bands_keep_the_segment_maps(spied):
    views = DetConViews(32, 6)
    out = views((torch.randint(0, 256, (6, 40, 40), dtype=torch.uint8), torch.randint(0, 5, (40, 40))))
    assert out[0].shape == (6, 32, 32) and out[2].shape == (32, 32) and out[2].dtype == torch.int64
    assert spied == []


def views_of(recipe, image, seed, batched):
    torch.manual_seed(seed)
    return recipe.batch(image[None])[0][0] if batched else recipe(image)[0]


@pytest.mark.parametrize("batched", [False, True], ids=["per-sample", "batched"])
@pytest.mark.parametrize("recipe", [SimCLRViews, BYOLViews, MultiCropViews, ExemplarViews],
                         ids=lambda r: r.__name__)
def test_bands_stay_independent_through_the_views(recipe, batched):
    """Changing input band 2 changes output band 2 only (the random draws do not depend on the pixels)."""
    views = recipe(64, 6)
    image = torch.randint(0, 256, (6, 64, 64), dtype=torch.uint8)
    other = image.clone()
    other[2] = torch.randint(0, 256, (64, 64), dtype=torch.uint8)
    for seed in range(4):
        a, b = views_of(views, image, seed, batched), views_of(views, other, seed, batched)
        assert a.shape == (6, 64, 64)
        torch.testing.assert_close(a[[0, 1, 3, 4, 5]], b[[0, 1, 3, 4, 5]])
        assert not torch.equal(a[2], b[2])


def test_rgb_views_do_mix_channels():
    """The independence test above can fail: RGB jitter and grayscale mix the channels."""
    views = SimCLRViews(64, 3)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    other = image.clone()
    other[2] = 255 - other[2]
    mixed = False
    for seed in range(8):
        a, b = views_of(views, image, seed, False), views_of(views, other, seed, False)
        mixed |= not torch.equal(a[:2], b[:2])
    assert mixed


def test_band_jitter_draws_per_band_factors_and_keeps_range():
    torch.manual_seed(0)
    x = torch.rand(4, 6, 16, 16)
    y = band_jitter(x, (0.5, 1.5), (0.5, 1.5), p=1.0)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    ratio = (y.std(dim=(2, 3)) / x.std(dim=(2, 3)))  # (4, 6): a contrast x brightness factor per image and band
    assert ratio.std(dim=1).min() > 0.01  # not one factor for all bands
    torch.testing.assert_close(band_jitter(x, (0.5, 1.5), (0.5, 1.5), p=0.0), x)


def test_bands_carry_their_statistics_and_picks():
    meta = {"in_chans": 2, "image_size": 8, "bands": {"index": [3, 0], "count": 6, "rgb": False,
                                                      "mean": [0.2, 0.3], "std": [0.05, 0.1]}}
    channels = channels_of(meta)
    assert channels == 2 and normalization_for(channels) == ((0.2, 0.3), (0.05, 0.1))
    assert channels_of({"in_chans": 3, "image_size": 8}) == 3 and normalization_for(3)[0][0] == 0.485
    image = torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 8, 8)
    assert match_channels(image, channels)[:, 0, 0].tolist() == [3, 0]
    out = EvalTransform(8, channels)(image)  # picked, then normalised with the run's numbers
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([(3 / 255 - 0.2) / 0.05, (0 / 255 - 0.3) / 0.1]))
    with pytest.raises(SelfsupError, match="takes 2-channel images .*bands 4, 1 of 6-band.* these have 4"):
        match_channels(torch.zeros(4, 8, 8, dtype=torch.uint8), channels)
    copied = pickle.loads(pickle.dumps(channels))  # loader workers that spawn get the same numbers
    assert (copied.mean, copied.std, copied.index, copied.count) == (channels.mean, channels.std, (3, 0), 6)


@pytest.mark.parametrize("name", ["resnet10t", "torchvision:resnet18"])
def test_backbones_take_any_band_count(name):
    for c in (4, 6):
        model = create_backbone(name, in_chans=c)
        assert model(torch.randn(2, c, 32, 32)).shape == (2, model.num_features)


TINY = ["--backbone", "resnet10t", "--batch-size", "8", "--num-workers", "0", "--no-progress", "--max-steps", "3",
        "--image-size", "32", "--set", "proj_hidden_dim=32", "--set", "proj_dim=16",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def tile_folder(root, n_bands, dtype, layout):
    """12 tiles of 96 px, 6 per class; class 'b' brighter in every band."""
    rng = np.random.default_rng(n_bands)
    for c, level in (("a", 0.3), ("b", 0.7)):
        (root / c).mkdir(parents=True)
        for i in range(6):
            x = np.clip(rng.normal(level, 0.15, (n_bands, 96, 96)), 0, 1)
            x = (x * (4000 if dtype == np.uint16 else 255)).astype(dtype)
            if layout == "interleaved":
                tifffile.imwrite(root / c / f"{i}.tif", x.transpose(1, 2, 0), photometric="minisblack",
                                 planarconfig="contig")
            else:
                tifffile.imwrite(root / c / f"{i}.tiff", x, photometric="minisblack", planarconfig="separate",
                                 compression="zlib")
    return root


def dense_tile_folder(root, n_bands, dtype):
    """6 tiles of 48 px + masks (DIR/images, DIR/masks): the left half brighter in every band and class 1."""
    rng = np.random.default_rng(n_bands)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        x = np.clip(rng.normal(0.3, 0.1, (n_bands, 48, 48)), 0, 1)
        x[:, :, :24] += 0.4
        tifffile.imwrite(root / "images" / f"t{i}.tif", (x * (4000 if dtype == np.uint16 else 255)).astype(dtype),
                         photometric="minisblack")
        m = np.full((48, 48), 2, np.uint8)
        m[:, :24] = 1
        Image.fromarray(m).save(root / "masks" / f"t{i}.png")
    return root


def test_a_dense_folder_of_tiles_keeps_every_band_stretched_alike(tmp_path):
    from selfsup.data.dense import open_dense

    root = dense_tile_folder(tmp_path / "dense", 4, np.uint16)
    train, test = open_dense(str(root), "train"), open_dense(str(root), "test")
    assert train.channels == test.channels == 4 and (len(train), len(test)) == (5, 1)
    image, target = train[0]
    assert image.shape == (4, 48, 48) and image.dtype == torch.uint8 and target.semantic.shape == (48, 48)
    # one stretch for both splits, measured on the folder: bright half high, dark half low in every band
    assert train.tiles.stretch == test.tiles.stretch and len(train.tiles.stretch) == 4
    left, right = image[:, :, :24].float().mean((1, 2)), image[:, :, 24:].float().mean((1, 2))
    assert (left > 150).all() and (right < 110).all()
    # the bright half is class 1: a probe on a random 4-band encoder's map separates the halves
    assert main(["eval", "segment", "--checkpoint", "random", "--small-stem", "--data", str(root), "--no-progress",
                 "--out", str(tmp_path / "seg.json")]) == 0
    result = json.loads((tmp_path / "seg.json").read_text())
    assert result["iou"]["class 1"] > 0.9 and result["iou"]["class 2"] > 0.9
    # tiles beside 8-bit images: one line
    Image.new("RGB", (48, 48)).save(root / "images" / "x.png")
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "masks" / "x.png")
    with pytest.raises(SelfsupError, match="4-band uint16 TIFF beside 8-bit images such as .*x.png"):
        open_dense(str(root), "train")


@pytest.mark.slow
@pytest.mark.parametrize("n_bands, dtype, layout", [(4, np.uint16, "interleaved"), (6, np.uint8, "planar")])
def test_tiff_folder_trains_evaluates_and_exports(tmp_path, capsys, n_bands, dtype, layout):
    data = tile_folder(tmp_path / "tiles", n_bands, dtype, layout)
    out = tmp_path / "run"
    assert main(["train", "simclr", "--data", str(data), "--out", str(out), *TINY]) == 0
    summary = capsys.readouterr().out
    # 96 px tiles >= 2 x 32 px: each gives 3 x 3 random windows of 32 px per epoch
    assert f"{n_bands}x32 px" in summary and "108 random 32 px windows per epoch from 12 tiles" in summary
    checkpoint = read_checkpoint(out / "checkpoints" / "last.ckpt")
    bands = checkpoint["selfsup"]["data_meta"]["bands"]
    assert checkpoint["selfsup"]["in_chans"] == n_bands and bands["count"] == n_bands
    assert len(bands["mean"]) == n_bands and all(0.2 < m < 0.8 for m in bands["mean"])
    assert (bands["stretch"] is None) == (dtype == np.uint8)

    assert main(["eval", "knn", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(data)]) == 0
    result = json.loads(next((out / "eval").glob("knn-*.json")).read_text())
    assert 0 <= result["top1"] <= 1 and "knn top-1" in capsys.readouterr().out
    # grey images are not repeated into a multi-band encoder's bands: refused in one line
    assert main(["eval", "knn", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", "digits"]) == 1
    assert f"the encoder takes {n_bands}-channel images" in capsys.readouterr().err

    # a user's folder of tiles + masks of the same band count: segmentation, frozen and fine-tuned
    dense = dense_tile_folder(tmp_path / "dense", n_bands, dtype)
    for extra in ([], ["--finetune", "--max-steps", "2", "--batch-size", "4", "--label-fraction", "1"]):
        assert main(["eval", "segment", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(dense),
                     "--out", str(tmp_path / "seg.json"), "--no-progress", *extra]) == 0
        result = json.loads((tmp_path / "seg.json").read_text())
        assert result["n_train"] == 5 and result["n_test"] == 1 and 0 <= result["miou"] <= 1
    other = dense_tile_folder(tmp_path / "other", n_bands + 1, dtype)
    assert main(["eval", "segment", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(other),
                 "--epochs", "1", "--out", str(tmp_path / "x.json")]) == 1
    assert f"the encoder takes {n_bands}-channel images" in capsys.readouterr().err

    exported = tmp_path / "backbone.safetensors"
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--out", str(exported)]) == 0
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["in_chans"] == n_bands and sidecar["mean"] == bands["mean"] and sidecar["std"] == bands["std"]
    assert sidecar["bands"]["bands"] == list(range(1, n_bands + 1))
    assert load_exported(exported)(torch.randn(2, n_bands, 32, 32)).shape[0] == 2


@pytest.mark.slow
def test_picked_bands_train_and_evaluate_on_the_full_tiles(tmp_path, capsys):
    data = tile_folder(tmp_path / "tiles", 6, np.uint8, "planar")
    out = tmp_path / "run"
    assert main(["train", "byol", "--data", str(data), "--bands", "5,2", "--out", str(out), *TINY]) == 0
    meta = read_checkpoint(out / "checkpoints" / "last.ckpt")["selfsup"]
    assert meta["in_chans"] == 2 and meta["data_meta"]["bands"]["index"] == [4, 1] and meta["train"]["bands"] == "5,2"
    # evaluation reads all 6 bands of each tile and gives the encoder bands 5 and 2
    assert main(["eval", "knn", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(data)]) == 0
    # fine-tuning does too: its views pick bands 5 and 2 of the full tiles and normalise with their statistics
    assert main(["eval", "finetune", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", str(data),
                 "--max-steps", "2", "--batch-size", "4", "--label-fraction", "1", "--out", str(tmp_path / "ft")]) == 0
    assert 0 <= json.loads((tmp_path / "ft" / "result.json").read_text())["top1"] <= 1
    # a resumed run keeps its bands and their statistics
    assert main(["train", "byol", "--out", str(out), "--resume", "--max-steps", "4", "--no-progress"]) == 0
    resumed = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 4 and resumed["selfsup"]["data_meta"] == meta["data_meta"]
    capsys.readouterr()
    assert main(["train", "simclr", "--data", "digits", "--bands", "1", "--out", str(tmp_path / "x"), *TINY]) == 1
    assert "--bands picks bands of TIFF tiles" in capsys.readouterr().err
