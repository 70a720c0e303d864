"""The Lightning module that trains any registered method, and the checkpoint plumbing around it."""

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.plugins.layer_sync import LayerSync

from selfsup.checkpoints import (
    point_last_at,
    prune_step_checkpoints,
    read_checkpoint,
    step_checkpoints,
    step_path,
    write_atomic,
)
from selfsup.errors import SelfsupError
from selfsup.methods import Method
from selfsup.nn.sync_batchnorm import convert_global_batchnorm, revert_global_batchnorm
from selfsup.train.monitor import collapse_figures, collapse_warning, frozen_embeddings
from selfsup.train.optim import create_optimizer, warmup_cosine
from selfsup.train.resume import mix, rng_state, set_rng_state

log = logging.getLogger(__name__)

REFERENCE_BATCH = 256  # learning rates are given for this batch and scaled linearly


class SelfsupModule(L.LightningModule):
    """Wraps a Method: runs its training step, owns its optimiser and schedule, and stores the
    `meta` dict (method name, configs, data shape, version) in every checkpoint."""

    def __init__(self, method: Method, meta: dict[str, Any], batch_views: Any = None, on_nan_loss: str = "stop",
                 channels_last: bool = False, monitor_every: int = 0):
        super().__init__()
        self.method = method
        self.meta = meta
        self.batch_views = batch_views  # a view recipe with .batch(), applied after the transfer
        self.on_nan_loss = on_nan_loss  # stop | skip
        self.channels_last = channels_last
        if channels_last:
            method.to(memory_format=torch.channels_last)  # 4-D weights (convolutions) only
        self.monitor_every = monitor_every  # steps between the collapse figures; 0: none
        self.collapse_warned = False
        self.skipped_steps: list[int] = []
        self._rng_to_restore: dict[str, Any] | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        views, labels, indices = batch
        if self.batch_views is not None:  # uint8 (B, C, H, W), now on the device; else the DataLoader made the views
            views = self.batch_views.batch(views)
        return (_channels_last(views) if self.channels_last else views), labels, indices

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        views, _, indices = batch
        out = self.method.training_step(views, indices)
        loss = out["loss"]
        if not torch.isfinite(loss):  # never let NaN weights reach a checkpoint
            return self._nonfinite(loss)
        self.log_dict({k: v.detach() for k, v in out.items()}, prog_bar=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        if self.monitor_every and (self.global_step + 1) % self.monitor_every == 0:
            self._monitor(views, out)
        return loss

    def _monitor(self, views: Any, logged: dict[str, torch.Tensor]) -> None:
        """Log the collapse figures of this batch's embeddings (to every logger, at this step) and warn once, for
        them or for the method's own sign of collapse in its step's `logged` scalars."""
        z = frozen_embeddings(self.method, views)
        figures = collapse_figures(z)
        for logger in self.loggers:
            logger.log_metrics({f"collapse/{k}": v for k, v in figures.items()}, step=self.global_step)
        step = self.global_step + 1
        own = self.method.collapse_warning(logged)
        warning = collapse_warning(self.method.name, step, figures, z.shape[1]) or (
            own and f"{self.method.name} at step {step}: {own}")
        if warning and not self.collapse_warned and self.trainer.is_global_zero:
            self.collapse_warned = True
            print(f"selfsup: warning: {warning}", file=sys.stderr)

    def _nonfinite(self, loss: torch.Tensor) -> None:
        """Stop with a message naming the step and the last good checkpoint, or (on_nan_loss=skip,
        weights still finite) skip this batch's update: returning None makes Lightning skip backward."""
        step = self.global_step + 1
        if self.on_nan_loss == "skip" and all_finite(self.method):
            log.warning("the loss became %s at step %d; skipped that step's update (on_nan_loss=skip)", loss.item(), step)
            self.skipped_steps.append(step)
            return
        savers = [c for c in self.trainer.callbacks if isinstance(c, StepCheckpoints)]
        good = step_checkpoints(savers[0].folder) if savers else []
        last = f"the last good checkpoint is '{good[0]}'" if good else "no checkpoint was written yet"
        raise SelfsupError(f"the loss became {loss.item()} at step {step}; stopped before it reached the weights; "
                           f"{last}: lower the learning rate (--set lr=...) and --resume, "
                           "or --set on_nan_loss=skip to skip such steps")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser's step, then the method's (EMA, queues, schedules): both are done before
        any callback saves the step's checkpoint, so a checkpoint at step k holds all of step k."""
        super().optimizer_step(*args, **kwargs)
        self.method.after_step(self.global_step + 1, self.trainer.estimated_stepping_batches)

    def on_train_start(self) -> None:
        # After Lightning made the DataLoader iterator and before the first batch (whose batched views
        # draw from these generators): the random stream continues where the checkpoint left it.
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.trainer.world_size > 1:
            # Every process was seeded alike; without this, all devices would draw the same batched-view
            # parameters for their different images. A function of (seed, rank, step), so a resume redraws it.
            torch.manual_seed(mix(self.meta["seed"], self.global_rank, self.global_step))

    def configure_optimizers(self):
        config = self.method.config
        global_batch = self.meta["train"]["batch_size"] * self.trainer.world_size
        lr = config.lr * global_batch / REFERENCE_BATCH
        fused = self.device.type == "cuda"  # one kernel for all parameters; torch's CPU version is no faster
        optimizer = create_optimizer(self.method, config.optimizer, lr, config.weight_decay, config.momentum, fused)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(int(config.warmup_fraction * total), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["selfsup"] = self.meta
        checkpoint["rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng")


def _channels_last(views: Any) -> Any:
    """Every 4-D tensor in a (nested) list or tuple of views in channels-last layout."""
    if isinstance(views, (list, tuple)):
        return type(views)(_channels_last(v) for v in views)
    if isinstance(views, torch.Tensor) and views.dim() == 4:
        return views.contiguous(memory_format=torch.channels_last)
    return views


class GlobalBatchNormSync(LayerSync):
    """Lightning's sync_batchnorm where torch's SyncBatchNorm cannot run (CPU processes joined by gloo):
    every BatchNorm becomes a GlobalBatchNorm while the model trains on several devices."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_global_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return revert_global_batchnorm(model)


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of `module` is finite."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing atomically and loading with weights_only=True."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        write_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(path)


class StepCheckpoints(L.Callback):
    """Writes FOLDER/step=N.ckpt (and points FOLDER/last.ckpt at it) every `every_n_steps` optimiser
    steps, after the last step of every epoch and of the run, and when a SIGTERM has arrived,
    keeping the `keep_last` newest.
    A checkpoint is written only if every weight is finite; otherwise the run stops naming the last good one.
    """

    def __init__(self, folder: str | Path, every_n_steps: int, keep_last: int = 3):
        self.folder, self.every_n_steps, self.keep_last = Path(folder), every_n_steps, keep_last

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Always here, never in on_train_epoch_end: Lightning resumes a checkpoint taken at a batch's
        # end exactly, but one taken at the epoch's end runs the next epoch a batch short.
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        last_of_run = 0 < trainer.max_steps <= trainer.global_step
        # On SIGTERM Lightning raises SIGTERMException after this batch; this saves it first.
        if trainer.global_step % self.every_n_steps == 0 or last_of_epoch or last_of_run or trainer.received_sigterm:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        if not all_finite(trainer.lightning_module):
            newest = step_checkpoints(self.folder)
            raise SelfsupError(f"the weights are no longer finite at step {trainer.global_step}; nothing was saved; "
                               f"the last good checkpoint is '{newest[0] if newest else 'none yet'}': "
                               "lower the learning rate (--set lr=...) and --resume")
        path = step_path(self.folder, trainer.global_step)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            point_last_at(path)
            prune_step_checkpoints(self.folder, self.keep_last)


def make_trainer(out: Path, max_epochs: int | None, max_steps: int | None, precision: str = "32-true",
                 accelerator: str = "auto", progress: bool = True, tensorboard: bool = False,
                 **options: Any) -> L.Trainer:
    """The one Lightning Trainer factory (pretraining, fine-tuning, distillation): logs under OUT/logs (CSV, and
    TensorBoard when asked; a new version_N folder per (re)start), atomic checkpoint writes, no automatic
    checkpoints or model summary, Lightning's start-up notes silenced. `options` go to L.Trainer (devices,
    callbacks, plugins ...); an AtomicCheckpointIO is always among the plugins."""
    # Lightning's hints about worker counts and sync_dist do not apply to these loops.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # The loggers write every log_every_n_steps optimiser steps across epochs, so epochs shorter than that are logged.
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    # Lightning's start-up notes (accelerators found, tips) would bury our one-line summary.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)  # "Initializing distributed: GLOBAL_RANK ..."
    logs = Path(out) / "logs"
    loggers = [CSVLogger(logs, name="csv")] + ([TensorBoardLogger(logs, name="tensorboard")] if tensorboard else [])
    plugins = [AtomicCheckpointIO(), *options.pop("plugins", [])]
    return L.Trainer(accelerator=accelerator, precision=precision, max_epochs=max_epochs, max_steps=max_steps or -1,
                     logger=loggers, plugins=plugins, enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=progress, log_every_n_steps=min(10, max_steps or 10), default_root_dir=out,
                     **{"devices": 1, **options})
