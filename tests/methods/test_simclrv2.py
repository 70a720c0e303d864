import pytest
import torch
from torch import nn

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.ntxent import NTXentLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.train.run import train
from selfsup.views import SimCLRViews
from tests.learning import knn_before_and_after
from tests.test_cli import write_images

TINY = dict(backbone="resnet10t", backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8},
            proj_hidden_dim=32, proj_dim=16)


def test_registry_lists_simclrv2_with_paper_defaults():
    assert "simclrv2" in METHODS and "NeurIPS 2020" in METHODS["simclrv2"].paper
    config = make_config("simclrv2")
    assert (config.temperature, config.optimizer, config.lr, config.weight_decay) == (0.1, "lars", 0.4, 1e-4)
    assert (config.warmup_fraction, config.proj_layers, config.proj_dim, config.finetune_layers) == (0.05, 3, 128, 1)
    assert config.proj_hidden_dim is None  # the backbone's width
    assert "memory" in METHODS["simclrv2"].deviations


def test_head_is_three_layers_with_bn_everywhere_and_backbone_width():
    method = create("simclrv2", in_chans=1, backbone="resnet10t")
    width = method.backbone.num_features
    kinds = [type(m) for m in method.projection_head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    linears = [m for m in method.projection_head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(width, width), (width, width), (width, 128)]
    assert all(m.bias is None for m in linears)  # every linear layer is followed by BN
    assert method.projection_head(method.backbone(torch.randn(4, 1, 16, 16))).shape == (4, 128)
    narrow = create("simclrv2", in_chans=1, backbone="resnet10t", proj_hidden_dim=64, proj_layers=2)
    assert [m.out_features for m in narrow.projection_head if isinstance(m, nn.Linear)] == [64, 128]
    assert isinstance(method.default_views(28, 1), SimCLRViews)


def test_training_step_is_ntxent_of_the_projections_and_trains_backbone_and_head():
    torch.manual_seed(0)
    method = create("simclrv2", in_chans=1, **TINY)
    x1, x2 = torch.randn(6, 1, 16, 16), torch.randn(6, 1, 16, 16)
    loss = method.training_step([x1, x2])["loss"]
    head, f = method.projection_head, method.backbone
    torch.testing.assert_close(loss, NTXentLoss(0.1)(head(f(x1)), head(f(x2))))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())


def test_finetune_encoder_is_the_backbone_and_the_first_head_layer_shared_not_copied():
    torch.manual_seed(0)
    method = create("simclrv2", in_chans=1, **TINY).eval()
    encoder = method.finetune_encoder()
    assert encoder[0] is method.backbone
    assert all(encoder[i + 1] is method.projection_head[i] for i in range(3))
    assert len(encoder) == 4  # backbone, Linear, BN, ReLU
    x = torch.randn(3, 1, 16, 16)
    head = method.projection_head
    torch.testing.assert_close(encoder(x), torch.relu(head[1](head[0](method.backbone(x)))))
    assert encoder(x).shape == (3, 32)
    assert len(create("simclrv2", in_chans=1, finetune_layers=0, **TINY).finetune_encoder()) == 1
    assert len(create("simclrv2", in_chans=1, finetune_layers=2, **TINY).finetune_encoder()) == 7
    with pytest.raises(SelfsupError, match="finetune_layers"):
        create("simclrv2", in_chans=1, finetune_layers=4, **TINY)


CLI_TINY = ["--backbone", "resnet10t", "--batch-size", "16", "--num-workers", "0", "--no-progress",
            "--set", "proj_hidden_dim=16", "--set", "proj_dim=8", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}"]


def test_trains_from_the_cli_on_digits_and_resumes_with_its_head(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "simclrv2", "--data", "digits", "--max-steps", "2", "--out", str(out), *CLI_TINY,
                 "--set", "finetune_layers=2"]) == 0
    first = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 2 and first["selfsup"]["method"] == "simclrv2"
    assert first["state_dict"]["method.projection_head.6.weight"].shape == (8, 16)
    assert main(["train", "simclrv2", "--max-steps", "4", "--out", str(out), "--resume", "--no-progress"]) == 0
    second = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert second["global_step"] == 4 and second["selfsup"]["method_config"]["finetune_layers"] == 2
    assert second["state_dict"].keys() == first["state_dict"].keys()  # the saved head shape was rebuilt
    key = "method.projection_head.4.weight"  # LARS moves the other weights by ~1e-6 in two steps
    assert not torch.equal(first["state_dict"][key], second["state_dict"][key])


def test_trains_on_an_image_folder(tmp_path):
    write_images(tmp_path / "images", 20)
    run_dir = train("simclrv2", dict(data=str(tmp_path / "images"), image_size=16, max_steps=2, batch_size=8,
                                     num_workers=0, **TINY), out=str(tmp_path / "run"), progress=False)
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["selfsup"]["in_chans"] == 3


@pytest.mark.slow
def test_simclrv2_beats_random_init_on_fashion_mnist(tmp_path):
    random_init, pretrained = knn_before_and_after("simclrv2", tmp_path, temperature=0.2, crop_min_scale=0.4,
                                                   jitter_strength=0.5, proj_hidden_dim=256)
    assert pretrained > random_init + 0.02
