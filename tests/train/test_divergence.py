"""A NaN or inf loss stops the run naming the step and the last good checkpoint (or, with
on_nan_loss=skip, skips that step's update); non-finite weights are never written."""

import math

import pytest
import torch

from selfsup.checkpoints import read_checkpoint, step_checkpoints, step_path
from selfsup.errors import SelfsupError
from selfsup.methods.simclr import SimCLR
from selfsup.train import train

TINY = dict(data="digits", limit_samples=64, batch_size=32, num_workers=0, backbone="resnet18",
            backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8}, proj_hidden_dim=32, proj_dim=16,
            checkpoint_every=1)


def loss_goes_bad_at(monkeypatch, steps: set[int], value: float = math.nan) -> None:
    """SimCLR's loss becomes `value` at these (1-based) steps."""
    original, calls = SimCLR.training_step, []

    def training_step(self, views, indices=None):
        out = original(self, views, indices)
        calls.append(1)
        return {**out, "loss": out["loss"] * value} if len(calls) in steps else out

    monkeypatch.setattr(SimCLR, "training_step", training_step)


def assert_all_finite(path) -> None:
    state = read_checkpoint(path)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_bad_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, monkeypatch, value):
    loss_goes_bad_at(monkeypatch, {3}, value)
    folder = tmp_path / "run" / "checkpoints"
    with pytest.raises(SelfsupError, match=f"the loss became {value} at step 3; stopped") as error:
        train("simclr", {**TINY, "max_steps": 5}, out=str(tmp_path / "run"), progress=False)
    assert f"the last good checkpoint is '{step_path(folder, 2)}'" in str(error.value)
    assert [p.name for p in step_checkpoints(folder)][0] == "step=00000002.ckpt"
    for path in step_checkpoints(folder):
        assert_all_finite(path)


def test_on_nan_loss_skip_skips_the_step_and_goes_on(tmp_path, monkeypatch, capsys):
    loss_goes_bad_at(monkeypatch, {2, 4})
    run = train("simclr", {**TINY, "max_steps": 5, "on_nan_loss": "skip"}, out=str(tmp_path / "run"), progress=False)
    assert "skipped steps with a NaN/inf loss: [2, 4]" in capsys.readouterr().out
    last = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 5
    assert_all_finite(last)


def test_non_finite_weights_are_never_written(tmp_path, monkeypatch):
    original = SimCLR.after_step

    def after_step(self, step, max_steps):
        original(self, step, max_steps)
        if step == 2:  # e.g. an overflowing update that left the loss finite this time
            with torch.no_grad():
                self.projection_head.parameters().__next__().view(-1)[0] = math.inf

    monkeypatch.setattr(SimCLR, "after_step", after_step)
    folder = tmp_path / "run" / "checkpoints"
    with pytest.raises(SelfsupError, match="the weights are no longer finite at step 2; nothing was saved"):
        train("simclr", {**TINY, "max_steps": 4}, out=str(tmp_path / "run"), progress=False)
    assert [p.name for p in step_checkpoints(folder)] == ["step=00000001.ckpt"]
    assert_all_finite(folder / "last.ckpt")
