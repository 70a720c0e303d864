"""`selfsup train --devices 2` on CPU processes (gloo) trains the model one process trains on the global batch."""

import json
import subprocess
import sys

import pytest
import torch

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.train.run import RUN_DIR_ENV, _run_dir
from tests.test_cli import TINY

# per-sample views: each image's views are a function of (seed, epoch, index), whichever process makes them
COMMON = ["train", "simclr", "--data", "digits", "--max-steps", "3", "--set", "batched_views=false", *TINY,
          "--recipe", "paper"]  # the paper's LARS: AdamW would magnify the tolerated float differences


def _knn(run, tmp_path) -> float:
    out = tmp_path / f"{run.name}.json"
    assert main(["eval", "knn", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--data", "digits",
                 "--out", str(out)]) == 0
    return json.loads(out.read_text())["top1"]


@pytest.mark.slow
def test_two_cpu_processes_with_global_bn_train_the_weights_of_one_process_on_the_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*COMMON, "--out", str(one), "--batch-size", "64"]) == 0
    # Lightning's DDP launcher runs the command again for rank 1: it has to be a real command line.
    command = [sys.executable, "-m", "selfsup.cli", *COMMON, "--out", str(two), "--batch-size", "32",
               "--devices", "2", "--accelerator", "cpu", "--sync-batchnorm"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 32 x 2 devices" in result.stdout
    weights = [read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"] for run in (one, two)]
    assert weights[0].keys() == weights[1].keys()
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=1e-4, atol=1e-5, msg=name)
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert _knn(one, tmp_path) == pytest.approx(_knn(two, tmp_path), abs=1 / 359)  # at most one test image apart


def test_processes_started_by_a_launcher_need_one_run_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it in every process
    with pytest.raises(SelfsupError, match="pass --out RUN_FOLDER"):
        _run_dir("simclr", None, resume=False)
    assert _run_dir("simclr", str(tmp_path), resume=False) == tmp_path
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))  # what selfsup's own launch tells the processes it starts
    assert _run_dir("simclr", None, resume=True) == tmp_path
