"""Backbones by name from timm or torchvision, returning pooled features (B, D).

`resnet18` or `timm:resnet18` builds timm's model; `torchvision:resnet18` builds torchvision's.
Nothing is downloaded: weights always start at random.
"""

import difflib
from typing import Any

import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from selfsup.errors import SelfsupError


def create_backbone(name: str, in_chans: int = 3, small_stem: bool = False, **kwargs: Any) -> nn.Module:
    """A feature extractor (B, in_chans, H, W) -> (B, num_features); `.num_features` tells D.

    small_stem: replace a ResNet's stem by a 3x3 stride-1 conv without max-pool, the usual
    CIFAR variant for 28-64 px images (16x the compute of the ImageNet stem at the same size).
    kwargs go to the library's constructor, e.g. channels=(32, 64, 128, 256) for a half-width
    timm ResNet, or img_size=28, patch_size=4 for a timm ViT on small images.
    """
    library, _, arch = name.rpartition(":")
    if library in ("", "timm"):
        model = _timm(arch, in_chans, kwargs)
    elif library == "torchvision":
        model = _torchvision(arch, in_chans, kwargs)
    else:
        raise SelfsupError(f"unknown backbone library '{library}' in '{name}'; use timm:NAME or torchvision:NAME")
    if small_stem:
        _make_small_stem(model, name)
    return model


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, D, h, w) before pooling: a CNN's or a Swin's last-stage map, or a ViT's patch tokens
    (prefix tokens such as [CLS] dropped) laid out as their square grid."""
    if hasattr(backbone, "forward_features"):  # every timm model
        features = backbone.forward_features(images)
    else:  # a torchvision ResNet: every child up to the pooling
        features = nn.Sequential(*[m for n, m in backbone.named_children() if n not in ("avgpool", "fc")])(images)
    if features.ndim == 4:  # timm's Swin and other hierarchical ViTs give (B, h, w, D)
        return features.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else features
    tokens = features[:, getattr(backbone, "num_prefix_tokens", 0):]  # (B, h*w, D)
    side = int(tokens.shape[1] ** 0.5)
    return tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)


def _timm(arch: str, in_chans: int, kwargs: dict) -> nn.Module:
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SelfsupError(f"unknown backbone '{arch}'{hint}; pass a timm model name such as resnet18, "
                           "or torchvision:NAME")
    try:
        # timm ResNets zero the last BN of every block by default (a large-batch supervised trick);
        # at random init their features then collapse (mean cosine ~0.99 on Fashion-MNIST, kNN
        # near chance), so the random-init baseline would be meaningless. torchvision, lightly
        # and solo-learn start without it; so do we.
        return _construct(timm.create_model, arch, pretrained=False, num_classes=0, in_chans=in_chans,
                          **{"zero_init_last": False, **kwargs})
    except SelfsupError:  # architectures without that option
        return _construct(timm.create_model, arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)


def _construct(factory, arch: str, **kwargs: Any) -> nn.Module:
    try:
        return factory(arch, **kwargs)
    except TypeError as e:
        raise SelfsupError(f"backbone {arch} does not accept these options: {e}; check backbone_kwargs") from None


def _torchvision(arch: str, in_chans: int, kwargs: dict) -> nn.Module:
    try:
        model = _construct(torchvision.models.get_model, arch, weights=None, **kwargs)
    except ValueError:
        close = difflib.get_close_matches(arch, torchvision.models.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SelfsupError(f"unknown torchvision backbone '{arch}'{hint}") from None
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise SelfsupError(f"torchvision:{arch} is not supported (only models with a final `fc` layer, "
                           "such as ResNets); use its timm version instead")
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    if in_chans != 3:
        model.conv1 = _conv_like(model.conv1, in_channels=in_chans)
    return model


def _conv_like(conv: nn.Conv2d, **changes) -> nn.Conv2d:
    args = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, bias=conv.bias is not None)
    args.update(changes)
    return nn.Conv2d(**args)


def _make_small_stem(model: nn.Module, name: str) -> None:
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        raise SelfsupError(f"small_stem is only available for ResNet-style backbones, not '{name}'")
    if isinstance(model.conv1, nn.Conv2d):
        model.conv1 = _conv_like(model.conv1, kernel_size=3, stride=1, padding=1)
    else:  # timm's deep stems (resnet*d, resnet*t): a Sequential whose first conv strides
        first = next(m for m in model.conv1.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)
    model.maxpool = nn.Identity()


def stage_features(backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, H, W) -> the maps after each of the last 4 stages [(B, C_s, h_s, w_s)] (a ResNet's res2-res5): timm's
    `forward_intermediates`, or torchvision's IntermediateLayerGetter for a torchvision ResNet. SelfsupError for a
    plain ViT, whose blocks all keep one resolution."""
    if isinstance(backbone, VisionTransformer):
        raise SelfsupError("this method reads the 4 stages of a convnet, each at half the resolution of the last (a "
                           "ResNet), and a ViT keeps one resolution in every block; pass e.g. --backbone resnet18")
    if hasattr(backbone, "forward_intermediates"):  # every timm model
        return backbone.forward_intermediates(x, indices=4, intermediates_only=True)
    stages = {f"layer{i}": str(i) for i in range(1, 5)}
    if not stages.keys() <= {name for name, _ in backbone.named_children()}:
        raise SelfsupError(f"this method needs a backbone with 4 stages (a ResNet), not {type(backbone).__name__}")
    layers = IntermediateLayerGetter(backbone, stages)  # a view of the backbone's own modules, cheap to make
    return list(layers(x).values())


def check_vit_input_side(model: nn.Module, side: int) -> None:
    """SelfsupError, one line, when a timm ViT inside `model` is built for inputs of another side than `side` px and
    cannot take others (strict image size, no dynamic_img_size): its patch embedding would fail at the first step."""
    for vit in (m for m in model.modules() if isinstance(m, VisionTransformer)):
        embed = vit.patch_embed
        built = tuple(embed.img_size) if embed.img_size is not None else None
        if built and built != (side, side) and embed.strict_img_size and not getattr(vit, "dynamic_img_size", False):
            raise SelfsupError(f"the ViT is built for {built[0]}x{built[1]} px inputs and this run's images are "
                               f"{side} px; pass --set 'backbone_kwargs={{img_size: {side}}}' (with the other "
                               f"backbone_kwargs you need), or --image-size {built[0]}")
