"""`selfsup eval finetune` and `selfsup distill` end to end on digits with tiny budgets, and their errors."""

import json

import pytest

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main

TINY = ["--backbone", "resnet10t", "--batch-size", "32", "--num-workers", "0", "--no-progress", "--small-stem",
        "--set", "proj_hidden_dim=16", "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "simclrv2", "--data", "digits", "--max-steps", "2", "--out", str(out), *TINY]) == 0
    return out / "checkpoints" / "last.ckpt"


def test_finetune_then_distill_from_the_cli(pretrained, tmp_path, capsys):
    code, out, err = run(capsys, "eval", "finetune", "--checkpoint", pretrained, "--data", "digits",
                         "--label-fraction", 0.1, "--max-steps", 3, "--batch-size", 16, "--no-progress")
    assert code == 0, err
    folder = pretrained.parent.parent / "finetune" / "digits-10pct"  # default: beside the pretraining run
    result = json.loads((folder / "result.json").read_text())
    assert result["n_labeled"] == 140 and result["steps"] == 3 and result["label_fraction"] == 0.1
    assert f"finetune top-1 {result['top1']:.4f}" in out and "10% labels (140 images)" in out
    assert "simclrv2 resnet10t + fine-tuning layers of its head" in out
    assert read_checkpoint(folder / "classifier.ckpt")["selfsup"]["kind"] == "classifier"
    assert (folder / "logs" / "csv" / "version_0" / "metrics.csv").is_file()

    code, out, err = run(capsys, "distill", "--teacher", folder / "classifier.ckpt", "--student-backbone", "resnet10t",
                         "--student-backbone-kwargs", "{channels: [8, 8, 16, 32]}", "--student-small-stem",
                         "--max-steps", 3, "--batch-size", 16, "--temperature", 2, "--out", tmp_path / "student",
                         "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "student" / "result.json").read_text())
    assert result["steps"] == 3 and result["temperature"] == 2.0 and result["n_images"] == 1438
    assert f"distill top-1 {result['top1']:.4f}" in out and "agreement" in out
    meta = read_checkpoint(tmp_path / "student" / "classifier.ckpt")["selfsup"]
    assert meta["trained_by"]["teacher"] == str(folder / "classifier.ckpt")


def test_random_init_baseline_fine_tunes(tmp_path, capsys):
    code, _, err = run(capsys, "eval", "finetune", "--checkpoint", "random", "--backbone", "resnet10t",
                         "--backbone-kwargs", "{channels: [8, 8, 16, 32]}", "--small-stem", "--data", "digits",
                         "--label-fraction", 1.0, "--max-steps", 2, "--batch-size", 16, "--optimizer", "adamw",
                         "--lr", 0.001, "--out", tmp_path / "ft", "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert result["encoder"] == "random-init resnet10t" and result["n_labeled"] == 1438
    assert (result["optimizer"], result["lr"]) == ("adamw", 0.001)


def test_knn_still_runs_under_the_eval_subcommands(pretrained, tmp_path, capsys):
    code, out, err = run(capsys, "eval", "knn", "--checkpoint", pretrained, "--data", "digits", "--k", 5,
                         "--out", tmp_path / "knn.json")
    assert code == 0, err
    assert "knn top-1" in out


@pytest.mark.parametrize("args, message", [
    (["eval", "finetune", "--checkpoint", "/no/such.ckpt", "--data", "digits"], "checkpoint '/no/such.ckpt' does not exist"),
    (["eval", "finetune", "--checkpoint", "pixels", "--data", "digits"], "'pixels' has no weights to fine-tune"),
    (["eval", "finetune", "--checkpoint", "random", "--data", "digits", "--label-fraction", "0"], "label_fraction must lie in (0, 1], got 0"),
    (["distill", "--teacher", "/no/such.ckpt", "--student-backbone", "resnet10t"],
     "teacher checkpoint '/no/such.ckpt' does not exist; pass the classifier.ckpt"),
    (["distill", "--teacher", "{pretrained}", "--student-backbone", "resnet10t"], "not a fine-tuned classifier"),
])
def test_bad_input_ends_in_one_readable_line(pretrained, tmp_path, capsys, args, message):
    args = [str(pretrained) if a == "{pretrained}" else a for a in args]
    code, _, err = run(capsys, *args, "--out", tmp_path / "o", "--no-progress")
    assert code == 1
    assert message in err and err.startswith("selfsup: error:") and err.count("\n") == 1
