"""Projection and prediction heads: MLPs on top of the backbone's features."""

from collections.abc import Callable
from functools import partial

from torch import nn


class ProjectionHead(nn.Sequential):
    """MLP (B, in_dim) -> (B, out_dim): `num_layers` linear layers, BN + `activation` (ReLU) between them.

    last_bn adds a BatchNorm after the last linear layer (SimSiam, SimCLR v2), without affine
    parameters when last_bn_affine is False.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 last_bn: bool = False, last_bn_affine: bool = True,
                 activation: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True)):
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            hidden = i < num_layers - 1
            layers.append(nn.Linear(d_in, d_out, bias=not (hidden or last_bn)))
            if hidden:
                layers += [nn.BatchNorm1d(d_out), activation()]
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
        super().__init__(*layers)
