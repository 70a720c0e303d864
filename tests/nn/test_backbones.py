import pytest
import torch
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet10t", "torchvision:resnet18"])
def test_pooled_features_for_one_channel_input(name):
    model = create_backbone(name, in_chans=1)
    features = model(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, model.num_features) == (2, 512)


def test_small_stem_keeps_resolution_through_the_stem():
    for name in ("resnet18", "torchvision:resnet18", "resnet10t"):
        model = create_backbone(name, in_chans=3, small_stem=True)
        assert isinstance(model.maxpool, nn.Identity)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.stride == (1, 1)
        stem = model.conv1 if isinstance(model.conv1, nn.Conv2d) else model.conv1[0]
        assert stem(torch.randn(1, 3, 32, 32)).shape[-1] == 32
    regular = create_backbone("resnet18", in_chans=3)
    assert regular.conv1(torch.randn(1, 3, 32, 32)).shape[-1] == 16


def test_unknown_names_suggest_close_ones():
    with pytest.raises(SelfsupError, match="did you mean.*resnet18"):
        create_backbone("resnet181")
    with pytest.raises(SelfsupError, match="unknown torchvision backbone"):
        create_backbone("torchvision:resnot18")
    with pytest.raises(SelfsupError, match="library"):
        create_backbone("keras:resnet18")


def test_constructor_options_pass_through():
    narrow = create_backbone("resnet18", in_chans=1, channels=(16, 32, 64, 128))
    assert narrow.num_features == 128 and narrow(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    vit = create_backbone("vit_tiny_patch16_224", in_chans=1, img_size=28, patch_size=4)
    assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 192)
    with pytest.raises(SelfsupError, match="does not accept these options"):
        create_backbone("resnet18", bogus=1)


def test_small_stem_refused_for_non_resnets():
    with pytest.raises(SelfsupError, match="ResNet-style"):
        create_backbone("vit_tiny_patch16_224", small_stem=True)


def test_residual_blocks_do_not_start_as_identity():
    # timm zeroes each block's last BN by default, which collapses random-init features
    # (kNN near chance on Fashion-MNIST); ours start like torchvision's.
    for name in ("resnet18", "resnet10t", "resnet50"):
        model = create_backbone(name, in_chans=1)
        last_bns = [block.bn3 if hasattr(block, "bn3") else block.bn2 for block in model.layer1]
        assert all(bool((bn.weight == 1).all()) for bn in last_bns), name
    assert create_backbone("vit_tiny_patch16_224", in_chans=3).num_features == 192  # no zero_init_last option


def test_feature_map_gives_a_swins_channels_last_tokens_as_channels_first():
    from selfsup.nn import feature_map

    swin = create_backbone("swin_tiny_patch4_window7_224", in_chans=1, img_size=28, patch_size=2, window_size=7,
                           embed_dim=16, depths=[1, 1], num_heads=[1, 2]).eval()
    x = torch.randn(2, 1, 28, 28)
    f = feature_map(swin, x)
    assert f.shape == (2, 32, 7, 7)
    torch.testing.assert_close(f.permute(0, 2, 3, 1), swin.forward_features(x))


@pytest.mark.parametrize("method, says", [("rs-multitask", "4 stages of a convnet.*--backbone resnet18"),
                                          ("sadlcd", "4 stages of a convnet.*--backbone resnet18"),
                                          ("detco", "4 stages of a convnet.*--backbone resnet18"),
                                          ("glcnet", "does not accept these options.*output_stride"),
                                          ("spark", "use mae or simmim for vision transformers")])
def test_methods_that_read_convnet_stages_refuse_a_vit_in_one_line(method, says):
    from selfsup.methods import create

    vit = {"backbone": "timm:vit_tiny_patch16_224", "backbone_kwargs": {"img_size": 32, "patch_size": 8, "depth": 1}}
    with pytest.raises(SelfsupError, match=says):  # was an AssertionError traceback from timm's patch embedding
        create(method, **vit)


def test_a_fixed_size_vit_refuses_another_input_side_in_one_line():
    from selfsup.nn.backbones import check_vit_input_side

    vit = create_backbone("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    check_vit_input_side(vit, 32)  # its own side
    with pytest.raises(SelfsupError, match="built for 32x32 px inputs and this run's images are 16 px.*img_size: 16"):
        check_vit_input_side(nn.Sequential(vit), 16)  # found inside a method too; was timm's AssertionError mid-run
    dynamic = create_backbone("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, dynamic_img_size=True)
    check_vit_input_side(dynamic, 16)  # takes any side
