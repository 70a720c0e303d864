"""The Lightning module that trains any registered method, and the checkpoint plumbing around it."""

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from selfsup.checkpoints import read_checkpoint, write_atomic
from selfsup.errors import SelfsupError
from selfsup.methods import Method
from selfsup.train.optim import create_optimizer, warmup_cosine

REFERENCE_BATCH = 256  # learning rates are given for this batch and scaled linearly


class SelfsupModule(L.LightningModule):
    """Wraps a Method: runs its training step, owns its optimiser and schedule, and stores the
    `meta` dict (method name, configs, data shape, version) in every checkpoint."""

    def __init__(self, method: Method, meta: dict[str, Any], batch_views: Any = None):
        super().__init__()
        self.method = method
        self.meta = meta
        self.batch_views = batch_views  # a view recipe with .batch(), applied after the transfer

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.batch_views is None:  # the DataLoader already made the views
            return batch
        images, labels, indices = batch  # uint8 (B, C, H, W), now on the device
        return self.batch_views.batch(images), labels, indices

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        views, _, indices = batch
        out = self.method.training_step(views, indices)
        loss = out["loss"]
        if not torch.isfinite(loss):  # never let NaN weights reach a checkpoint
            raise SelfsupError(f"the loss became {loss.item()} at step {self.global_step}; lower the learning "
                               "rate (--set lr=...) and resume from the last checkpoint (--resume)")
        self.log_dict({k: v.detach() for k, v in out.items()}, prog_bar=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.method.after_step(self.global_step, self.trainer.estimated_stepping_batches)

    def configure_optimizers(self):
        config = self.method.config
        global_batch = self.meta["train"]["batch_size"] * self.trainer.world_size
        lr = config.lr * global_batch / REFERENCE_BATCH
        optimizer = create_optimizer(self.method, config.optimizer, lr, config.weight_decay, config.momentum)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(int(config.warmup_fraction * total), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["selfsup"] = self.meta


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing atomically and loading with weights_only=True."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        write_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path)


class LastCheckpoint(L.Callback):
    """Writes `path` every `every_n_steps` optimiser steps and at the end of every epoch, so an
    interrupted run loses at most that many steps."""

    def __init__(self, path: str, every_n_steps: int):
        self.path, self.every_n_steps = path, every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        trainer.save_checkpoint(self.path)
