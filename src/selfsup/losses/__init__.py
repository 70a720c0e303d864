"""Self-supervised losses as standalone modules."""

from selfsup.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
