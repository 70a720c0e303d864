"""Self-supervised losses as standalone modules."""

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.nce import NCELoss
from selfsup.losses.ntxent import NTXentLoss

__all__ = ["BarlowTwinsLoss", "NCELoss", "NTXentLoss"]
