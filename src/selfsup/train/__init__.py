"""Training: the Lightning wrapper around any method, optimisers, schedules, checkpoints."""

from selfsup.train.config import TrainConfig
from selfsup.train.run import train

__all__ = ["TrainConfig", "train"]
