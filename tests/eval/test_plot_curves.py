"""`selfsup plot curves`: a tiny run's curves as one PNG, the logs of a resumed run merged by step, and bad inputs as
one line each."""

import pytest
from PIL import Image

from selfsup.eval.plots import read_metrics
from tests.test_cli import run

TINY = ["--backbone", "resnet10t", "--num-workers", "0", "--no-progress", "--batch-size", "32",
        "--set", "proj_hidden_dim=16", "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def test_a_tiny_run_gives_one_png_of_its_curves(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "simclr", "--data", "digits", "--max-steps", 4, "--probe-every", 2,
               "--set", "monitor_every=2", "--out", out, *TINY)[0] == 0
    curves = read_metrics(out)
    assert {"loss", "lr", "probe/knn_top1", "collapse/std_x_sqrt_d", "collapse/effective_rank"} <= curves.keys()
    code, printed, err = run(capsys, "plot", "curves", "--run", out)
    assert code == 0, err
    assert printed.strip() == f"wrote {out / 'curves.png'}"
    with Image.open(out / "curves.png") as image:
        assert image.size[0] > image.size[1] > 500  # four panels, two by two


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True)
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))


def test_the_versions_of_a_resumed_run_are_merged_by_step_the_later_winning(tmp_path):
    logs = tmp_path / "run" / "logs" / "csv"
    write_csv(logs / "version_0" / "metrics.csv", ["epoch", "loss", "step"], [(0, 3.0 - s / 10, s) for s in range(6)])
    write_csv(logs / "version_1" / "metrics.csv", ["epoch", "loss", "probe/knn_top1", "step"],
              [(0, 1.0, "", 4), (0, "", 0.5, 5), (1, 0.5, "", 7)])
    write_csv(logs / "version_10" / "metrics.csv", ["loss", "step"], [(0.25, 7)])  # after version_1 and version_9
    curves = read_metrics(tmp_path / "run")
    assert curves["loss"] == {0: 3.0, 1: 2.9, 2: 2.8, 3: 2.7, 4: 1.0, 5: 2.5, 7: 0.25}
    assert curves["probe/knn_top1"] == {5: 0.5} and "epoch" not in curves


@pytest.mark.parametrize("case, message", [
    ("not-a-run", "is not a run folder (no logs/csv/version_*/metrics.csv in it)"),
    ("missing", "is not a run folder"),
    ("no-out-folder", "the folder of --out"),
    ("extension", "has an extension matplotlib does not write: pass FILE.png"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, case, message):
    folder = tmp_path / "folder"
    folder.mkdir()
    if case != "not-a-run":
        write_csv(folder / "logs" / "csv" / "version_0" / "metrics.csv", ["loss", "step"], [(1.0, 0)])
    run_dir = tmp_path / "nowhere" if case == "missing" else folder
    out = {"no-out-folder": tmp_path / "no" / "such" / "c.png", "extension": tmp_path / "c.xyz"}.get(case)
    code, _, err = run(capsys, "plot", "curves", "--run", run_dir, *(["--out", out] if out else []))
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("**/*.png"))
