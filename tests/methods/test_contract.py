"""The method contract is all a new method needs: a method written in this one file is registered, trained from the
CLI, evaluated with `eval knn`, and exported, without touching any other module; and every registered method
declares what the callers rely on."""

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from selfsup.checkpoints import load_exported, load_method
from selfsup.cli import main
from selfsup.methods import METHODS, ImageMethod, ImageMethodConfig, Method, register
from selfsup.nn import ProjectionHead
from selfsup.views import SimCLRViews


@dataclass
class AlignConfig(ImageMethodConfig):
    backbone: str = "resnet10t"
    backbone_kwargs: dict = dataclasses.field(default_factory=lambda: {"channels": [8, 16, 32, 64], "stem_width": 8})
    optimizer: str = "adamw"
    lr: float = 1e-3
    proj_dim: int = 16


class Align(ImageMethod):
    """Pulls the projections of two views together, with a variance floor against collapse (a toy, for the test)."""

    name = "toy-align"
    paper = "none: a test of the method contract"
    config_class = AlignConfig

    def __init__(self, config: AlignConfig, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.head = ProjectionHead(self.backbone.num_features, 32, config.proj_dim, num_layers=2)

    def default_views(self, image_size: int, channels: int) -> SimCLRViews:
        return SimCLRViews(image_size, channels)

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        z1, z2 = (F.normalize(self.head(self.backbone(v)), dim=1) for v in views)  # (B, D) each
        spread = F.relu(0.5 - z1.std(0)).mean()
        return {"loss": (z1 - z2).pow(2).sum(1).mean() + spread}


@pytest.fixture
def toy_method():
    register(Align)
    yield Align.name
    METHODS.pop(Align.name)


def test_a_method_in_one_file_trains_evaluates_and_exports(toy_method, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", toy_method, "--data", "digits", "--max-steps", "2", "--batch-size", "32", "--out", str(run),
                 "--no-progress"]) == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", "digits", "--k", "5"]) == 0
    result = json.loads((run / "eval" / "knn-digits.json").read_text())
    assert result["encoder"] == "toy-align resnet10t" and result["k"] == 5 and 0.0 < result["top1"] <= 1.0
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "toy.safetensors")]) == 0
    method, _ = load_method(checkpoint)
    exported = load_exported(tmp_path / "toy.safetensors").eval()
    images = method.eval_batch([torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8) for _ in range(3)])
    assert torch.allclose(exported(images), method.embed(images), atol=1e-6)
    assert method.dense_features(images).shape[:2] == (3, 64)  # the last stage's map, (B, D, h, w)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_the_contract(name):
    cls = METHODS[name]
    assert issubclass(cls, Method) and cls.modality in ("image", "text", "audio", "video")
    assert cls.paper and dataclasses.is_dataclass(cls.config_class)
    config = cls.config_class()
    assert {"optimizer", "lr", "weight_decay", "warmup_fraction"} <= {f.name for f in dataclasses.fields(config)}
