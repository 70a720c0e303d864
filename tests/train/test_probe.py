"""The online kNN probe: its top-1 at the end of a run is `selfsup eval knn` on the same sample with the same k and
temperature, it leaves training bit for bit as it was, it follows its schedule, and bad settings are one line each."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.data import load_builtin, seeded_subset
from selfsup.train import probe
from selfsup.train.probe import KnnProbe

TINY = ["--backbone", "resnet10t", "--num-workers", "0", "--no-progress", "--batch-size", "32", "--seed", "3",
        "--set", "proj_hidden_dim=16", "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def probe_rows(run_dir):
    return [(int(r["step"]), float(r["probe/knn_top1"])) for path in sorted(run_dir.glob("logs/csv/*/metrics.csv"))
            for r in csv.DictReader(path.open()) if r.get("probe/knn_top1")]


def test_the_probe_is_eval_knn_on_its_sample_and_leaves_training_as_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(probe, "PROBE_TRAIN", 300)  # digits' splits (1438 / 359) are smaller than the probe's sample:
    monkeypatch.setattr(probe, "PROBE_TEST", 100)  # a smaller one makes it draw from them
    probed, plain = tmp_path / "probed", tmp_path / "plain"
    code, out, err = run(capsys, "train", "simclr", "--data", "digits", "--max-steps", 4, "--probe-every", 3,
                         "--out", probed, *TINY)
    assert code == 0, err
    rows = probe_rows(probed)
    assert [step for step, _ in rows] == [2, 3]  # after step 3 and the last step (4), at Lightning's step index
    last = rows[-1][1]
    assert f"online kNN top-1 {last:.4f} at step 4 (k=20, 300 train / 100 test examples of digits" in out
    assert "images/s over 3 timed steps" in out and "waiting for data" in out  # the data-bound report
    code, out, err = run(capsys, "eval", "knn", "--checkpoint", probed / "checkpoints" / "last.ckpt", "--data",
                         "digits", "--limit", "300,100", "--k", 20, "--temperature", 0.07, "--out", tmp_path / "k.json")
    assert code == 0, err
    result = json.loads((tmp_path / "k.json").read_text())
    assert (result["n_train"], result["n_test"]) == (300, 100) and result["top1"] == round(last, 4)

    assert run(capsys, "train", "simclr", "--data", "digits", "--max-steps", 4, "--probe-every", 0, "--out", plain,
               *TINY)[0] == 0
    assert probe_rows(plain) == []
    a, b = (read_checkpoint(folder / "checkpoints" / "last.ckpt") for folder in (probed, plain))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the probe drew nothing from the training RNG


def test_seeded_subset_is_fixed_sorted_and_keeps_the_sets_description():
    digits = load_builtin("digits", "test")
    picked = seeded_subset(digits, 50)
    assert len(picked) == 50 and torch.equal(picked.indices, seeded_subset(digits, 50).indices)
    assert bool((picked.indices[1:] > picked.indices[:-1]).all()) and picked.classes == digits.classes
    assert torch.equal(picked[7][0], digits[int(picked.indices[7])][0]) and picked.labels[7] == picked[7][1]
    assert seeded_subset(digits, 10_000) is digits


@pytest.mark.parametrize("every, total, steps", [
    (None, 50, (100, -1)),  # default: every tenth, at least 100 steps apart; a shorter run is not probed
    (None, 3000, (300, 3000)),
    (None, 1005, (101, 1005)),
    (7, 3, (7, 3)),  # asked for: the last step is probed however short the run
    (2, 9, (2, 9)),
])
def test_the_schedule(every, total, steps):
    callback = KnnProbe(load_builtin("digits", "train"), load_builtin("digits", "test"), "digits", every)
    callback.on_train_start(SimpleNamespace(estimated_stepping_batches=total), None)
    assert callback.steps == steps


def write_images(folder, n):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("flags, message", [
    (["--probe-every", "-1"], "probe_every must lie in [0, ∞), got -1"),
    (["--data", "FOLDER", "--probe-every", "5"], "--probe-every needs labelled images and "),
    (["--probe-data", "FOLDER"], "has no class subfolders"),
    (["--probe-data", "/nonexistent/labelled"], "'/nonexistent/labelled' does not exist"),
    (["--probe-every", "0", "--probe-data", "digits"], "--probe-every 0 turns the probe off: drop one of them"),
])
def test_bad_probe_settings_are_one_line_before_the_run_folder_is_made(tmp_path, capsys, flags, message):
    folder = write_images(tmp_path / "unlabelled", 8)
    flags = [str(folder) if f == "FOLDER" else f for f in flags]
    code, _, err = run(capsys, "train", "simclr", "--data", "digits", *flags, "--max-steps", 1,
                       "--out", tmp_path / "run", *TINY)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_the_probe_is_for_image_methods(tmp_path, capsys):
    code, _, err = run(capsys, "train", "bert", "--probe-every", 5, "--max-steps", 1, "--out", tmp_path / "run")
    assert code == 1 and "the online kNN probe scores image encoders" in err
    assert not (tmp_path / "run").exists()
