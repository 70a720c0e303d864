import torch
from torch import nn

from selfsup.nn import ProjectionHead


def test_two_layer_head_shape_and_layout():
    head = ProjectionHead(512, 64, 16)
    assert head(torch.randn(4, 512)).shape == (4, 16)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].bias is None and head[3].bias is not None  # BN follows the first layer


def test_three_layers_with_last_bn_without_affine():
    head = ProjectionHead(8, 16, 4, num_layers=3, last_bn=True, last_bn_affine=False)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 16), (16, 4)]
    assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
