"""Bad input as users give it (issue 17): every example is refused with one line naming the problem and what to
pass, before anything is built, or handled and said; never a traceback, never a silent fallback."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.methods import METHODS
from selfsup.ranges import check_range

TINY = ["--backbone", "resnet10t", "--num-workers", "0", "--no-progress", "--set", "proj_hidden_dim=16",
        "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_images(folder, n, size=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "2", "--batch-size", "16", "--out", str(out),
                 *TINY]) == 0
    return out


# ---- 1. numbers outside their range ---------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--max-steps", "-1"], "max_steps must lie in [1, ∞), got -1"),
    (["--max-steps", "0"], "max_steps must lie in [1, ∞), got 0"),
    (["--epochs", "0"], "epochs must lie in [1, ∞), got 0"),
    (["--set", "temperature=-0.5"], "temperature must lie in (0, ∞), got -0.5"),
    (["--set", "temperature=0"], "temperature must lie in (0, ∞), got 0"),
    (["--batch-size", "0"], "batch_size must lie in [1, ∞), got 0"),
    (["--batch-size", "1"], "batch_size must be at least 2: contrastive losses need another example"),
    (["--set", "crop_min_scale=1.5"], "crop_min_scale must lie in (0, 1], got 1.5"),
])
def test_out_of_range_numbers_are_refused_before_anything_is_built(tmp_path, capsys, flags, message):
    code, _, err = run(capsys, "train", "simclr", "--data", "digits", "--out", tmp_path / "run", *flags)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_knn_k_is_refused_below_one_and_clipped_to_the_training_split(trained, tmp_path, capsys):
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", trained / "checkpoints" / "last.ckpt", "--k", 0)
    assert code == 1 and "k must lie in [1, ∞), got 0" in err
    for cls in ("a", "b"):
        write_images(tmp_path / "small" / "train" / cls, 6, seed=len(cls))
        write_images(tmp_path / "small" / "test" / cls, 2, seed=3)
    code, out, err = run(capsys, "eval", "knn", "--checkpoint", trained / "checkpoints" / "last.ckpt",
                         "--data", tmp_path / "small", "--out", tmp_path / "knn.json")
    assert code == 0, err
    assert "(k=12," in out and json.loads((tmp_path / "knn.json").read_text())["k"] == 12  # 12 training images


def test_every_methods_defaults_lie_in_their_ranges():
    for cls in METHODS.values():
        for name, value in vars(cls.config_class()).items():
            check_range(name, value)


# ---- 2. paths and files that are not what they claim to be ----------------------------------------------------

def test_symlink_loops_in_an_image_folder_are_skipped_and_listed(tmp_path, capsys):
    folder = tmp_path / "images"
    write_images(folder, 20)
    os.symlink("loop.png", folder / "loop.png")  # a file that points at itself
    os.symlink("self", folder / "self")  # a folder entry that points at itself
    code, out, err = run(capsys, "train", "simclr", "--data", folder, "--max-steps", 1, "--batch-size", 8,
                         "--image-size", 16, "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    listed = (tmp_path / "run" / "bad_images.txt").read_text()
    assert "loop.png" in listed and "1 unusable files skipped" in out


def test_a_text_file_is_not_a_checkpoint(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for argv in (["eval", "knn", "--checkpoint", notes], ["export", "--checkpoint", notes, "--out", tmp_path / "b.st"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "is not a selfsup checkpoint" in err and "Traceback" not in err


def test_export_keeps_weights_and_sidecar_apart_with_the_same_permissions(trained, tmp_path, capsys):
    checkpoint = trained / "checkpoints" / "last.ckpt"
    code, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "backbone.json")
    assert code == 1 and "pass --out" in err and "backbone.safetensors" in err
    assert not (tmp_path / "backbone.json").exists()
    folder = tmp_path / "existing"
    folder.mkdir()
    code, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", folder)
    assert code == 1 and f"pass --out {folder / 'backbone.safetensors'}" in err
    code, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "backbone.safetensors")
    assert code == 0, err
    mode = [stat.S_IMODE(os.stat(tmp_path / f"backbone.{ext}").st_mode) for ext in ("safetensors", "json")]
    assert mode[0] == mode[1]


# ---- 3. runs that claim more than they did ----------------------------------------------------------------------

def test_too_few_images_for_a_batch_on_every_device_is_refused(tmp_path, capsys):
    write_images(tmp_path / "three", 3)
    code, _, err = run(capsys, "train", "simclr", "--data", tmp_path / "three", "--batch-size", 2, "--devices", 2,
                       "--accelerator", "cpu", "--max-steps", 1, "--out", tmp_path / "run", *TINY)
    assert code == 1 and "has 3 usable images, fewer than one batch of 4 (2 per device x 2 devices)" in err
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_a_resume_refuses_another_batch_size(tmp_path, capsys):
    argv = ["train", "simclr", "--data", "digits", "--out", tmp_path / "run", *TINY]
    assert run(capsys, *argv, "--max-steps", 1, "--batch-size", 16)[0] == 0
    code, _, err = run(capsys, *argv, "--max-steps", 2, "--batch-size", 32, "--resume")
    assert code == 1 and "cannot resume with batch_size 32: the run was made with 16" in err
    assert run(capsys, *argv, "--max-steps", 2, "--batch-size", 16, "--resume")[0] == 0  # max_steps may change


# ---- 4. data that quietly teaches the wrong thing ---------------------------------------------------------------

def test_pretraining_on_a_labelled_root_leaves_its_test_split_out(tmp_path, capsys):
    for cls in ("a", "b"):
        write_images(tmp_path / "labelled" / "train" / cls, 8, seed=1)
        write_images(tmp_path / "labelled" / "test" / cls, 4, seed=2)
    code, out, err = run(capsys, "train", "simclr", "--data", tmp_path / "labelled", "--max-steps", 1,
                         "--batch-size", 8, "--image-size", 16, "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    assert "16 images from" in out and "leaves out the test/ images" in err


def test_a_single_class_training_side_is_one_line(trained, tmp_path, capsys):
    write_images(tmp_path / "one" / "train" / "only", 6)
    write_images(tmp_path / "one" / "test" / "only", 2)
    code, _, err = run(capsys, "eval", "linear", "--checkpoint", trained / "checkpoints" / "last.ckpt",
                       "--data", tmp_path / "one")
    assert code == 1 and "holds a single class; a classifier needs at least two" in err



# ---- 6. right answers that come too late ------------------------------------------------------------------------

def test_the_registry_reads_every_method_without_importing_it():
    from selfsup.methods import catalog

    for name, info in catalog().items():
        cls = METHODS[name]
        assert (info["paper"], info["deviations"], info["modality"]) == (cls.paper, cls.deviations, cls.modality)
        assert info["backbone"] == getattr(cls.config_class, "backbone", None), name
        assert info["data"] == cls.run_defaults.get("data") and cls.__module__.endswith("." + info["module"])
    assert sorted(catalog()) == sorted(name for name in METHODS if name in catalog())


@pytest.mark.parametrize("argv, message", [
    (["methods"], None),
    (["train", "simclr", "--data", "/nonexistent/folder"], "'/nonexistent/folder' does not exist"),
    (["train", "simclr", "--max-steps", "-1"], "max_steps must lie in [1, ∞)"),
    (["train", "simclrr"], "unknown method 'simclrr' (did you mean simclr"),
    (["eval", "knn", "--checkpoint", "/no/such.ckpt"], "checkpoint '/no/such.ckpt' does not exist"),
])
def test_listing_and_refusals_answer_before_torch_is_imported(argv, message):
    code = ("import sys\nfrom selfsup.cli import main\nstatus = main(sys.argv[1:])\n"
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported')\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert "torch not imported" in result.stdout, result.stderr
    if message:
        assert message in result.stderr and "Traceback" not in result.stderr
    else:
        assert "simclr" in result.stdout and "wav2vec2" in result.stdout


def test_a_moco_queue_longer_than_the_data_warns(tmp_path, capsys):
    write_images(tmp_path / "ten", 10)
    code, _, err = run(capsys, "train", "mocov2", "--data", tmp_path / "ten", "--batch-size", 4, "--max-steps", 1,
                       "--image-size", 16, "--out", tmp_path / "run", "--recipe", "paper", *TINY)
    assert code == 0, err
    assert "queue_size 4096 keeps more keys than the 10 images" in err and "queue_size=6 or less" in err
