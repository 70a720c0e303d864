"""torchvision's video ResNets (R3D-18, R(2+1)D-18; Tran et al., CVPR 2018) without weights, sized down by option.

torchvision's VideoResNet fixes the widths at 64-128-256-512; `VideoResNet` here is that class with every width
scaled by width / 64 (torchvision's own blocks, convolutions and forward; only the stem is rebuilt at the new
width, as torchvision writes it), so width=64 with layers (2, 2, 2, 2) is exactly torchvision's r3d_18 /
r2plus1d_18 without its classifier (tests/nn/test_video.py checks the parameter count).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torchvision.models.video import resnet

from selfsup.errors import SelfsupError

ARCHS = ("r3d_18", "r2plus1d_18")


def _stem(arch: str, width: int) -> nn.Sequential:
    """torchvision's BasicStem (r3d) or R2Plus1dStem (r(2+1)d) with `width` output channels (theirs: 64)."""
    if arch == "r3d_18":
        return nn.Sequential(nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3),
                                       bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True))
    mid = 45 * width // 64
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class VideoResNet(resnet.VideoResNet):
    """A clip (B, 3, T, H, W) -> (B, D) pooled features, D = num_features = 8 * width.

    arch: 'r3d_18' (3x3x3 convolutions) or 'r2plus1d_18' (2-D spatial then 1-D temporal); width: channels of the
    stem and first stage (64 in torchvision; each later stage doubles it); layers: BasicBlocks per stage. The last
    stage's map is (B, D, T/8, H/16, W/16) (T/8 rounded up: stages 2-4 stride 2 in time, the stem does not).
    """

    def __init__(self, arch: str = "r3d_18", width: int = 64, layers: Sequence[int] = (2, 2, 2, 2)):
        if arch not in ARCHS:
            raise SelfsupError(f"unknown video backbone '{arch}'; pass one of {', '.join(ARCHS)}")
        if width < 4 or width % 4:
            raise SelfsupError(f"video backbone width {width} must be a multiple of 4, at least 4; pass e.g. 16 or 64")
        if len(layers) != 4 or min(layers) < 1:
            raise SelfsupError(f"video backbone layers {list(layers)} must be 4 block counts >= 1, e.g. [2, 2, 2, 2]")
        conv = resnet.Conv3DSimple if arch == "r3d_18" else resnet.Conv2Plus1D
        object.__setattr__(self, "_width", width)  # read by _make_layer during torchvision's __init__
        super().__init__(resnet.BasicBlock, [conv] * 4, list(layers), stem=lambda: _stem(arch, width), num_classes=1)
        self.fc = nn.Identity()
        self.num_features = 8 * width
        self.arch, self.width, self.layers = arch, width, list(layers)

    def _make_layer(self, block, conv_builder, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        planes = planes * self._width // 64
        if planes == self._width:  # the first stage: its input is the stem's `width` channels, not torchvision's 64
            self.inplanes = self._width
        return super()._make_layer(block, conv_builder, planes, blocks, stride)

    def feature_map(self, clips: torch.Tensor, stage: int = 4) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, D_s, T_s, H_s, W_s), the map after stage `stage` (1-4; 4: the last, before
        pooling; each stage before the last is twice as fine in space)."""
        x = self.stem(clips)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:stage]:
            x = layer(x)
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, D) the map averaged over time and space."""
        return self.feature_map(clips).mean(dim=(2, 3, 4))


SIDECAR_LIBRARY = "selfsup.nn.video"  # the exported sidecar's "library": what load_exported rebuilds with


def write_video_sidecar(encoder: VideoResNet, weights: Path, facts: dict[str, Any]) -> Path:
    """Beside an exported VideoResNet's `weights` (FILE.safetensors), FILE.json: how to rebuild it (library
    SIDECAR_LIBRARY, its constructor's kwargs), D, and `facts` (the method, the input clip shape, mean/std ...).
    Returns the sidecar's path."""
    sidecar = {
        "library": SIDECAR_LIBRARY, "architecture": "VideoResNet",
        "kwargs": {"arch": encoder.arch, "width": encoder.width, "layers": encoder.layers},
        "num_features": int(encoder.num_features), **facts,
        "how_to_load": "selfsup.checkpoints.load_exported(PATH), or selfsup.nn.video.VideoResNet(**kwargs) then "
                       "load_state_dict(safetensors.torch.load_file(PATH)); it maps float clips (B, 3, T, H, W), "
                       "frames scaled to [0, 1] and normalised per channel with mean/std, to features (B, D)",
    }
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(sidecar, indent=2))
    return path


def load_video_backbone(weights: Path, sidecar: dict[str, Any]) -> VideoResNet:
    """The VideoResNet of `write_video_sidecar`'s sidecar, with the weights of the file `weights`."""
    model = VideoResNet(**sidecar["kwargs"])
    model.load_state_dict(safetensors.torch.load_file(str(weights)))
    return model
