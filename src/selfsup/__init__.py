"""selfsup: self-supervised representation learning with PyTorch."""

__version__ = "0.1.0"
