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


def trains_resumes_and_exports(method: str, data: Path, options: list[str], run: Path) -> Path:
    """The CLI round trip of a dense image method: 4 steps of `selfsup train METHOD` on `data` (checkpoints every 2),
    resumed exactly from step 2, exported, the export's embedding equal to the method's, and the masks plot drawn.
    Returns the last checkpoint."""
    from selfsup.checkpoints import load_exported, load_method
    from selfsup.eval.plots import plot_masks

    assert main(["train", method, "--data", str(data), *options, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(run)]) == 0
    full, resumed = resumed_like_uninterrupted(method, run)
    assert resumed["global_step"] == full["global_step"] == 4
    checkpoint = run / "checkpoints" / "last.ckpt"
    exported = run.with_name(run.name + "-encoder.safetensors")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(exported)]) == 0
    trained, _ = load_method(checkpoint)
    images = trained.eval_batch([torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(2)])
    torch.testing.assert_close(load_exported(exported).eval()(images), trained.embed(images))
    assert plot_masks(str(checkpoint), run.with_name(run.name + "-masks.png"), n=2).stat().st_size > 1000
    return checkpoint
