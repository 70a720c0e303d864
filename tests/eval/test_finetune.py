import pytest
import torch
from timm.optim import Lars

from selfsup.checkpoints import export_encoder, read_checkpoint
from selfsup.data import open_labeled
from selfsup.errors import SelfsupError
from selfsup.eval import frozen_encoder
from selfsup.eval.finetune import (
    Classifier,
    CropFlip,
    finetune,
    finetune_optimizer,
    label_subset,
    load_classifier,
    pretrained_encoder,
)
from selfsup.train.run import train

TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}


def pretrain(method, out, **options):
    run = train(method, dict(data="digits", max_steps=2, batch_size=32, backbone="resnet10t", small_stem=True,
                             backbone_kwargs=TINY, proj_hidden_dim=24, proj_dim=16, num_workers=0, **options),
                out=str(out), progress=False)
    return str(run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def simclrv2_checkpoint(tmp_path_factory):
    return pretrain("simclrv2", tmp_path_factory.mktemp("simclrv2"))


def test_label_subset_is_class_balanced_seeded_and_sized():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)  # N 1000, K 3
    subset = label_subset(labels, 0.1, seed=0)
    assert torch.equal(torch.bincount(labels[subset]), torch.tensor([33, 33, 33]))  # round(0.1 * 1000 / 3)
    assert torch.equal(subset, subset.sort().values) and len(set(subset.tolist())) == 99
    assert torch.equal(subset, label_subset(labels, 0.1, seed=0))
    assert not torch.equal(subset, label_subset(labels, 0.1, seed=1))
    assert torch.equal(torch.bincount(labels[label_subset(labels, 0.01, seed=0)]), torch.tensor([3, 3, 3]))
    assert torch.equal(torch.bincount(labels[label_subset(labels, 0.0001, seed=0)]), torch.tensor([1, 1, 1]))
    # a class smaller than its share gives all it has
    assert torch.equal(torch.bincount(labels[label_subset(labels, 0.8, seed=0)]), torch.tensor([267, 267, 200]))
    assert torch.equal(label_subset(labels, 1.0, seed=3), torch.arange(1000))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(SelfsupError, match="label fraction"):
            label_subset(labels, bad, seed=0)


def test_label_subset_of_fashion_mnist_sizes_like_simclr_subsets():
    train_set, _ = open_labeled("digits")
    subset = label_subset(train_set.labels, 0.1, seed=0)
    assert torch.equal(torch.bincount(train_set.labels[subset]), torch.full((10,), 14))  # round(143.8 / 10)


def test_a_simclrv2_encoder_keeps_the_pretrained_first_head_layer(simclrv2_checkpoint):
    encoder, spec = pretrained_encoder(simclrv2_checkpoint, channels=1, native_size=8)
    assert spec["method"] == "simclrv2" and encoder.image_size == 8 and encoder.in_chans == 1
    saved = read_checkpoint(simclrv2_checkpoint)["state_dict"]
    backbone, linear, bn, _ = encoder.backbone  # the backbone, then the head's Linear + BN + ReLU
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, saved["method.backbone." + name])
    assert torch.equal(linear.weight, saved["method.projection_head.0.weight"])
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(bn, name), saved[f"method.projection_head.1.{name}"])
    assert saved["method.projection_head.1.running_mean"].abs().sum() > 0  # pretraining moved the statistics
    assert encoder.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 24)  # proj_hidden_dim


def test_other_methods_fine_tune_their_backbone(tmp_path):
    checkpoint = pretrain("simclr", tmp_path / "simclr")
    encoder, spec = pretrained_encoder(checkpoint, channels=1, native_size=8)
    saved = read_checkpoint(checkpoint)["state_dict"]
    assert spec["method"] == "simclr"
    assert all(torch.equal(t, saved["method.backbone." + k]) for k, t in encoder.backbone.state_dict().items())
    assert encoder.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 64)


def test_random_and_bad_encoders():
    encoder, spec = pretrained_encoder("random", channels=3, native_size=None, backbone="resnet10t",
                                       backbone_kwargs=TINY)
    assert spec == {"method": None, "method_config": {"backbone": "resnet10t", "small_stem": False,
                                                       "backbone_kwargs": TINY},
                    "data_meta": {"in_chans": 3, "image_size": 224}, "description": "random-init resnet10t"}
    assert encoder.image_size == 224 and encoder.in_chans == 3
    with pytest.raises(SelfsupError, match="'pixels' has no weights to fine-tune"):
        pretrained_encoder("pixels", channels=1, native_size=8)
    with pytest.raises(SelfsupError, match="does not exist"):
        pretrained_encoder("/no/such.ckpt", channels=1, native_size=8)


def test_crop_flip_both_paths_give_normalised_views_of_the_encoder_shape():
    views = CropFlip(16, channels=1)
    rgb = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    assert views(rgb).shape == (1, 16, 16) and views(rgb).dtype == torch.float32
    batch = views.batch(torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8))
    assert batch.shape == (5, 1, 16, 16) and -1.01 <= batch.min() and batch.max() <= 1.01
    grey = torch.full((4, 1, 16, 16), 255, dtype=torch.uint8)
    assert torch.allclose(CropFlip(16, channels=3).batch(grey)[:, 0], torch.tensor((1 - 0.485) / 0.229))


def test_lars_adapts_only_the_encoder_weight_matrices():
    encoder, _ = pretrained_encoder("random", channels=1, native_size=8, backbone="resnet10t", backbone_kwargs=TINY)
    model = Classifier(encoder, 64, 10)
    optimizer = finetune_optimizer(model, "lars", lr=0.1, weight_decay=0.0, momentum=0.9)
    adapted, plain = optimizer.param_groups
    assert isinstance(optimizer, Lars) and adapted["always_adapt"] and not plain["always_adapt"]
    assert all(p.ndim > 1 for p in adapted["params"]) and len(adapted["params"]) > 5
    assert any(p is model.fc.weight for p in plain["params"]) and any(p is model.fc.bias for p in plain["params"])
    assert len(adapted["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_quick_fine_tune_on_digits_beats_chance_and_saves_a_loadable_classifier(simclrv2_checkpoint, tmp_path):
    result = finetune(simclrv2_checkpoint, data="digits", label_fraction=1.0, max_steps=60, batch_size=32,
                      optimizer="adamw", lr=0.003, out=str(tmp_path / "ft"), progress=False)
    assert result["top1"] > 0.35  # chance 0.1
    assert result["n_labeled"] == 1438 and result["n_test"] == 359 and result["steps"] == 60
    assert (tmp_path / "ft" / "result.json").is_file() and (tmp_path / "ft" / "logs" / "csv").is_dir()
    model, meta = load_classifier(result["classifier"])
    assert meta["kind"] == "classifier" and meta["encoder"]["method"] == "simclrv2" and len(meta["classes"]) == 10
    _, test_set = open_labeled("digits")
    model.eval()
    with torch.no_grad():
        logits = model(model.encoder.batch([test_set[i][0] for i in range(len(test_set))]))
    assert abs(float((logits.argmax(1) == test_set.labels).float().mean()) - result["top1"]) < 1e-3
    # trained end to end: the encoder's pretrained weights moved too
    saved = read_checkpoint(simclrv2_checkpoint)["state_dict"]
    assert not torch.equal(model.encoder.backbone[1].weight, saved["method.projection_head.0.weight"])
    with pytest.raises(SelfsupError, match="is a fine-tuned classifier, not a pretraining checkpoint"):
        pretrained_encoder(result["classifier"], channels=1, native_size=8)
    with pytest.raises(SelfsupError, match="not a fine-tuned classifier"):
        load_classifier(simclrv2_checkpoint)
    with pytest.raises(SelfsupError, match="is a fine-tuned classifier, not a pretraining checkpoint"):
        frozen_encoder(result["classifier"], channels=1, native_size=8)  # eval knn / linear
    with pytest.raises(SelfsupError, match="is a fine-tuned classifier, not a pretraining checkpoint"):
        export_encoder(result["classifier"], tmp_path / "backbone.safetensors")
