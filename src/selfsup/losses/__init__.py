"""Self-supervised losses as standalone modules."""

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.dino import DINOLoss
from selfsup.losses.infonce import InfoNCELoss
from selfsup.losses.nce import NCELoss
from selfsup.losses.negative_cosine import BYOLLoss, SimSiamLoss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.swav import SwAVLoss, sinkhorn

__all__ = ["BYOLLoss", "BarlowTwinsLoss", "DINOLoss", "InfoNCELoss", "NCELoss", "NTXentLoss", "SimSiamLoss", "SwAVLoss",
           "sinkhorn"]
