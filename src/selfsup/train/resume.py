"""What makes an interrupted run resume exactly: a data order that is a pure function of
(seed, epoch), per-sample augmentation seeded by (seed, epoch, index), and the main process's
random number generators saved in, and restored from, the checkpoint."""

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Yields (epoch, index) keys: epoch e visits a permutation of range(n) drawn from (seed, e)
    alone, so the order does not depend on any RNG state or on how often the run was restarted.

    Under DDP (read lazily from torch.distributed) rank r takes every world-th key of the first
    world * (n // world), so every rank sees the same number of images per epoch.
    `resume_at(step)` makes the next pass start `step` batches into the run, mid-epoch if need be.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self._resume_step = 0, None

    def __len__(self) -> int:
        return self.n // _rank_and_world()[1]

    def steps_per_epoch(self) -> int:
        return len(self) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        self.epoch = epoch

    def resume_at(self, step: int) -> None:
        """The next pass starts after `step` optimiser steps (one batch each) since the run began."""
        self._resume_step = step  # worked out when iterating: only then does DDP know the world size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip = 0
        if self._resume_step is not None:
            self.epoch, batches = divmod(self._resume_step, max(self.steps_per_epoch(), 1))
            skip, self._resume_step = batches * self.batch_size, None
        epoch = self.epoch
        rank, world = _rank_and_world()
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix(self.seed, epoch)))
        return _keys(epoch, order[rank: world * (self.n // world): world][skip:])


def _keys(epoch: int, indices: torch.Tensor, chunk: int = 1 << 16) -> Iterator[tuple[int, int]]:
    """(epoch, i) for i in `indices`, made a chunk at a time: an epoch of 2 million windows (rs_memory.md) held as a
    list of tuples took ~110 bytes an index (~230 MB), the int64 tensor 8."""
    for part in indices.split(chunk):
        yield from ((epoch, i) for i in part.tolist())


def mix(*numbers: int) -> int:
    """A 64-bit seed from a few integers, well spread even for neighbouring inputs."""
    return int(np.random.SeedSequence([n & (2**63 - 1) for n in numbers]).generate_state(1, np.uint64)[0])


@contextlib.contextmanager
def seeded(*key: int) -> Iterator[None]:
    """Run the block with torch, numpy and random seeded from `key`, restoring their states after:
    an augmentation drawn inside depends on the key only, not on the process or worker it runs in."""
    state = rng_state(cuda=False)
    seed = mix(*key)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        set_rng_state(state)


class KeyedSamples(Dataset):
    """(epoch, i) -> (*samples[i], i), decoded and augmented under `seeded(seed, epoch, i)`: the
    same key gives the same views whichever worker makes them, before or after a restart."""

    def __init__(self, samples: Dataset, seed: int):
        self.samples, self.seed = samples, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        with seeded(self.seed, epoch, i):
            return (*self.samples[i], i)


def rng_state(cuda: bool = True) -> dict[str, Any]:
    """The main process's generator states as tensors and plain data (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Undo `rng_state`: the next random draw is the one that followed when the state was taken."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["random"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
