"""Exact resume: a run stopped by a real SIGKILL or SIGTERM at a random step, then resumed with
--resume, ends with bitwise the same weights, EMA encoder, queue and memory bank as the run that
was never stopped (CPU, same seed), on the batched-views path and on the per-sample path with a
DataLoader worker. Plus unit tests of the pieces: the sampler, keyed augmentation, RNG states."""

import io
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup
from selfsup.checkpoints import read_checkpoint, step_checkpoints
from selfsup.train import resume
from selfsup.train.resume import EpochSampler, KeyedSamples, rng_state, set_rng_state

SCRIPT = Path(__file__).with_name("resumable_run.py")
TINY = ["--backbone", "resnet18", "--set", "backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--no-progress", "--seed", "7"]
MAX_STEPS = 8  # 3 steps per epoch below: the runs cross two epoch boundaries
DATA = {
    "digits": ["--data", "digits", "--limit-samples", "96", "--batch-size", "32", "--num-workers", "0"],
    "folder": ["--image-size", "8", "--batch-size", "16", "--num-workers", "1"],
}


def selfsup_run(signal_at: int, signame: str, *argv) -> subprocess.CompletedProcess:
    """`selfsup ...` in a subprocess that sends itself `signame` during step signal_at + 1 (-1: never)."""
    src = str(Path(selfsup.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), str(signal_at), signame, "--", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=900)


def write_folder(folder: Path, n: int = 48) -> Path:
    """n small images of varying size and mode: the per-sample (not batched) path."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        size = (8 + i % 5, 8 + i % 3)
        mode = ("RGB", "L", "RGBA")[i % 3]
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8).squeeze()
        Image.fromarray(array, mode).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference runs, never stopped, one per data path (made on first use)."""
    root, done = tmp_path_factory.mktemp("reference"), {}

    def get(kind: str) -> tuple[list, dict]:
        if kind not in done:
            args = [*DATA[kind], "--data", write_folder(root / "images")] if kind == "folder" else DATA[kind]
            result = selfsup_run(-1, "SIGKILL", "train", "simclr-stateful", *args, *TINY, "--max-steps", MAX_STEPS,
                                 "--checkpoint-every", 2, "--out", root / kind)
            assert result.returncode == 0, result.stderr
            done[kind] = (args, read_checkpoint(root / kind / "checkpoints" / "last.ckpt"))
        return done[kind]

    return get


def assert_same_state(resumed: dict, reference: dict, note: str) -> None:
    assert resumed["global_step"] == reference["global_step"] == MAX_STEPS
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    differ = [k for k, v in reference["state_dict"].items() if not torch.equal(resumed["state_dict"][k], v)]
    assert not differ, f"{note}: {len(differ)} tensors differ after the resume, e.g. {differ[:4]}"
    assert any(k.startswith("method.ema_backbone.") for k in reference["state_dict"])
    assert {"method.queue", "method.queue_ptr", "method.bank"} <= reference["state_dict"].keys()


@pytest.mark.slow
@pytest.mark.parametrize("kind, signame, stop", [
    ("digits", "SIGKILL", None), ("folder", "SIGKILL", None),
    ("folder", "SIGTERM", 5),  # in step 6, the last of an epoch: the step that once resumed a batch short
])
def test_a_stopped_run_resumes_to_the_same_weights(uninterrupted, tmp_path, kind, signame, stop):
    args, reference = uninterrupted(kind)
    stop = stop or random.randrange(2, MAX_STEPS - 1)  # a random step; the message says which if this fails
    every = 2 if signame == "SIGKILL" else 100  # SIGTERM: its own checkpoint is the only one written
    run = tmp_path / "run"
    stopped = selfsup_run(stop, signame, "train", "simclr-stateful", *args, *TINY, "--max-steps", MAX_STEPS,
                          "--checkpoint-every", every, "--out", run)
    newest = read_checkpoint(step_checkpoints(run / "checkpoints")[0])
    if signame == "SIGKILL":
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr
        saved = [s for s in range(1, stop + 1) if s % every == 0 or s % 3 == 0]  # and every epoch's end
        assert newest["global_step"] == saved[-1] < MAX_STEPS
    else:  # the step in flight finishes, is saved, and the process says so and exits 143
        assert stopped.returncode == 143, stopped.stderr
        assert f"stopped by SIGTERM after step {stop + 1}" in stopped.stderr and "--resume" in stopped.stderr
        assert newest["global_step"] == stop + 1
    resumed = selfsup_run(-1, "SIGKILL", "train", "simclr-stateful", "--resume", "--out", run, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(read_checkpoint(run / "checkpoints" / "last.ckpt"), reference, f"stopped in step {stop + 1}")


def test_the_data_order_is_a_function_of_seed_and_epoch_alone():
    sampler = EpochSampler(10, batch_size=3, seed=1)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(sampler) == first and sorted(i for _, i in first) == list(range(10))
    sampler.set_epoch(1)
    second = list(sampler)
    assert {e for e, _ in second} == {1} and second != [(1, i) for _, i in first]
    assert len(sampler) == 10 and sampler.steps_per_epoch() == 3


def test_resume_at_a_step_continues_mid_epoch():
    sampler = EpochSampler(10, batch_size=3, seed=1)
    sampler.set_epoch(2)
    epoch_two = list(sampler)
    sampler.resume_at(2 * 3 + 2)  # 3 steps per epoch: epoch 2, after 2 batches
    assert list(sampler) == epoch_two[6:]
    assert len(list(sampler)) == 10  # the offset applies to one pass only


def test_a_resume_set_before_ddp_starts_counts_the_steps_of_each_rank(monkeypatch):
    sampler = EpochSampler(12, batch_size=2, seed=0)
    sampler.resume_at(4)  # train() calls it before Lightning joins the processes: world 1 here
    monkeypatch.setattr(resume, "_rank_and_world", lambda: (1, 2))  # then iterated on rank 1 of 2
    fresh = EpochSampler(12, batch_size=2, seed=0)
    fresh.set_epoch(1)
    assert list(sampler) == list(fresh)[2:]  # 3 steps per epoch and rank: epoch 1, after one batch


def test_ranks_share_the_epoch_without_overlap(monkeypatch):
    shards = []
    for rank in range(3):
        monkeypatch.setattr(resume, "_rank_and_world", lambda rank=rank: (rank, 3))
        sampler = EpochSampler(11, batch_size=2, seed=0)
        assert len(sampler) == 3  # 11 // 3: every rank the same number of steps
        shards.append([i for _, i in sampler])
    assert all(len(s) == 3 for s in shards) and len({i for shard in shards for i in shard}) == 9


class RandomViews:
    """A dataset whose 'augmentation' is a draw from every generator."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(2), int(np.random.randint(1000)) + random.random()


def test_keyed_samples_depend_on_the_key_only():
    samples = KeyedSamples(RandomViews(), seed=3)
    torch.manual_seed(0)
    a = samples[(1, 4)]
    before = torch.get_rng_state()
    torch.manual_seed(99)
    b = samples[(1, 4)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:] and a[2] == 4
    assert not torch.equal(samples[(2, 4)][0], a[0]) and not torch.equal(samples[(1, 3)][0], a[0])
    torch.manual_seed(0)
    samples[(1, 4)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left as it was


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    buffer = io.BytesIO()
    torch.save({"rng": rng_state()}, buffer)
    expected = torch.rand(3), np.random.rand(3), random.random()
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True)["rng"])
    got = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_sigterm_mid_epoch_saves_the_step_in_flight_and_exits_143(tmp_path, monkeypatch, capsys):
    from selfsup.cli import main
    from selfsup.train.module import SelfsupModule

    original = SelfsupModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == 1:  # in step 2 of 3 in the epoch; checkpoint_every is far away
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler is installed while fitting
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SelfsupModule, "training_step", training_step)
    run = tmp_path / "run"
    code = main(["train", "simclr", *DATA["digits"], *TINY, "--max-steps", "8", "--checkpoint-every", "100",
                 "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 143 and "stopped by SIGTERM after step 2" in err and f"--resume --out {run}" in err
    assert [read_checkpoint(p)["global_step"] for p in step_checkpoints(run / "checkpoints")] == [2]
