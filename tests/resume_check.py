"""Exact resume, the check every method's CLI test makes: a run interrupted after step `step` and resumed ends with
the uninterrupted run's weights and state, bit for bit."""

import shutil
from pathlib import Path

import torch

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main


def resumed_like_uninterrupted(method: str, run: Path, step: int = 2) -> tuple[dict, dict]:
    """Copy the finished run folder `run`, forget its checkpoints after `step` (as a kill would), resume the copy
    with `selfsup train METHOD --resume`; asserts that both end at the same step with equal state dicts and returns
    (the uninterrupted run's last checkpoint, the resumed run's)."""
    half = run.with_name(run.name + "-resumed")
    shutil.copytree(run, half)
    for path in (half / "checkpoints").iterdir():
        if read_checkpoint(path)["global_step"] > step:
            path.unlink()
    assert main(["train", method, "--resume", "--out", str(half), "--no-progress"]) == 0
    full = read_checkpoint(run / "checkpoints" / "last.ckpt")
    resumed = read_checkpoint(half / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == full["global_step"]
    for key in full["state_dict"]:
        torch.testing.assert_close(resumed["state_dict"][key], full["state_dict"][key], rtol=0, atol=0, msg=key)
    return full, resumed
