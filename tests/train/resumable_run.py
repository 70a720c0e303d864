"""`selfsup train` in a subprocess that a test can stop with a real signal at a chosen step.

usage: python resumable_run.py STEP SIGNAL -- selfsup-argv...   (STEP -1: never signal)

SIGNAL is sent to this very process in the middle of step STEP + 1 (after STEP optimiser steps,
before the forward pass). It also registers `simclr-stateful`: SimCLR plus the state other
methods keep (an EMA encoder, a queue with its pointer, a memory bank indexed by image), each
feeding the loss, so a resume that lost or stale-loaded any of it would change the weights.
"""

import os
import signal
import sys

import torch
import torch.nn.functional as F

from selfsup.methods import register
from selfsup.methods.simclr import SimCLR
from selfsup.nn.ema import cosine_momentum, ema_update, frozen_copy
from selfsup.train.module import SelfsupModule


@register
class StatefulSimCLR(SimCLR):
    name = "simclr-stateful"

    def __init__(self, config, in_chans: int = 3):
        super().__init__(config, in_chans)
        self.ema_backbone = frozen_copy(self.backbone)
        dim = config.proj_dim
        self.register_buffer("queue", F.normalize(torch.randn(64, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank", torch.zeros(1, dim))
        self._last = None

    def prepare(self, num_samples: int, steps_per_epoch: int) -> None:
        self.bank = F.normalize(torch.randn(num_samples, self.config.proj_dim), dim=1)

    def training_step(self, views, indices=None):
        x1, x2 = views
        z1 = F.normalize(self.projection_head(self.backbone(x1)), dim=1)  # (B, D)
        z2 = F.normalize(self.projection_head(self.backbone(x2)), dim=1)
        with torch.no_grad():
            target = F.normalize(self.projection_head(self.ema_backbone(x2)), dim=1)
        loss = self.criterion(z1, z2) + (z1 - target).pow(2).sum(1).mean()
        loss = loss + 0.1 * (z1 @ self.queue.T).mean() + 0.1 * (z1 * self.bank[indices]).sum(1).mean()
        self._last = (z2.detach(), indices)
        return {"loss": loss}

    @torch.no_grad()
    def after_step(self, step: int, max_steps: int) -> None:
        ema_update(self.ema_backbone, self.backbone, cosine_momentum(0.9, step, max_steps))
        z, indices = self._last
        ptr = int(self.queue_ptr)
        self.queue[ptr: ptr + len(z)] = z[: len(self.queue) - ptr]
        self.queue_ptr.fill_((ptr + len(z)) % len(self.queue))
        self.bank[indices] = z


def _signal_at(step: int, signum: int) -> None:
    original = SelfsupModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            os.kill(os.getpid(), signum)
        return original(self, batch, batch_idx)

    SelfsupModule.training_step = training_step


if __name__ == "__main__":
    step, name, separator, *argv = sys.argv[1:]
    assert separator == "--", __doc__
    if int(step) >= 0:
        _signal_at(int(step), getattr(signal, name))
    from selfsup.cli import main

    sys.exit(main(argv))
