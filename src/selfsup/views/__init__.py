"""View recipes: turn one uint8 image (C, H, W) into the float views a method trains on."""

from selfsup.views.byol import BYOLViews
from selfsup.views.dataset import TransformedImages
from selfsup.views.eval import Bands, EvalTransform, channels_of, colour_kind, match_channels, normalization_for
from selfsup.views.exemplar import ExemplarViews
from selfsup.views.multicrop import MultiCropViews
from selfsup.views.simclr import MoCoV1Views, SimCLRViews, crop_and_colour

__all__ = ["BYOLViews", "Bands", "EvalTransform", "ExemplarViews", "MoCoV1Views", "MultiCropViews", "SimCLRViews",
           "TransformedImages", "channels_of", "colour_kind", "crop_and_colour", "match_channels",
           "normalization_for"]
