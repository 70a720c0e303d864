"""Training from tar shards: each (rank, worker) reads its own shards, every sample once an epoch in
an order drawn from (seed, epoch), the same number of batches on every rank, bad images replaced,
a mid-epoch resume; and `selfsup train --data shards:...` end to end with --resume."""

import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.cli import main
from selfsup.data import BadImageError, open_shards
from selfsup.errors import SelfsupError
from selfsup.train.shard_stream import ShardStream
from tests.data.conftest import write_shards

SIZES = [5, 7, 3, 9, 1, 6]  # 31 samples in 6 shards of uneven sizes


def red(image):
    """The 'views' of a test image: its red value, which write_shards set to the sample's number."""
    return int(image[0, 0, 0])


def epochs(stream, workers, n_epochs=2):
    """The batches of each epoch as lists of (red value, index) pairs, through a real DataLoader."""
    loader = DataLoader(stream, batch_size=stream.batch_size, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    assert len(loader) == len(stream) // stream.batch_size
    return [[list(zip(views.tolist(), indices.tolist())) for views, _, indices in loader] for _ in range(n_epochs)]


@pytest.fixture
def shards(tmp_path):
    write_shards(tmp_path, SIZES)
    return open_shards(f"shards:{tmp_path}/{{0..5}}.tar")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_every_sample_once_an_epoch_over_two_ranks_of_two_workers(shards, batch_size):
    per_rank = [epochs(ShardStream(shards, red, seed=0, batch_size=batch_size, rank=r, world=2), workers=2)
                for r in range(2)]
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == 31 // 2 // batch_size  # the same steps on each rank
    for epoch in range(2):
        seen = [pair for rank in per_rank for batch in rank[epoch] for pair in batch]
        assert all(value == i for value, i in seen)  # each index is the sample it names
        assert len(seen) == len(set(seen)) == 2 * (31 // 2 // batch_size) * batch_size
    assert [b for r in per_rank for b in r[0]] != [b for r in per_rank for b in r[1]]  # a new order each epoch
    if batch_size == 1:  # 31 samples, 2 ranks: all but one are seen
        assert len({i for rank in per_rank for batch in rank[0] for _, i in batch} & set(range(31))) == 30


def test_the_order_is_a_function_of_seed_and_epoch_alone(shards):
    first = epochs(ShardStream(shards, red, seed=4, batch_size=2), workers=2)
    torch.manual_seed(99)
    assert epochs(ShardStream(shards, red, seed=4, batch_size=2), workers=2) == first
    assert epochs(ShardStream(shards, red, seed=5, batch_size=2), workers=2) != first


def test_views_depend_on_seed_epoch_and_index_not_on_the_reader(shards):
    def noise(image):
        return torch.rand(())

    def draws(workers):
        return {(epoch, i): v for epoch, batches in enumerate(epochs(ShardStream(shards, noise, 1, 2), workers))
                for batch in batches for v, i in batch}

    alone, shared = draws(0), draws(2)
    common = alone.keys() & shared.keys()
    assert len(common) > 20 and all(alone[k] == shared[k] for k in common)


@pytest.mark.parametrize("done", [1, 4, 9, 14])  # 15 batches an epoch: into epoch 0, then into epoch 1
def test_a_resume_continues_the_epoch_where_it_stopped(shards, done):
    full = epochs(ShardStream(shards, red, seed=0, batch_size=2), workers=2)
    stream = ShardStream(shards, red, seed=0, batch_size=2)
    stream.resume_at(done)
    resumed = epochs(stream, workers=2)
    epoch, k = divmod(done, 15)
    # the same batches as the uninterrupted run had after step `done` (the workers' turns may swap)
    assert sorted(resumed[0]) == sorted(full[epoch][k:])
    assert len(resumed[1]) == 15  # then whole epochs again


def test_a_bad_image_is_skipped_reported_and_replaced(tmp_path):
    write_shards(tmp_path, SIZES, bad=(2, 20))
    shards = open_shards(f"shards:{tmp_path}")
    log_file = tmp_path / "bad_images.txt"
    batches = epochs(ShardStream(shards, red, seed=0, batch_size=1, log_file=log_file), workers=2, n_epochs=1)[0]
    indices = [i for batch in batches for _, i in batch]
    assert len(indices) == 31 and not {2, 20} & set(indices)  # batches keep their number and size
    lines = sorted(log_file.read_text().splitlines())
    assert [line.split("\t")[0] for line in lines] == [f"{tmp_path}/0.tar:sample00002.png",
                                                       f"{tmp_path}/3.tar:sample00020.png"]
    strict = ShardStream(shards, red, seed=0, batch_size=1, skip_bad=False)
    with pytest.raises(BadImageError, match="sample000(02|20).png"):
        epochs(strict, workers=0, n_epochs=1)


def test_too_few_shards_for_the_readers_says_how_many(shards):
    stream = ShardStream(shards, red, seed=0, batch_size=1)
    stream.check_readers(world=2, workers=3)
    with pytest.raises(SelfsupError, match=r"6 shards for 2 processes x 4 data workers: each of the 8 readers .*"
                                           r"pass at least 8 shards, or --num-workers 3 or fewer"):
        stream.check_readers(world=2, workers=4)
    with pytest.raises(SelfsupError, match="6 shards for 7 processes: each needs a shard of its own"):
        stream.check_readers(world=7, workers=0)
    with pytest.raises(SelfsupError, match="fewer than one batch of 16 for each of 2 processes"):
        ShardStream(shards, red, seed=0, batch_size=16).check_readers(world=2, workers=1)
    with pytest.raises(SelfsupError, match="pass at least 8 shards"):
        epochs(ShardStream(shards, red, seed=0, batch_size=1, rank=0, world=4), workers=2, n_epochs=1)


TINY = ["--backbone", "resnet18", "--set", "backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--no-progress"]


@pytest.mark.slow
def test_train_on_shards_and_resume(tmp_path, capsys):
    write_shards(tmp_path / "shards", [8, 8, 8, 8], bad=(5,))
    run = tmp_path / "run"
    args = ["--data", f"shards:{tmp_path}/shards/{{0..3}}.tar", "--batch-size", "8", "--image-size", "32",
            "--num-workers", "2", "--out", str(run), *TINY]
    assert main(["train", "simclr", *args, "--max-steps", "3"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "32 images from shards:" in out and "trained 3 steps" in out
    assert main(["train", "simclr", "--resume", "--out", str(run), "--max-steps", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained 6 steps" in out and "1 image files skipped, listed in" in out
    more_workers = ["--out", str(tmp_path / "run2"), "--num-workers", "5", "--max-steps", "1"]
    assert main(["train", "simclr", *args, *more_workers]) == 1
    assert "pass at least 5 shards, or --num-workers 4 or fewer" in capsys.readouterr().err
