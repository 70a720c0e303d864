"""A folder's default image size (issue 24): the median shorter side of its images, rounded to a multiple of 8 within
[16, 224], for training and for the random / pixels baselines evaluated on it; a baseline's JSON names its seed."""

import json

import numpy as np
import pytest
from PIL import Image

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.data.folder import folder_image_size

TINY = ["--backbone", "resnet10t", "--num-workers", "0", "--no-progress", "--set", "proj_hidden_dim=16",
        "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def write_images(folder, sides, seed=0):
    """One RGB PNG per (width, height) in `sides`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sides):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{seed}-{i}.png")
    return folder


@pytest.mark.parametrize("shorter, expected", [
    ([28] * 5, 32),  # 3.5 eights: rounded half up
    ([20, 20, 21], 24),
    ([33, 34, 90, 35, 40], 32),  # the median, not the mean
    ([5, 6, 7], 16),  # at least 16
    ([300, 400, 500], 224),  # at most 224
])
def test_the_median_shorter_side_rounded_to_eight_within_16_and_224(tmp_path, shorter, expected):
    folder = write_images(tmp_path / "images", [(s + 7, s) if i % 2 else (s, s + 3) for i, s in enumerate(shorter)])
    assert folder_image_size(sorted(str(p) for p in folder.iterdir()))[0] == expected


def test_unreadable_files_have_no_say_and_none_readable_gives_none(tmp_path):
    folder = write_images(tmp_path / "images", [(40, 40)] * 3)
    (folder / "broken.png").write_bytes(b"not a png")
    assert folder_image_size(sorted(str(p) for p in folder.iterdir())) == (40, 40.0)
    assert folder_image_size([str(folder / "broken.png")]) is None


def test_training_on_a_folder_follows_its_images_and_a_resume_keeps_the_size(tmp_path, capsys):
    images = write_images(tmp_path / "images", [(22 + i % 3, 20) for i in range(16)])
    argv = ["train", "simclr", "--data", str(images), "--batch-size", "8", "--out", str(tmp_path / "run"), *TINY]
    assert main([*argv, "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "3x24 px (the images' median shorter side, 20 px, rounded to a multiple of 8" in out
    assert "views SimCLRViews, per sample in the main process" in out and "logs/csv/version_0/metrics.csv" in out
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["selfsup"]["image_size"] == 24
    write_images(images, [(64, 64)] * 40, seed=1)  # the folder changes; the resumed run does not
    assert main(["train", "simclr", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "2",
                 "--no-progress"]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["selfsup"]["image_size"] == 24


def test_random_and_pixels_baselines_on_a_folder_use_its_size_and_seeded_names(tmp_path, monkeypatch, capsys):
    for c in ("cat", "dog"):
        write_images(tmp_path / "labeled" / c, [(30, 32)] * 10, seed=len(c))
    monkeypatch.chdir(tmp_path)
    for seed in (1, 2):
        assert main(["eval", "knn", "--checkpoint", "random", "--backbone", "resnet10t", "--data", "labeled",
                     "--k", "3", "--seed", str(seed)]) == 0
        assert "random-init resnet10t at 32 px" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "runs" / "baselines").glob("*.json"))
    assert written == ["random-resnet10t-seed1-knn-labeled.json", "random-resnet10t-seed2-knn-labeled.json"]
    assert main(["eval", "knn", "--checkpoint", "pixels", "--data", "labeled", "--k", "3",
                 "--out", "pixels.json"]) == 0
    result = json.loads((tmp_path / "pixels.json").read_text())
    assert result["image_size"] == 32 and result["feature_dim"] == 3 * 32 * 32
