"""The `selfsup` command end to end on tiny runs (digits, 8x8), and every bad input's message."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.checkpoints import load_exported, load_method, read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError

TINY = ["--backbone", "resnet10t", "--batch-size", "32", "--num-workers", "0", "--no-progress",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step SimCLR run on digits, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "3", "--out", str(out), *TINY]) == 0
    return out


def write_images(folder, n, size=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_methods_lists_simclr(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "simclr" in out and "ICML 2020" in out and "resnet18" in out


def test_methods_name_lists_every_option_with_its_default_and_comment(capsys):
    from selfsup.methods import make_config

    code, out, _ = run(capsys, "methods", "glcnet")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("glcnet ") and "simclr" not in out
    options = {line.split(" = ")[0].strip(): line for line in lines if re.match(r"  \w+ = ", line)}
    assert set(options) == set(vars(make_config("glcnet")))  # every field --set takes, nothing else
    assert "temperature = 0.5" in options["temperature"] and "τ of both NT-Xent losses" in options["temperature"]
    assert "lr = 0.001" in options["lr"]  # the method's own default, not MethodConfig's 0.3
    code, _, err = run(capsys, "methods", "glcnett")
    assert code == 1 and "did you mean glcnet" in err


def test_run_folder_holds_config_logs_and_checkpoint(trained):
    config = (trained / "config.yaml").read_text()
    assert "method: simclr" in config and "version:" in config and "seed: 0" in config
    assert "proj_hidden_dim: 32" in config and "data: digits" in config
    assert (trained / "logs" / "csv" / "version_0" / "metrics.csv").is_file()
    assert list((trained / "logs" / "tensorboard").glob("version_0/events.out.tfevents*"))
    checkpoint = read_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 3 and checkpoint["selfsup"]["method"] == "simclr"


def test_resume_continues_the_step_count_optimiser_and_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "2", "--out", str(out), *TINY]) == 0
    first = read_checkpoint(out / "checkpoints" / "last.ckpt")
    # resume: the saved configuration is reused (no TINY flags needed), only max_steps grows
    assert main(["train", "simclr", "--max-steps", "4", "--out", str(out), "--resume", "--no-progress"]) == 0
    second = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert second["global_step"] == 4
    assert second["selfsup"]["train"]["batch_size"] == 32
    assert second["lr_schedulers"][0]["last_epoch"] == 4
    assert second["optimizer_states"][0]["state"]  # momentum buffers came along
    key = "method.projection_head.0.weight"
    assert not torch.equal(first["state_dict"][key], second["state_dict"][key])
    assert len(list((out / "logs" / "csv").glob("version_*/metrics.csv"))) == 2  # first logs kept


def test_train_on_a_nested_image_folder(tmp_path, capsys):
    write_images(tmp_path / "images" / "a", 20)
    write_images(tmp_path / "images" / "b" / "deeper", 20, seed=1)
    code, out, err = run(capsys, "train", "simclr", "--data", tmp_path / "images", "--image-size", 16,
                         "--max-steps", 2, "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    assert "40 images" in out
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["selfsup"]["in_chans"] == 3


def test_eval_knn_and_linear_write_json(trained, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last.ckpt"
    for protocol in ("knn", "linear"):
        code, out, err = run(capsys, "eval", protocol, "--checkpoint", ckpt, "--data", "digits", "--k", 20,
                             "--out", tmp_path / f"{protocol}.json")
        assert code == 0, err
        result = json.loads((tmp_path / f"{protocol}.json").read_text())
        assert 0.1 < result["top1"] <= 1.0 and result["n_test"] > 300 and f"top-1 {result['top1']:.4f}" in out


def test_eval_baselines_on_a_labeled_folder(tmp_path, capsys):
    for cls in ("cat", "dog"):
        write_images(tmp_path / "labeled" / cls, 10, seed=hash(cls) % 100)
    for checkpoint, network in (("random", ["--backbone", "resnet10t"]), ("pixels", [])):
        code, out, err = run(capsys, "eval", "knn", "--checkpoint", checkpoint, *network,
                             "--data", tmp_path / "labeled", "--image-size", 16, "--k", 5,
                             "--out", tmp_path / "r.json")
        assert code == 0, err
        assert json.loads((tmp_path / "r.json").read_text())["n_test"] == 4  # 20% of 10 per class
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", "pixels", "--backbone", "resnet10t",
                       "--data", tmp_path / "labeled")
    assert code == 1 and "--backbone sizes the network of --checkpoint random" in err  # refused, not ignored


def test_export_round_trip(trained, tmp_path, capsys):
    code, _, err = run(capsys, "export", "--checkpoint", trained / "checkpoints" / "last.ckpt",
                       "--out", tmp_path / "backbone.safetensors")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "backbone.json").read_text())
    assert (sidecar["library"], sidecar["architecture"], sidecar["in_chans"]) == ("timm", "resnet10t", 1)
    assert sidecar["kwargs"] == {"channels": [16, 32, 64, 128]} and sidecar["num_features"] == 128
    exported = load_exported(tmp_path / "backbone.safetensors").eval()
    original = load_method(trained / "checkpoints" / "last.ckpt")[0].encoder()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(exported(x), original.eval()(x))


def _bad_folder(tmp_path, kind):
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "no-images":
        (folder / "notes.txt").write_text("hello")
    if kind == "corrupt":
        write_images(folder, 40)
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


@pytest.mark.parametrize("args, message", [
    (["train", "simclr", "--data", "/no/such/folder"], "'/no/such/folder' does not exist"),
    (["train", "simclr", "--data", "{empty}"], "no image files"),
    (["train", "simclr", "--data", "{no-images}"], "no image files"),
    (["train", "simclr", "--data", "{corrupt}", "--image-size", "8", "--max-steps", "1", "--batch-size", "41",
      "--backbone", "resnet10t", "--on-bad-image", "error"], "broken.png"),
    (["train", "byol2"], "unknown method 'byol2'"),
    (["train", "simclr", "--data", "digits", "--backbone", "resnet1800"], "unknown backbone 'resnet1800'"),
    (["train", "simclr", "--data", "digits", "--set", "lr=fast"], "option lr expects float"),
    (["train", "simclr", "--data", "digits", "--set", "tau=0.1"], "unknown option 'tau'"),
    (["train", "simclr", "--data", "digits", "--set", "backbone_kwargs={depth: 3}"], "does not accept these options"),
    (["train", "simclr", "--data", "digits", "--batch-size", "5000"], "fewer than one batch"),
    (["eval", "knn", "--checkpoint", "/no/such.ckpt", "--data", "digits"], "does not exist"),
    (["train", "simclr", "--resume", "--data", "digits"], "cannot resume"),
    (["train", "simclr", "--data", "{corrupt}", "--set", "batched_views=true", "--batch-size", "8"], "needs images of one size"),
])
def test_bad_input_ends_in_one_readable_line(tmp_path, capsys, args, message):
    for kind in ("empty", "no-images", "corrupt"):
        args = [a.replace("{" + kind + "}", str(_bad_folder(tmp_path, kind))) if "{" + kind + "}" in a else a
                for a in args]
    workers = ["--num-workers", "1"] if args[0] == "train" else []  # errors must survive a worker process
    code, out, err = run(capsys, *args, *workers, "--out", tmp_path / "o" if args[0] == "train" else tmp_path / "o.json")
    assert code == 1
    assert message in err and err.startswith("selfsup: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_wrongly_typed_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "simclr", "--epochs", "ten"])
    assert exit_info.value.code == 2 and "invalid int value: 'ten'" in capsys.readouterr().err


def test_checkpoints_from_elsewhere_are_refused(trained, tmp_path, capsys):
    good = read_checkpoint(trained / "checkpoints" / "last.ckpt")
    other = tmp_path / "other" / "checkpoints" / "last.ckpt"
    other.parent.mkdir(parents=True)
    torch.save({**good, "selfsup": {**good["selfsup"], "method": "byol"}}, other)
    code, _, err = run(capsys, "train", "simclr", "--resume", "--out", tmp_path / "other")
    assert code == 1 and "written by method 'byol', not 'simclr'" in err
    code, _, err = run(capsys, "train", "simclr", "--data", "digits", "--out", tmp_path / "other")
    assert code == 1 and "already holds a run; pass --resume" in err

    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    for path, message in ((plain, "not a selfsup checkpoint"), (truncated, "corrupt or truncated")):
        code, _, err = run(capsys, "eval", "knn", "--checkpoint", path, "--data", "digits")
        assert code == 1 and message in err


class RunsCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_checkpoint_that_would_run_code_is_rejected(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"selfsup": RunsCode()}, evil)
    with pytest.raises(SelfsupError, match="refusing to load"):
        read_checkpoint(evil)


def test_the_installed_command_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", "simclr", "--data", "/nonexistent"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
