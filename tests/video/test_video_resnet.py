import pytest
import torch
import torchvision

from selfsup.errors import SelfsupError
from selfsup.nn.video import VideoResNet


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18"])
def test_full_width_is_torchvisions_network_without_its_classifier(arch):
    ours = VideoResNet(arch)
    theirs = torchvision.models.get_model(arch, weights=None)
    assert n_params(ours) == n_params(theirs) - n_params(theirs.fc)  # 33,166,272 and 31,300,125
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    theirs_shapes = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    assert ours_shapes == theirs_shapes  # the same modules under the same names: their checkpoints would load


def test_width_and_layers_size_it_down():
    model = VideoResNet("r3d_18", width=8, layers=[1, 1, 1, 1]).eval()
    assert model.num_features == 64
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs[0].out_channels == 8 and convs[-1].out_channels == 64
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        maps = model.feature_map(x)
        assert maps.shape == (2, 64, 1, 2, 2)  # T/8, H/16, W/16
        torch.testing.assert_close(model(x), maps.mean(dim=(2, 3, 4)))
    r21d = VideoResNet("r2plus1d_18", width=8, layers=[1, 1, 1, 1])
    assert r21d(torch.randn(2, 3, 4, 16, 16)).shape == (2, 64)


def test_bad_options_are_refused():
    with pytest.raises(SelfsupError, match="pass one of r3d_18, r2plus1d_18"):
        VideoResNet("r3d_50")
    with pytest.raises(SelfsupError, match="multiple of 4"):
        VideoResNet(width=6)
    with pytest.raises(SelfsupError, match="4 block counts"):
        VideoResNet(layers=[2, 2, 2])
