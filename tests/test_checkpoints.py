"""Checkpoints are safe: atomic writes, step files with last.ckpt pointing at the newest, bounded
by keep_last, corrupt ones named and passed over on resume, crafted ones refused without running
code, and nothing written outside the run folder."""

import os
import re

import pytest
import torch
from safetensors import SafetensorError

from selfsup.checkpoints import (
    inside,
    latest_good_checkpoint,
    load_exported,
    point_last_at,
    prune_step_checkpoints,
    read_checkpoint,
    step_checkpoints,
    step_path,
    write_atomic,
)
from selfsup.cli import main
from selfsup.errors import SelfsupError

TINY = ["--data", "digits", "--limit-samples", "64", "--batch-size", "32", "--num-workers", "0", "--no-progress",
        "--backbone", "resnet18", "--set", "backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16"]


def fake(step: int) -> dict:
    return {"selfsup": {"method": "simclr"}, "global_step": step, "state_dict": {"w": torch.full((3,), step)}}


def write_steps(folder, steps, keep_last=10):
    for step in steps:
        path = step_path(folder, step)
        write_atomic(fake(step), path)
        point_last_at(path)
        prune_step_checkpoints(folder, keep_last)


def test_a_crash_while_writing_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    write_atomic(fake(1), path)

    def crash_midway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(fake(2), path)
    assert read_checkpoint(path)["global_step"] == 1


def test_last_points_at_the_newest_and_keep_last_bounds_the_files(tmp_path):
    write_steps(tmp_path, [1, 2, 3, 4, 5], keep_last=2)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["step=00000005.ckpt", "step=00000004.ckpt"]
    assert os.path.samefile(tmp_path / "last.ckpt", step_path(tmp_path, 5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step=00000004.ckpt", "step=00000005.ckpt"]


def test_a_corrupt_checkpoint_is_named_and_resume_takes_the_previous_one(tmp_path):
    write_steps(tmp_path, [2, 4, 6])
    newest = step_path(tmp_path, 6)
    newest.write_bytes(newest.read_bytes()[:300])  # truncated (last.ckpt is the same file)
    with pytest.raises(SelfsupError, match=re.escape(f"checkpoint '{tmp_path / 'last.ckpt'}' is corrupt or truncated")):
        read_checkpoint(tmp_path / "last.ckpt")
    path, checkpoint, skipped = latest_good_checkpoint(tmp_path)
    assert path == step_path(tmp_path, 4) and checkpoint["global_step"] == 4
    assert len(skipped) == 1 and str(newest) in skipped[0]
    step_path(tmp_path, 4).write_bytes(b"garbage")
    step_path(tmp_path, 2).write_bytes(b"")
    with pytest.raises(SelfsupError, match="cannot resume: no readable checkpoint"):
        latest_good_checkpoint(tmp_path)


class RunsCode:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_crafted_to_run_code_is_refused_on_resume(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({**fake(3), "selfsup": RunsCode(marker)}, step_path(folder, 3))
    point_last_at(step_path(folder, 3))
    code = main(["train", "simclr", "--resume", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "refusing to load" in err and "could run code" in err
    code = main(["eval", "knn", "--checkpoint", str(folder / "last.ckpt"), "--data", "digits"])
    assert code == 1 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_exported_weights_are_read_as_safetensors_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    fake_export = tmp_path / "backbone.safetensors"
    torch.save({"w": RunsCode(marker)}, fake_export)
    (tmp_path / "backbone.json").write_text('{"library": "timm", "architecture": "resnet18", "in_chans": 1, '
                                            '"small_stem": false, "kwargs": {}}')
    with pytest.raises(SafetensorError):
        load_exported(fake_export)
    assert not marker.exists()


def test_nothing_is_written_outside_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert inside(run, "checkpoints/last.ckpt") == (run / "checkpoints" / "last.ckpt").resolve()
    with pytest.raises(SelfsupError, match="outside the run folder"):
        inside(run, "../elsewhere/config.yaml")
    outside = tmp_path / "outside"
    outside.mkdir()
    run.mkdir()
    (run / "checkpoints").symlink_to(outside)  # a link planted in the run folder
    code = main(["train", "simclr", *TINY, "--max-steps", "1", "--out", str(run)])
    assert code == 1 and "outside the run folder" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


@pytest.mark.slow
def test_keep_last_bounds_a_real_run_and_resume_passes_over_a_corrupt_newest(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "simclr", *TINY, "--max-steps", "5", "--checkpoint-every", "1", "--keep-last", "2",
                 "--out", str(run)]) == 0
    folder = run / "checkpoints"
    assert [p.name for p in step_checkpoints(folder)] == ["step=00000005.ckpt", "step=00000004.ckpt"]
    newest = step_path(folder, 5)
    newest.write_bytes(newest.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["train", "simclr", "--resume", "--max-steps", "6", "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint '{newest}' is corrupt or truncated" in err
    assert f"resuming from the previous checkpoint '{step_path(folder, 4)}'" in err
    assert read_checkpoint(folder / "last.ckpt")["global_step"] == 6
