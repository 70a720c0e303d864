"""`selfsup eval segment`: the mIoU arithmetic, the probe, label alignment, fine-tuning and the command, on small
in-memory dense sets (a bright square on a textured background)."""

import json

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from selfsup.cli import main
from selfsup.data.dense import DenseSet, DenseTarget
from selfsup.eval import segment
from selfsup.eval.segment import (
    FramedPairs,
    confusion_matrix,
    evaluate_segment,
    fit_probe,
    foreground_iou,
    image_subset,
    iou_per_class,
    mean_iou,
    predict_map,
)

TINY = {"backbone": "resnet10t", "small_stem": True, "backbone_kwargs": {"channels": [8, 16, 32, 64]}}
TINY_FLAGS = ["--backbone", "resnet10t", "--small-stem", "--backbone-kwargs", "{channels: [8, 16, 32, 64]}"]


class Squares(DenseSet):
    """n textured images (C, size, size) with one bright square each: red = class 1, blue = class 2; its top edge
    is unlabelled (255)."""

    def __init__(self, n, size=32, seed=0, channels=3, has=("semantic",)):
        super().__init__(name="squares", tag="synthetic", classes=["red", "blue"], channels=channels,
                         native_size=size, has=has)
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 100, (n, channels, size, size), generator=g, dtype=torch.uint8)
        self.maps = torch.zeros(n, size, size, dtype=torch.int64)
        for i in range(n):
            side = int(torch.randint(size // 4, size // 2, (1,), generator=g))
            y, x = torch.randint(0, size - side, (2,), generator=g).tolist()
            c = int(torch.randint(1, 3, (1,), generator=g))
            self.images[i, :, y:y + side, x:x + side] = 30
            self.images[i, 0 if c == 1 or channels == 1 else -1, y:y + side, x:x + side] = 230
            self.maps[i, y:y + side, x:x + side] = c
            self.maps[i, y, x:x + side] = 255

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], DenseTarget(semantic=self.maps[i])


@pytest.fixture
def squares(monkeypatch):
    """--data squares: 48 train and 24 test images, through evaluate_segment's open_dense."""
    sets = {"train": Squares(48, seed=0), "test": Squares(24, seed=1)}
    monkeypatch.setattr(segment, "open_dense", lambda spec, split: sets[split])
    return sets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-step SimCLR run on digits (8x8 grey) with a tiny ResNet."""
    from selfsup.train.run import train

    run = train("simclr", dict(data="digits", max_steps=2, batch_size=32, num_workers=0, proj_hidden_dim=24,
                               proj_dim=16, **TINY), out=str(tmp_path_factory.mktemp("simclr")), progress=False)
    return str(run / "checkpoints" / "last.ckpt")


def test_iou_matches_a_hand_computed_example_and_torchmetrics():
    labels = torch.tensor([[0, 0, 1], [1, 2, 255]])
    predicted = torch.tensor([[0, 1, 1], [1, 1, 0]])  # the 255 pixel's prediction is not counted
    confusion = confusion_matrix(predicted, labels, num_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    iou = iou_per_class(confusion)
    # class 0: TP 1 / (TP 1 + FP 0 + FN 1); class 1: 2 / (2 + 2 + 0); class 2: 0 / (0 + 0 + 1); class 3: absent
    assert iou[:3].tolist() == [0.5, 0.5, 0.0] and torch.isnan(iou[3])
    assert mean_iou(iou) == pytest.approx(1 / 3)
    metric = MulticlassJaccardIndex(num_classes=3, average=None, ignore_index=255)
    torch.testing.assert_close(iou[:3].float(), metric(predicted, labels))
    # any object vs background: labels' object pixels (0,2) (1,0) (1,1), predicted (0,1) (0,2) (1,0) (1,1); the class
    # 2 pixel predicted as class 1 still counts as found: 3 / (3 + 1 FP + 0 FN)
    assert foreground_iou(confusion) == pytest.approx(3 / 4)
    binary = MulticlassJaccardIndex(num_classes=2, average=None, ignore_index=255)
    assert foreground_iou(confusion) == pytest.approx(float(binary((predicted > 0).long(), labels.clamp(max=1)
                                                                   .where(labels != 255, 255))[1]))


def test_predictions_are_upsampled_bilinearly_to_the_label_map():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 0] = logits[0, 1, :, 1] = 1.0  # class 0 in the left column of a 2x2 map, class 1 in the right
    assert predict_map(logits, (4, 4))[0].tolist() == [[0, 0, 1, 1]] * 4


def _blocks(n, separable, seed):
    """Labels (n, 16, 16), each image two classes of 0..2 side by side, split at a multiple of 4 pixels, and
    features (n, 8, 4, 4): each 4x4 block's class one-hot plus noise when separable, else noise alone."""
    g = torch.Generator().manual_seed(seed)
    left, right = torch.randint(0, 3, (n, 1, 1), generator=g), torch.randint(0, 3, (n, 1, 1), generator=g)
    split = torch.randint(1, 4, (n, 1, 1), generator=g)
    cells = torch.where(torch.arange(4).expand(n, 4, 4) < split, left, right)  # (n, 4, 4)
    labels = cells.repeat_interleave(4, 1).repeat_interleave(4, 2).to(torch.uint8)
    features = torch.randn(n, 8, 4, 4, generator=g)
    if separable:
        features[:, :3] += 4 * torch.nn.functional.one_hot(cells, 3).permute(0, 3, 1, 2)
    return features, labels


@pytest.mark.parametrize("separable", [True, False])
def test_the_probe_learns_separable_features_and_not_noise(separable):
    train_x, train_y = _blocks(64, separable, seed=0)
    test_x, test_y = _blocks(32, separable, seed=1)
    head = fit_probe(train_x, train_y, num_classes=3, epochs=10, progress=False)
    with torch.no_grad():
        predicted = predict_map(head(test_x), (16, 16))
    miou = mean_iou(iou_per_class(confusion_matrix(predicted, test_y, 3)))
    assert miou > 0.9 if separable else miou < 0.3


def test_image_and_label_map_stay_aligned_through_resize_and_crop():
    class Wide(Squares):  # one 40 x 60 image whose right half is class 1 and bright
        def __init__(self):
            super().__init__(1)
            self.images = torch.zeros(1, 3, 40, 60, dtype=torch.uint8)
            self.maps = torch.zeros(1, 40, 60, dtype=torch.int64)
            self.images[..., 36:], self.maps[..., 36:] = 255, 1

    image, labels = FramedPairs(Wide(), size=20)[0]  # shorter side to 20 (20 x 30), centre crop 20 x 20
    assert image.shape == (3, 20, 20) and labels.shape == (20, 20) and labels.dtype == torch.uint8
    assert labels[0].tolist() == [0] * 13 + [1] * 7  # columns 5..24 of 30; the edge at 18 -> 18 - 5 = 13
    assert torch.equal(image[0] > 127, labels == 1)


def test_probe_on_pixels_and_a_random_backbone(squares, tmp_path):
    pixels = evaluate_segment("pixels", "squares", out=str(tmp_path / "pixels.json"), progress=False)
    assert pixels["miou"] > 0.95 and pixels["feature_grid"] == [32, 32] and pixels["feature_dim"] == 3
    assert pixels["tag"] == "synthetic" and pixels["background_counted"]
    # the class probe finds the squares; the object-vs-background probe is a second one, trained on the merged
    # labels, and one line of RGB cannot put red and blue on one side and the grey texture between them on the other
    assert pixels["foreground_iou"] > 0.95 and 0.3 < pixels["objectness_iou"] < 0.8
    assert list(pixels["iou"]) == ["background", "red", "blue"]
    assert json.loads((tmp_path / "pixels.json").read_text())["miou"] == pixels["miou"]
    random = evaluate_segment("random", "squares", out=str(tmp_path / "random.json"), progress=False, **TINY)
    assert random["feature_grid"] == [4, 4] and random["feature_dim"] == 64 and 0 < random["miou"] < 1
    assert random["encoder"] == "random-init resnet10t" and random["image_size"] == 32


def test_finetune_on_a_seeded_fraction_is_reproducible(squares, tmp_path):
    runs = [evaluate_segment("random", "squares", finetune=True, label_fraction=0.25, max_steps=4,
                             out=str(tmp_path / f"f{i}.json"), progress=False, **TINY) for i in range(2)]
    assert runs[0]["protocol"] == "segment-finetune-25pct" and runs[0]["n_labeled"] == 12 and runs[0]["steps"] == 4
    assert runs[0]["iou"] == runs[1]["iou"]
    assert image_subset(48, 0.25, seed=0) == image_subset(48, 0.25, seed=0) != image_subset(48, 0.25, seed=1)
    assert image_subset(48, 0.01, seed=0).__len__() == 2 and image_subset(48, 1.0, seed=0) == list(range(48))


def test_cli_probe_and_finetune_of_a_checkpoint_write_json(squares, checkpoint, tmp_path, capsys):
    for extra in ([], ["--random-init"], ["--finetune", "--label-fraction", "0.5", "--max-steps", "2"]):
        out = tmp_path / "r.json"
        code = main(["eval", "segment", "--checkpoint", checkpoint, "--data", "squares", "--image-size", "16",
                     "--out", str(out), "--no-progress", *extra])
        printed, err = capsys.readouterr()
        assert code == 0, err
        result = json.loads(out.read_text())
        assert result["tag"] == "synthetic" and result["random_init"] == ("--random-init" in extra)
        assert result["feature_dim"] == 64 and result["protocol"] == ("segment-finetune-50pct" if "--finetune" in extra
                                                                      else "segment")
        assert result["image_size"] == 16 and result["encoder"].startswith("simclr resnet10t")
        assert f"segment mIoU {result['miou']:.4f} (background counted as a class)" in printed
        assert "squares [synthetic labels] 48 train / 24 test" in printed


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "mfcc"], "segmentation needs per-location image features and 'mfcc' encodes audio"),
    (["--checkpoint", "tfidf"], "'tfidf' encodes text"),
    (["--checkpoint", "pixels", "--finetune"], "'pixels' has no weights to fine-tune"),
    (["--checkpoint", "random", "--label-fraction", "0.1"], "--label-fraction applies to --finetune"),
    (["--checkpoint", "random", "--finetune", "--epochs", "3"], "--epochs sizes the frozen probe"),
    (["--checkpoint", "random", "--finetune", "--label-fraction", "0"], "label_fraction must lie in (0, 1]"),
    (["--checkpoint", "random", "--test-fraction", "0.3"], "--test-fraction does not apply to segment"),
    (["--checkpoint", "pixels", "--backbone", "resnet10t"], "--backbone sizes the network of --checkpoint random"),
    (["--checkpoint", "boxes-only"], "squares has no semantic maps (only boxes)"),
])
def test_bad_input_ends_in_one_line(monkeypatch, tmp_path, capsys, args, message):
    sets = {"train": Squares(4, has=("boxes",)), "test": Squares(2, has=("boxes",))}
    if "boxes-only" in args:
        monkeypatch.setattr(segment, "open_dense", lambda spec, split: sets[split])
        args = ["--checkpoint", "pixels"]
    else:
        monkeypatch.setattr(segment, "open_dense", lambda spec, split: Squares(4, seed=len(split)))
    code = main(["eval", "segment", *args, "--data", "squares", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_data_that_is_not_dense_gets_open_dense_s_error(tmp_path, capsys):
    pytest.importorskip("selfsup.data.dense_folder", reason="the dense folder reader is not in this tree yet")
    (tmp_path / "plain").mkdir()
    code = main(["eval", "segment", "--checkpoint", "pixels", "--data", str(tmp_path / "plain"),
                 "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("selfsup: error:") and err.count("\n") == 1, err
