"""`selfsup train`: resolve the configuration, build data + views + method, and fit with Lightning."""

import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup import __version__
from selfsup.checkpoints import read_checkpoint
from selfsup.data import open_unlabeled
from selfsup.errors import SelfsupError
from selfsup.methods import create, method_class
from selfsup.train.config import TrainConfig, split_options
from selfsup.train.module import AtomicCheckpointIO, LastCheckpoint, SelfsupModule
from selfsup.views import TransformedImages

DEFAULT_EPOCHS = 100
FOLDER_IMAGE_SIZE = 224


def train(method_name: str, options: dict[str, Any], out: str | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Pretrain `method_name` with flat `options` (method and run fields); returns the run folder.

    With resume, the run folder's last checkpoint supplies the configuration (`options` may
    still change e.g. max_steps) and the weights, optimiser, schedule and step count.
    """
    config_class = method_class(method_name).config_class
    run_dir = _run_dir(method_name, out, resume)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        options = {**_saved_options(last, method_name), **options}
    elif last.exists():
        raise SelfsupError(f"'{run_dir}' already holds a run; pass --resume to continue it, or another --out")
    method_options, train_options = split_options(options, config_class)
    config = TrainConfig(**train_options)
    L.seed_everything(config.seed, workers=True, verbose=False)

    images = open_unlabeled(config.data)
    channels, native_size = images.channels, images.native_size
    if config.limit_samples:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
        images = Subset(images, order[: config.limit_samples].tolist())
    if len(images) < config.batch_size:
        raise SelfsupError(f"{config.data} has {len(images)} images, fewer than one batch; "
                           f"pass --batch-size {max(2, len(images) // 2)} or more data")
    image_size = config.image_size or native_size or FOLDER_IMAGE_SIZE
    batched = config.batched_views if config.batched_views is not None else native_size is not None
    if batched and native_size is None:
        raise SelfsupError(f"batched_views needs images of one size, and those in {config.data} vary; "
                           "drop --set batched_views=true")

    method = create(method_name, in_chans=channels, **method_options)
    meta = {"method": method_name, "version": __version__, "seed": config.seed, "in_chans": channels,
            "image_size": image_size, "train": dataclasses.asdict(config),
            "method_config": dataclasses.asdict(method.config)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))

    views = method.default_views(image_size, channels)
    # Batched: the loader only stacks uint8 images and the views are made on the device, per batch.
    loader = train_loader(WithIndex(images if batched else TransformedImages(images, views)), config, batched)
    trainer = _trainer(config, run_dir, last, progress)
    method.prepare(len(images), len(images) // (config.batch_size * trainer.world_size))
    n_params = sum(p.numel() for p in method.backbone.parameters()) / 1e6
    say = print if trainer.global_rank == 0 else (lambda *_: None)  # one summary, not one per process
    say(f"{method_name} | {method.config.backbone} ({n_params:.1f}M params, {channels}x{image_size}px) | "
        f"{len(images)} images from {config.data} | batch {config.batch_size} | run folder {run_dir}")
    start = time.time()
    trainer.fit(SelfsupModule(method, meta, views if batched else None), loader,
                ckpt_path=str(last) if resume else None)
    say(f"trained {trainer.global_step} steps in {time.time() - start:.0f}s; checkpoint: {last}")
    return run_dir


def _run_dir(method_name: str, out: str | None, resume: bool) -> Path:
    if out:
        return Path(out)
    if not resume:
        return Path("runs") / f"{method_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = sorted(Path("runs").glob(f"{method_name}-*/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not runs:
        raise SelfsupError(f"--resume found no {method_name} run under ./runs; pass --out RUN_FOLDER")
    return runs[-1].parent.parent


def _saved_options(last: Path, method_name: str) -> dict[str, Any]:
    if not last.is_file():
        raise SelfsupError(f"cannot resume: '{last}' does not exist; start the run without --resume")
    meta = read_checkpoint(last)["selfsup"]
    if meta["method"] != method_name:
        raise SelfsupError(f"cannot resume: '{last}' was written by method '{meta['method']}', not "
                           f"'{method_name}'; run `selfsup train {meta['method']} --resume` or pick another --out")
    return {**meta["train"], **meta["method_config"]}


class WithIndex(Dataset):
    """(x, label) -> (x, label, i): methods with memory banks or surrogate classes need each image's index."""

    def __init__(self, samples: Dataset):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return (*self.samples[i], i)


def train_loader(dataset: Dataset, config: TrainConfig, batched: bool = False) -> DataLoader:
    workers = config.num_workers
    if workers is None:  # in-memory images need no worker to be stacked; decoding and views do
        workers = 0 if batched else min(8, (os.cpu_count() or 2) - 1)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def _trainer(config: TrainConfig, run_dir: Path, last: Path, progress: bool) -> L.Trainer:
    epochs = config.epochs or (None if config.max_steps else DEFAULT_EPOCHS)
    # Lightning's hints about worker counts and sync_dist do not apply to this loop.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # Lightning's start-up notes (accelerators found, tips) would bury our one-line summary.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    return L.Trainer(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        precision=config.precision, max_epochs=epochs, max_steps=config.max_steps or -1,
        # a new version_N log folder per (re)start: a resumed run keeps its earlier logs
        logger=[CSVLogger(run_dir / "logs", name="csv"), TensorBoardLogger(run_dir / "logs", name="tensorboard")],
        callbacks=[LastCheckpoint(str(last), config.checkpoint_every)],
        plugins=[AtomicCheckpointIO()], enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, log_every_n_steps=min(10, config.max_steps or 10), default_root_dir=run_dir,
    )
