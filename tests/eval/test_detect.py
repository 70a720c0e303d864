"""`selfsup eval detect`: the backbone adapter, the AP wiring, box alignment, fine-tuning and the bad-input lines, on
small in-memory dense sets (one bright square boxed on a noisy background)."""

import copy
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from selfsup.data.dense import DenseSet, DenseTarget
from selfsup.errors import SelfsupError
from selfsup.eval import detect
from selfsup.eval.detect import (
    RECIPE,
    Boxes,
    average_precision,
    build_detector,
    collate,
    detection_backbone,
    evaluate_detect,
    flip,
    fpn_backbone,
    train_detector,
)
from selfsup.nn import create_backbone

TINY = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [8, 16, 32, 64]}}


class Squares(DenseSet):
    """n noisy RGB images (3, size, size), each with one bright square (side 12-28 px) boxed, class 1 of 1."""

    def __init__(self, n, size=64, seed=0, has=("boxes", "labels")):
        super().__init__(name="squares", tag="synthetic", classes=["square"], channels=3, native_size=size, has=has)
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 100, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.boxes = []
        for i in range(n):
            side = int(torch.randint(12, 29, (1,), generator=g))
            y, x = torch.randint(0, size - side, (2,), generator=g).tolist()
            self.images[i, :, y:y + side, x:x + side] = 220
            self.boxes.append(torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], DenseTarget(boxes=self.boxes[i], labels=torch.ones(1, dtype=torch.int64))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: with conftest's two on a busy 2-core machine, the detectors' many small ops waited on
    each other and the end-to-end test took 449 s instead of 13 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def squares(monkeypatch):
    """--data squares: 40 train and 10 test images, through evaluate_detect's open_dense."""
    sets = {"train": Squares(40, seed=0), "test": Squares(10, seed=1)}
    monkeypatch.setattr(detect, "open_dense", lambda spec, split: sets[split])
    return sets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-step SimCLR run on digits (8x8 grey: a 1-channel encoder) with a tiny ResNet."""
    from selfsup.train.run import train

    run = train("simclr", dict(data="digits", max_steps=2, batch_size=32, num_workers=0, proj_hidden_dim=24,
                               proj_dim=16, **TINY), out=str(tmp_path_factory.mktemp("simclr")), progress=False)
    return str(run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("name, widths", [("resnet18", [64, 128, 256, 512]), ("torchvision:resnet18",
                                                                            [64, 128, 256, 512]),
                                           ("resnet10t", [8, 16, 32, 64])])
def test_the_fpn_gets_the_stage_widths_and_shares_the_encoders_weights(name, widths):
    backbone = create_backbone(name, **({"channels": widths} if name == "resnet10t" else {}))
    for detector, first in (("fcos", 1), ("retinanet", 1), ("fasterrcnn", 0)):
        body = fpn_backbone(backbone, 3, detector)
        assert [block[0].in_channels for block in body.fpn.inner_blocks] == widths[first:]
        maps = body(torch.zeros(1, 3, 64, 64))
        assert len(maps) == 5 and all(m.shape[1] == body.out_channels for m in maps.values())
    assert {id(p) for p in body.body.parameters()} <= {id(p) for p in backbone.parameters()}


@pytest.mark.parametrize("detector", ["fcos", "retinanet", "fasterrcnn"])
def test_every_detector_trains_on_native_64px_images_and_predicts_boxes(detector):
    torch.manual_seed(0)
    model = build_detector(detector, create_backbone("resnet10t", channels=[8, 16, 32, 64]), 3, 2, 64)
    images, targets = collate([Boxes(Squares(2), 3)[i] for i in range(2)])
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert model.transform(images)[0].tensors.shape[-2:] == (64, 64)  # nothing rescaled
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4


class _Oracle(nn.Module):
    """Returns the given predictions in order, whatever the images."""

    def __init__(self, predictions):
        super().__init__()
        self.predictions = list(predictions)

    def forward(self, images):
        return [self.predictions.pop(0) for _ in images]


def _ap(squares, shift):
    """AP of predictions that are the test boxes moved right by `shift` px, score 0.9."""
    test = Boxes(squares, 3)
    predictions = [{"boxes": t["boxes"] + torch.tensor([shift, 0, shift, 0]), "scores": torch.tensor([0.9]),
                    "labels": t["labels"]} for _, t in test]
    return average_precision(_Oracle(predictions), DataLoader(test, batch_size=4, collate_fn=collate))


def test_ap_is_one_for_perfect_boxes_zero_for_wrong_ones_and_ap50_only_for_loose_ones():
    squares = Squares(10, seed=3)
    assert _ap(squares, 0) == {"ap50": 1.0, "ap": 1.0}
    assert _ap(squares, 64) == {"ap50": 0.0, "ap": 0.0}  # no overlap
    loose = _ap(squares, 3)  # IoU 0.64-0.82 for 12-28 px squares
    assert loose["ap50"] == 1.0 and 0.1 < loose["ap"] < 0.9


def test_flip_mirrors_the_boxes_with_the_image():
    image, target = Boxes(Squares(1, seed=5), 3)[0]
    images, targets = flip([image] * 8, [target] * 8, torch.Generator().manual_seed(0))
    assert any(not torch.equal(x, image) for x in images) and any(torch.equal(x, image) for x in images)
    for x, t in zip(images, targets):
        x0, y0, x1, y1 = t["boxes"][0].int().tolist()
        assert (x[:, y0:y1, x0:x1] > 0.8).all() and (x > 0.8).sum() == 3 * (x1 - x0) * (y1 - y0)


def test_a_grey_encoder_sees_rgb_data_as_its_channel_mean_with_boxes_unchanged():
    squares = Squares(1)
    image, target = Boxes(squares, 1)[0]
    assert image.shape == (1, 64, 64)
    torch.testing.assert_close(image[0], squares.images[0].float().mean(0).round() / 255)
    torch.testing.assert_close(target["boxes"], squares.boxes[0])


def test_training_is_seeded():
    def trained():
        torch.manual_seed(0)
        model = build_detector("fcos", create_backbone("resnet10t", channels=[8, 16, 32, 64]), 3, 1, 64)
        loader = DataLoader(Boxes(Squares(8), 3), batch_size=4, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(0))
        train_detector(model, loader, 3, RECIPE, seed=0, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.testing.assert_close(trained(), trained(), rtol=0, atol=0)


def test_a_frozen_backbone_keeps_its_weights_and_statistics_while_the_heads_train():
    torch.manual_seed(0)
    backbone = create_backbone("resnet10t", channels=[8, 16, 32, 64])
    model = build_detector("fcos", backbone, 3, 1, 64)
    before, head = copy.deepcopy(backbone.state_dict()), copy.deepcopy(model.head.state_dict())
    loader = DataLoader(Boxes(Squares(8), 3), batch_size=4, collate_fn=collate)
    train_detector(model, loader, 2, RECIPE, seed=0, freeze_backbone=True, progress=False)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())
    assert not all(torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())


def test_random_init_gives_the_checkpoints_network_with_fresh_weights(checkpoint):
    trained, in_chans, description = detection_backbone(checkpoint, False, 3, {})
    twin, _, twin_description = detection_backbone(checkpoint, True, 3, {})
    assert (in_chans, description, twin_description) == (1, "simclr resnet10t", "simclr resnet10t at random init")
    assert [p.shape for p in twin.parameters()] == [p.shape for p in trained.parameters()]
    assert not torch.equal(next(twin.parameters()), next(trained.parameters()))
    assert all(p.requires_grad for p in trained.parameters())


@pytest.mark.slow
def test_fine_tuning_a_checkpoint_detects_the_squares(squares, checkpoint, tmp_path):
    untrained = evaluate_detect(checkpoint, "squares", max_steps=0, out=str(tmp_path / "untrained.json"),
                                progress=False)
    result = evaluate_detect(checkpoint, "squares", epochs=8, out=str(tmp_path / "r.json"), progress=False)
    print(untrained["summary"], "|", result["summary"], f"| {result['seconds']}s")
    assert untrained["ap50"] < 0.1 and result["ap50"] > 0.6 and result["ap"] > untrained["ap"]
    assert (result["in_chans"], result["data_channels"], result["image_size"]) == (1, 3, 64)
    assert (result["n_test"], result["test_boxes"], result["steps"], result["tag"]) == (10, 10, 80, "synthetic")
    assert result["summary"].startswith("detect squares (synthetic): fcos on simclr resnet10t — AP50 ")
    assert json.loads((tmp_path / "r.json").read_text())["ap50"] == result["ap50"]


def _fake_checkpoint(path, modality):
    torch.save({"selfsup": {"method": "bert", "modality": modality, "method_config": {}}}, path)
    return str(path)


@pytest.mark.parametrize("call, message", [
    (lambda tmp: evaluate_detect(_fake_checkpoint(tmp / "t.ckpt", "text")),
     "detection fine-tunes an image backbone and '{tmp}/t.ckpt' encodes text; pass a checkpoint of an image method"),
    (lambda tmp: evaluate_detect("mfcc"), "'mfcc' encodes audio; pass a checkpoint of an image method"),
    (lambda tmp: evaluate_detect("pixels"), "'pixels' has no weights to fine-tune; pass a .ckpt file or 'random'"),
    (lambda tmp: evaluate_detect("random", backbone="timm:vit_tiny_patch16_224",
                                 backbone_kwargs={"img_size": 64, "depth": 1}),
     "eval detect supports ResNet-style CNN backbones with 4 stages"),
    (lambda tmp: evaluate_detect("random", detector="yolo"), "unknown detector 'yolo'; pass one of fcos, retinanet"),
    (lambda tmp: evaluate_detect("random", epochs=1, max_steps=5), "--epochs and --max-steps both set the training "
                                                                   "length; pass one of them"),
    (lambda tmp: evaluate_detect("random", "masks-only"), "squares has no boxes (only semantic); detection needs "
                                                          "boxes: pass trees, paste-scenes-multi or a folder"),
])
def test_bad_inputs_are_one_line(call, message, tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "open_dense", lambda spec, split: Squares(2, has=("semantic",) if spec == "masks-only"
                                                                           else ("boxes", "labels")))
    with pytest.raises(SelfsupError) as error:
        call(tmp_path)
    assert message.format(tmp=tmp_path) in str(error.value) and "\n" not in str(error.value)
