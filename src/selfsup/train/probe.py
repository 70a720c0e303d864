"""The online kNN probe: while pretraining, how well do the frozen encoder's features classify a fixed labelled sample?

Every `every` optimiser steps, and at the run's last step, the method's `eval_batch` and `embed` (the contract
evaluation uses) turn a seeded sample of a labelled set (PROBE_TRAIN train, PROBE_TEST test examples, seed 0) into
features in eval mode without gradients, every module's mode restored (train/monitor.frozen_embeddings) and the random
state untouched (torch.random.fork_rng): training, and a resumed run, go on bit for bit as without the probe. The
weighted kNN of nn.knn (k=PROBE_K, T=PROBE_TEMPERATURE) gives the top-1, logged as probe/knn_top1 to every logger and
shown in the progress bar. `selfsup eval knn --limit 2000,1000 --k 20` scores a checkpoint on the same examples in
the same batches (seeded_subset), so it gives the same figure as the probe at that step.

On by default (every tenth of the run, at least DEFAULT_MIN_EVERY steps apart) when the training data is a labelled
built-in set (its own test split is the probe's), or with `--probe-data`; images only.
"""

import math
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from selfsup.data import BUILTIN, ImageSet, open_labeled, seeded_subset
from selfsup.errors import SelfsupError
from selfsup.nn.knn import knn_predict
from selfsup.train.config import TrainConfig
from selfsup.train.monitor import frozen_embeddings

PROBE_TRAIN, PROBE_TEST = 2000, 1000  # examples of each split (all of a smaller split)
PROBE_SEED = 0  # picks them, and splits a folder of class folders (eval's --seed default)
PROBE_K, PROBE_TEMPERATURE = 20, 0.07  # neighbours and vote weight exp(s/T)
PROBE_BATCH = 256  # images per forward pass: eval's, so that the features are the same
DEFAULT_SHARE, DEFAULT_MIN_EVERY = 10, 100  # on by default: every tenth of the run, at least 100 steps apart
CACHE_BYTES = 256 * 2**20  # preprocessed probe inputs up to this size are kept between probes


def labelled_builtin(spec: str) -> bool:
    """Whether `spec` names a built-in set with class labels (fashion-mnist, mnist, digits, or NAME:DIR of one)."""
    return spec.partition(":")[0] in BUILTIN


def open_probe(config: TrainConfig, modality: str) -> "KnnProbe | None":
    """The probe a run's settings ask for (probe_every, probe_data, data: see TrainConfig), or None; a SelfsupError
    when they ask for one that cannot be made."""
    if config.probe_every == 0:
        if config.probe_data:
            raise SelfsupError("--probe-data names the online probe's data, but --probe-every 0 turns the probe off: "
                               "drop one of them")
        return None
    asked = config.probe_every is not None or config.probe_data is not None
    if modality != "image":
        if asked:
            raise SelfsupError(f"the online kNN probe scores image encoders; drop --probe-every/--probe-data for a "
                               f"{modality} method and score its checkpoints with `selfsup eval knn`")
        return None
    data = config.probe_data or (config.data if labelled_builtin(config.data) else None)
    if data is None:
        if asked:
            raise SelfsupError(f"--probe-every needs labelled images and {config.data} has none: pass --probe-data "
                               "DIR (class folders DIR/<class>/... or DIR/train|test/<class>/...) or a built-in set")
        return None
    train, test = open_labeled(data, 0.2, PROBE_SEED)
    picked = seeded_subset(train, PROBE_TRAIN, PROBE_SEED), seeded_subset(test, PROBE_TEST, PROBE_SEED)
    return KnnProbe(*picked, data, config.probe_every)


class KnnProbe(L.Callback):
    """Scores the module's `method` on `train` / `test` (labelled ImageSets) every `every` optimiser steps (None: the
    default schedule) and at the last step; `last` holds (step, top-1) of the latest probe, `seconds` their time."""

    def __init__(self, train: ImageSet, test: ImageSet, data: str, every: int | None = None):
        self.sets, self.data, self.every = {"train": train, "test": test}, data, every
        self.steps: tuple[int, int] = (0, 0)  # (every, last step) of this fit
        self.last: tuple[int, float] | None = None
        self.seconds = 0.0
        self._cache: dict[str, list] = {}

    def describe(self) -> str:
        return (f"k={PROBE_K}, {len(self.sets['train'])} train / {len(self.sets['test'])} test examples of "
                f"{self.data}")

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        total = int(trainer.estimated_stepping_batches)
        every = self.every or max(DEFAULT_MIN_EVERY, math.ceil(total / DEFAULT_SHARE))
        # by default a run shorter than one interval is not probed at all; asked for, its last step is
        self.steps = (every, total if self.every or total >= every else -1)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        every, last = self.steps
        due = step > 0 and (step % every == 0 or step == last)
        if not due or not trainer.is_global_zero or (self.last is not None and self.last[0] == step):
            return
        start = time.perf_counter()
        top1 = self.score(pl_module.method, pl_module.device)
        self.seconds += time.perf_counter() - start
        self.last = (step, top1)
        for logger in trainer.loggers:  # at the step index Lightning logs this step's loss under
            logger.log_metrics({"probe/knn_top1": top1}, step=step - 1)
        pl_module.log("probe/knn_top1", top1, prog_bar=True, logger=False, rank_zero_only=True)

    def score(self, method: torch.nn.Module, device: torch.device) -> float:
        """kNN top-1 of `method`'s frozen features of the test sample against the train sample."""
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            train_x, train_y = self.features(method, "train", device)
            test_x, test_y = self.features(method, "test", device)
        predicted = knn_predict(train_x, train_y, test_x, PROBE_K, PROBE_TEMPERATURE)
        return float((predicted == test_y).float().mean())

    def features(self, method: torch.nn.Module, part: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D) float32 on the CPU, labels (N,)) of the `part` sample, in order."""
        features, labels = [], []
        for inputs, y in self._batches(method, part):
            features.append(frozen_embeddings(method, move_data_to_device(inputs, device)).cpu())
            labels.append(y)
        return torch.cat(features), torch.cat(labels)

    def _batches(self, method: torch.nn.Module, part: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(method.eval_batch of PROBE_BATCH images, their labels), kept after the first pass if they fit CACHE_BYTES."""
        if part in self._cache:
            yield from self._cache[part]
            return
        examples, kept, size = self.sets[part], [], 0
        for start in range(0, len(examples), PROBE_BATCH):
            items = [examples[i] for i in range(start, min(start + PROBE_BATCH, len(examples)))]
            batch = (method.eval_batch([image for image, _ in items]), torch.tensor([label for _, label in items]))
            size += batch[0].numel() * batch[0].element_size()
            if size <= CACHE_BYTES:
                kept.append(batch)
            yield batch
        if size <= CACHE_BYTES:
            self._cache[part] = kept
