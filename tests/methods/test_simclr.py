import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.losses import NTXentLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.views import SimCLRViews


def test_registry_lists_simclr_with_paper_defaults():
    assert "simclr" in METHODS
    config = make_config("simclr")
    assert (config.temperature, config.optimizer, config.lr, config.weight_decay) == (0.5, "lars", 0.3, 1e-6)
    assert (config.proj_dim, config.crop_min_scale, config.jitter_strength) == (128, 0.08, 1.0)


def test_overrides_and_unknown_options():
    method = create("simclr", in_chans=1, backbone="resnet10t", temperature=0.2, proj_hidden_dim=64)
    assert method.criterion.temperature == 0.2 and method.projection_head[0].out_features == 64
    assert isinstance(method.default_views(28, 1), SimCLRViews)
    with pytest.raises(SelfsupError, match="no option tempreature"):
        create("simclr", tempreature=0.2)
    with pytest.raises(SelfsupError, match="unknown method 'simclrr'.*did you mean simclr"):
        create("simclrr")


def test_training_step_is_ntxent_of_the_projected_views_and_trains_the_backbone():
    torch.manual_seed(0)
    method = create("simclr", in_chans=1, backbone="resnet10t", proj_hidden_dim=32, proj_dim=8)
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    loss = method.training_step([x1, x2])["loss"]
    expected = NTXentLoss(0.5)(method.projection_head(method.backbone(x1)),
                               method.projection_head(method.backbone(x2)))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert method.embed(x1).shape == (4, method.backbone.num_features)
