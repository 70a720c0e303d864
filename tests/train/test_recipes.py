"""The recipe chosen from the data: which one, what it sets, what the user's options override, and what the run
prints and records."""

import subprocess
import sys

import pytest
import yaml

from selfsup.errors import SelfsupError
from selfsup.train import recipes
from selfsup.train.recipes import DataFacts, choose, merge

FASHION = DataFacts(n_images=60000, image_size=28, gpu=False)


def test_cpu_without_a_gpu_and_gpu_with_one():
    name, options, line = choose("simclr", "resnet18", "auto", FASHION)
    assert name == "cpu"
    assert options["backbone_kwargs"] == recipes.HALF_WIDTH and options["optimizer"] == "adamw"
    assert options["batch_size"] == 256 and options["max_steps"] == recipes.CPU_STEPS
    assert options["temperature"] == 0.1  # SimCLR's CPU-sized settings come with it
    assert line.startswith("recipe cpu (no GPU, 60000 images of 28 px; a ResNet-18 sized for a few CPU minutes)")
    name, options, line = choose("simclr", "resnet18", "auto", DataFacts(60000, 28, gpu=True))
    assert (name, options) == ("gpu", {"small_stem": True})
    assert choose("simclr", "resnet18", "auto", DataFacts(60000, 224, gpu=True))[1] == {}


def test_paper_vits_and_other_modalities_set_nothing():
    assert choose("simclr", "resnet18", "paper", FASHION) == ("paper", {}, "")
    assert choose("mae", "timm:vit_tiny_patch16_224", "auto", FASHION) == ("paper", {}, "")
    assert choose("bert", None, "auto", None) == ("paper", {}, "")


def test_the_batch_fits_a_small_folder():
    assert choose("byol", "resnet18", "cpu", DataFacts(1000, 64, gpu=False))[1]["batch_size"] == 128
    assert choose("byol", "resnet18", "cpu", DataFacts(5, 64, gpu=False))[1]["batch_size"] == 2


def test_an_unknown_recipe_is_one_clear_line():
    with pytest.raises(SelfsupError, match="--recipe must be auto, paper, cpu, gpu, got 'fast'"):
        choose("simclr", "resnet18", "fast", FASHION)


def test_the_users_options_win_and_drop_the_rest_of_their_group():
    chosen = choose("simclr", "resnet18", "cpu", FASHION)[1]
    merged, applied = merge(chosen, {"backbone": "resnet50", "optimizer": "lars", "epochs": 3, "temperature": 0.5})
    assert set(applied) == set(merged) - {"backbone", "optimizer", "epochs", "temperature"}
    assert merged["backbone"] == "resnet50" and "backbone_kwargs" not in merged  # no half-width resnet50
    assert merged["optimizer"] == "lars" and "lr" not in merged and "weight_decay" not in merged
    assert merged["epochs"] == 3 and "max_steps" not in merged
    assert merged["temperature"] == 0.5 and merged["batch_size"] == 256  # the rest of the recipe stays


def _train(tmp_path, *flags):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", "simclr", "--data", "digits", "--max-steps",
                           "1", "--num-workers", "0", "--no-progress", "--out", str(out), *flags],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout, yaml.safe_load((out / "config.yaml").read_text())


def test_a_run_prints_and_records_its_recipe(tmp_path):
    stdout, config = _train(tmp_path, "--batch-size", "64")
    assert ("recipe cpu (no GPU, 1438 images of 8 px; a ResNet-18 sized for a few CPU minutes) sets backbone resnet18, "
            "backbone_kwargs {channels: [32, 64, 128, 256], stem_width: 32}, optimizer adamw, lr 0.001") in stdout
    assert "batch_size" not in stdout.split("sets")[1]  # the user's, not the recipe's: not in the recipe's line
    assert "(106.8 epochs at batch 64)" not in stdout and "max_steps" not in stdout  # --max-steps is the user's
    assert config["train"]["recipe"] == "cpu"
    assert config["method_config"]["backbone_kwargs"] == recipes.HALF_WIDTH
    assert config["method_config"]["temperature"] == 0.1
    assert config["train"]["batch_size"] == 64  # the user's flag over the recipe's 256


def test_recipe_paper_and_a_config_file_keep_the_papers_settings(tmp_path):
    stdout, config = _train(tmp_path, "--batch-size", "64", "--recipe", "paper")
    assert "recipe cpu" not in stdout and "recipe gpu" not in stdout
    assert config["train"]["recipe"] == "paper"
    assert config["method_config"]["backbone_kwargs"] == {} and config["method_config"]["temperature"] == 0.5
    (tmp_path / "c.yaml").write_text("batch_size: 64\n")
    (tmp_path / "second").mkdir()
    _, config = _train(tmp_path / "second", "--config", str(tmp_path / "c.yaml"))
    assert config["train"]["recipe"] == "paper" and config["method_config"]["optimizer"] == "lars"


def test_a_moco_queue_fits_the_data():
    assert choose("mocov2", "resnet18", "cpu", DataFacts(100, 32, gpu=False))[1]["queue_size"] == 84  # 100 - 16
    assert choose("mocov2", "resnet18", "cpu", FASHION)[1]["queue_size"] == 2048


def test_spark_and_the_object_level_methods_get_the_cifar_stem():
    for method in ("spark", "detcon-b"):
        options = choose(method, "resnet18", "cpu", FASHION)[1]
        assert options["small_stem"] and options["backbone_kwargs"] == recipes.QUARTER_WIDTH


def test_a_method_made_for_another_resnet_keeps_it():
    options = choose("toy", "resnet10t", "cpu", FASHION)[1]
    assert "backbone" not in options and "backbone_kwargs" not in options and options["optimizer"] == "adamw"


def test_larger_images_train_fewer_steps_and_at_most_64_px_on_a_cpu():
    steps = {side: choose("simclr", "resnet18", "cpu", DataFacts(6000, side, gpu=False))[1] for side in (8, 32, 64, 224)}
    assert [steps[side]["max_steps"] for side in (8, 32, 64, 224)] == [1800, 1380, 350, 350]
    assert "image_size" not in steps[64] and steps[224]["image_size"] == 64
    assert "image_size" not in choose("simclr", "resnet18", "gpu", DataFacts(6000, 224, gpu=True))[1]
