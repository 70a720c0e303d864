"""Precision, memory layout, compilation and fused optimisers: the switches and their per-device defaults."""

import pytest
import torch

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import _parser, main
from selfsup.errors import SelfsupError
from selfsup.train.config import TrainConfig, check_choices
from selfsup.train.module import _channels_last
from selfsup.train.optim import create_optimizer
from selfsup.train.run import _channels_last as channels_last_default
from selfsup.train.run import resolved_precision
from tests.test_cli import TINY


@pytest.mark.parametrize("cuda, bf16, accelerator, expected", [
    (False, False, "auto", "32-true"),
    (True, True, "auto", "bf16-mixed"),
    (True, False, "auto", "16-mixed"),  # V100, T4: fp16 with loss scaling
    (True, True, "cpu", "32-true"),
])
def test_auto_precision_per_device(monkeypatch, cuda, bf16, accelerator, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    config = TrainConfig(accelerator=accelerator)
    assert resolved_precision(config) == expected
    assert channels_last_default(config) == (expected != "32-true")
    assert resolved_precision(TrainConfig(accelerator=accelerator, precision="16-mixed")) == "16-mixed"
    assert channels_last_default(TrainConfig(accelerator=accelerator, channels_last=False)) is False


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("accelerator", "tpu")])
def test_unknown_precision_or_accelerator_is_refused(key, value):
    with pytest.raises(SelfsupError, match=f"option {key} must be"):
        check_choices(TrainConfig(**{key: value}))


def test_switches_from_the_command_line():
    args = _parser().parse_args(["train", "simclr", "--sync-batchnorm", "--no-channels-last", "--compile",
                                 "--precision", "bf16-mixed", "--accelerator", "cpu"])
    assert (args.sync_batchnorm, args.channels_last, args.compile) == (True, False, True)
    assert (args.precision, args.accelerator) == ("bf16-mixed", "cpu")
    unset = _parser().parse_args(["train", "simclr"])
    assert unset.sync_batchnorm is unset.channels_last is unset.compile is None  # the config's defaults apply


def test_channels_last_reaches_every_image_batch_of_nested_views():
    images, masks = torch.rand(2, 3, 8, 8), torch.ones(2, 4, dtype=torch.bool)
    converted = _channels_last([images, (images, masks)])
    assert converted[0].is_contiguous(memory_format=torch.channels_last)
    assert converted[1][0].is_contiguous(memory_format=torch.channels_last)
    assert converted[1][1] is masks and isinstance(converted[1], tuple)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_optimisers(name):
    model = torch.nn.Linear(4, 2)
    assert create_optimizer(model, name, 0.1, 1e-4, 0.9, fused=True).defaults["fused"] is True
    assert not create_optimizer(model, name, 0.1, 1e-4, 0.9).defaults["fused"]


def test_compile_compiles_the_backbone_in_place(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "1", "--out", str(tmp_path), *TINY,
                 "--compile"]) == 0
    assert compiled == ["ResNet"]


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    # 32 px, not digits' own 8: with 2 threads, torch's CPU bf16 channels-last convolution backward gave non-finite
    # weight gradients where a stride-2 convolution meets a 2x2 input (layer3/4 of the ResNet at 8 px)
    assert main(["train", "byol", "--data", "digits", "--max-steps", "2", "--out", str(tmp_path), *TINY,
                 "--image-size", "32", "--precision", "bf16-mixed", "--channels-last"]) == 0
    weights = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
