"""`selfsup eval change`: the F1/IoU arithmetic against a naive count, the siamese network, and the command on a tiny
LEVIR-CD-layout folder and on rs-change (cut to its two small tiles) with a tiny encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import trees
from selfsup.data.cache import cache_root
from selfsup.eval.change import (
    ChangeDecoder,
    change_counts,
    change_loss,
    change_scores,
    evaluate_change,
    pos_weight_of,
    predict_change,
)

REAL_CACHE = cache_root()  # read at import, before tests/conftest.py gives each test its own SELFSUP_CACHE
TINY_FLAGS = ["--backbone", "resnet10t", "--small-stem", "--backbone-kwargs", "{channels: [8, 16, 32, 64]}"]
TINY = {"backbone": "resnet10t", "small_stem": True, "backbone_kwargs": {"channels": [8, 16, 32, 64]}}


def naive_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = fp = fn = 0
    for p, t in zip(predicted.ravel().tolist(), truth.ravel().tolist()):
        tp += bool(p) and bool(t)
        fp += bool(p) and not t
        fn += not p and bool(t)
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
            "iou": tp / (tp + fp + fn)}


def test_f1_and_iou_match_a_naive_count_and_sklearn():
    from sklearn.metrics import f1_score, jaccard_score

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 9, 7, generator=g) < 0.2
    predicted = (torch.rand(3, 9, 7, generator=g) < 0.3) | (truth & (torch.rand(3, 9, 7, generator=g) < 0.6))
    counts = change_counts(predicted, truth.to(torch.uint8))
    scores = change_scores(counts)
    expected = naive_scores(predicted.numpy(), truth.numpy())
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=5e-5)
    assert scores["f1"] == pytest.approx(f1_score(truth.ravel(), predicted.ravel()), abs=5e-5)
    assert scores["iou"] == pytest.approx(jaccard_score(truth.ravel(), predicted.ravel()), abs=5e-5)
    # a hand count: TP 1, FP 1, FN 2 -> F1 2/5, IoU 1/4
    assert change_scores(change_counts(torch.tensor([1, 1, 0, 0, 0]), torch.tensor([1, 0, 1, 1, 0]))) == {
        "precision": 0.5, "recall": round(1 / 3, 4), "f1": 0.4, "iou": 0.25}
    assert change_scores(torch.tensor([0, 0, 0]))["f1"] is None  # no change anywhere, none predicted


def test_pos_weight_balances_the_rare_change_class():
    masks = torch.zeros(2, 10, 10, dtype=torch.uint8)
    masks[0, :2, :5] = 1  # 10 of 200 pixels
    assert pos_weight_of(masks) == 19.0
    rare = torch.zeros(1, 20, 20)
    rare[0, 0, 0] = 1  # 399 to 1: clipped
    assert pos_weight_of(rare) == 50.0 and pos_weight_of(torch.ones(1, 4, 4)) == 1.0


def test_the_decoder_learns_a_difference_map():
    torch.manual_seed(0)
    difference = torch.zeros(8, 4, 6, 6)
    masks = torch.zeros(8, 24, 24, dtype=torch.uint8)
    difference[:, 0, :3] = 1.0  # change in the top half of the feature grid
    masks[:, :12] = 1
    decoder = ChangeDecoder(4, width=8)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(60):
        loss = change_loss(decoder(difference), masks, pos_weight=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = predict_change(decoder.eval()(difference), (24, 24))
    assert change_scores(change_counts(predicted, masks))["iou"] > 0.9


def write_levir(root, n_train=12, n_test=6, size=32):
    """A LEVIR-CD-layout folder: textured pairs, time 2 with a bright square where label/ says change."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            a = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            b = a.copy()
            side = int(rng.integers(6, 14))
            y, x = rng.integers(0, size - side, 2)
            b[y:y + side, x:x + side] = 250
            label = np.zeros((size, size), dtype=np.uint8)
            label[y:y + side, x:x + side] = 255
            for part, array in (("A", a), ("B", b), ("label", label)):
                (root / split / part).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / part / f"{i}.png")
    return root


def test_pixels_find_the_changed_squares_of_a_levir_folder(tmp_path):
    data = write_levir(tmp_path / "levir")
    result = evaluate_change("pixels", data=str(data), max_steps=80, out=str(tmp_path / "r.json"), progress=False)
    assert result["f1"] > 0.8 and result["iou"] > 0.6  # |A - B| of the pixels is the change itself here
    assert result["n_train"] == 12 and result["n_test"] == 6 and result["tag"] == "real"
    tp, fp, fn = result["tp_fp_fn"]
    assert tp + fn == sum(int((np.asarray(Image.open(p)) > 0).sum())
                                  for p in (data / "test" / "label").iterdir())


def test_the_command_on_a_levir_folder(tmp_path, capsys):
    data = write_levir(tmp_path / "levir")
    out = tmp_path / "change.json"
    code = main(["eval", "change", "--checkpoint", "random", *TINY_FLAGS, "--data", str(data), "--max-steps", "5",
                 "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("change F1 ") and "[real] 12 train / 6 test pairs" in printed
    result = json.loads(out.read_text())
    assert result["protocol"] == "change" and result["steps"] == 5 and result["image_size"] == 32
    assert 0 <= result["f1"] <= 1 and 0 <= result["iou"] <= result["f1"]
    assert sum(result["tp_fp_fn"]) <= 6 * 32 * 32 and out.with_suffix(".png").stat().st_size > 0
    code = main(["eval", "change", "--checkpoint", "random", *TINY_FLAGS, "--data", str(data), "--finetune",
                 "--max-steps", "3", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "ft.json")])
    result = json.loads((tmp_path / "ft.json").read_text())
    assert code == 0 and result["protocol"] == "change-finetune" and result["steps"] == 3
    assert result["encoder_lr"] == pytest.approx(1e-4)


def test_the_command_on_rs_change(tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(REAL_CACHE))
        wheel = trees.wheel_path()  # downloaded by scripts/setup.sh
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(trees, "TILES", {"OSBS_029": 61, "SOAP_061": 37})  # the two 400 px tiles: 12 + 12 pairs
    out = tmp_path / "rs.json"
    code = main(["eval", "change", "--checkpoint", "random", *TINY_FLAGS, "--max-steps", "5", "--no-progress",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert code == 0 and "[synthetic labels on real images] 12 train / 12 test pairs" in printed
    assert result["data"] == "rs-change" and result["tag"] == "synthetic" and result["image_size"] == 128
    assert 0 < result["change_fraction_test"] < 0.5 and result["pos_weight"] > 1


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "pixels", "--finetune"], "'pixels' has no weights to fine-tune"),
    (["--checkpoint", "random", "--limit", "4,4"], "--limit does not apply to change"),
    (["--checkpoint", "random", "--data", "{tmp}"], "has no A/ folder: lay change pairs out as DIR/A/"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    code = main(["eval", "change", *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
