"""Training samples streamed from tar shards, with what image folders get from EpochSampler and
KeyedSamples: an order drawn from (seed, epoch) alone, the same number of batches on every rank,
views made under seeded(seed, epoch, i), and a resume that continues mid-epoch."""

import random
from collections.abc import Callable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from selfsup.data.folder import BadImageError, decode_bytes, report_bad_image
from selfsup.data.shards import ShardSet
from selfsup.errors import SelfsupError
from selfsup.train.resume import _rank_and_world, mix, seeded

SHUFFLE_BUFFER = 1000  # encoded samples each reader holds to mix the order within its shards (~100 MB of photos)


class ShardStream(IterableDataset):
    """(views, -1, i) for the samples of a ShardSet, i the sample's index in it; `transform` makes the
    views of a uint8 image (3, H, W) (None: the image itself).

    Epoch e lays the shards end to end in a permutation drawn from (seed, e). Rank r of `world` reads
    the r-th of `world` equal runs of that sequence, cut to whole batches, and gives each DataLoader
    worker a contiguous share of those batches (one more to the first workers when they do not divide
    evenly). So each reader opens only the shards its share covers, every rank yields the same number
    of batches, and no sample comes twice in an epoch; fewer than world x (batch_size + 1) are left
    out, a different few each epoch. Within a share webdataset's shuffle buffer, seeded by (seed, epoch,
    share), mixes the order.

    An undecodable image is reported once (to `log_file`, like SkipBadImages) and replaced by the next
    sample after the share, so batches keep their size; with skip_bad=False it is an error.
    Epochs are counted by the passes each worker's copy makes (so workers must be persistent);
    resume_at(step) makes the next pass start that many batches into the run, mid-epoch if need be
    (at the very sample with the same processes and workers as before the stop).
    rank and world: None to read them from torch.distributed when iterating.
    """

    def __init__(self, shards: ShardSet, transform: Callable[[torch.Tensor], Any] | None, seed: int, batch_size: int,
                 log_file: str | Path | None = None, skip_bad: bool = True, rank: int | None = None,
                 world: int | None = None):
        self.shards, self.transform, self.seed, self.batch_size = shards, transform, seed, batch_size
        self.log_file, self.skip_bad, self.rank, self.world = log_file, skip_bad, rank, world
        self.epoch, self._resume_step = 0, None
        self._reported: set[str] = set()

    def __len__(self) -> int:
        """Samples per rank and epoch."""
        return self.batches_per_rank(self._rank_and_world()[1]) * self.batch_size

    def batches_per_rank(self, world: int) -> int:
        return len(self.shards) // world // self.batch_size

    def resume_at(self, step: int) -> None:
        """The next pass starts after `step` optimiser steps (one batch each) since the run began."""
        self._resume_step = step

    def check_readers(self, world: int, workers: int) -> None:
        """A SelfsupError unless each of the world x workers readers has a shard of its own and each rank a batch."""
        shards, readers = len(self.shards.paths), world * max(workers, 1)
        if shards < world:
            raise SelfsupError(f"{self.shards.name} has {shards} shards for {world} processes: each needs a shard "
                               f"of its own; pass at least {world} shards (more, and --num-workers, read faster)")
        if shards < readers:
            raise SelfsupError(f"{self.shards.name} has {shards} shards for {world} processes x {workers} data "
                               f"workers: each of the {readers} readers needs a shard of its own; pass at least "
                               f"{readers} shards, or --num-workers {shards // world} or fewer")
        if self.batches_per_rank(world) == 0:
            raise SelfsupError(f"{self.shards.name} has {len(self.shards)} images, fewer than one batch of "
                               f"{self.batch_size} for each of {world} processes; pass a smaller --batch-size")

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        rank, world = self._rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.check_readers(world, workers)
        per_rank = self.batches_per_rank(world)
        epoch, done = self.epoch, 0
        if self._resume_step is not None:
            epoch, done = divmod(self._resume_step, per_rank)
            self._resume_step = None
        self.epoch = epoch + 1  # this copy's next pass (a persistent worker's next) is the next epoch
        base, extra = divmod(per_rank, workers)
        first = rank * (len(self.shards) // world) + self.batch_size * (worker * base + min(worker, extra))
        batches = base + (worker < extra)
        # The DataLoader takes batches from its workers in turn: before the resume, this one gave these.
        given = done // workers + (worker < done % workers)
        return self._samples(epoch, first, batches * self.batch_size, given * self.batch_size)

    def _samples(self, epoch: int, first: int, n: int, skip: int) -> Iterator[tuple[Any, int, int]]:
        """The share of n samples from `first` of epoch's sequence, the first `skip` left out (before
        decoding; an undecodable image among them shifts the resumed position by one)."""
        order = torch.randperm(len(self.shards.paths), generator=torch.Generator().manual_seed(mix(self.seed, epoch)))
        order = order.tolist()
        share = wds.shuffle(SHUFFLE_BUFFER, rng=random.Random(mix(self.seed, epoch, first)))(
            iter(self.shards.read(order, first, n)))
        spare = self.shards.read(order, first + n, len(self.shards))  # replacements for undecodable images
        wanted = n - skip
        for i, name, data in islice(chain(share, spare), skip, None) if wanted > 0 else ():
            try:
                with seeded(self.seed, epoch, i):  # the views of sample i depend on (seed, epoch, i) alone
                    image = decode_bytes(data, name)
                    item = self.transform(image) if self.transform is not None else image
            except BadImageError as e:
                if not self.skip_bad:
                    raise
                report_bad_image(e, self._reported, self.log_file)
                continue
            yield item, -1, i  # outside `seeded`: the consumer runs with the caller's random state
            wanted -= 1
            if wanted == 0:
                return
        if wanted > 0:
            raise SelfsupError(f"fewer than {n} of the {len(self.shards)} images in {self.shards.name} can be decoded; "
                               "check the shards")

    def _rank_and_world(self) -> tuple[int, int]:
        return (self.rank or 0, self.world) if self.world is not None else _rank_and_world()

    def __getstate__(self) -> dict[str, Any]:
        # Workers started by spawn (not fork) do not inherit torch.distributed: they get the rank here.
        state = dict(self.__dict__)
        if self.world is None and _rank_and_world()[1] > 1:
            state["rank"], state["world"] = _rank_and_world()
        return state
