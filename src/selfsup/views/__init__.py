"""View recipes: turn one uint8 image (C, H, W) into the float views a method trains on."""

from selfsup.views.dataset import TransformedImages
from selfsup.views.exemplar import ExemplarViews
from selfsup.views.eval import EvalTransform, normalization_for
from selfsup.views.simclr import SimCLRViews

__all__ = ["EvalTransform", "ExemplarViews", "SimCLRViews", "TransformedImages", "normalization_for"]
