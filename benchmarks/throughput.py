"""SimCLR pretraining throughput: the model alone vs. selfsup's real data pipeline, in one run.

Two measurements with the same backbone, batch size and image size, in one process:

- model-only: a SimCLR step (both views forward, NT-Xent, backward, SGD step) on random float
  tensors already in memory -- the most the model can do on this machine;
- pipeline (per-sample views): Fashion-MNIST -> `TransformedImages` with the method's views
  (torchvision, one image at a time) -> the DataLoader from `selfsup.train.run.train_loader`;
- pipeline (batched views): the DataLoader only stacks uint8 images and the views are made for
  the whole batch at once (kornia), as `selfsup train` does by default for in-memory data.

Speeds on a shared 2-core machine drift by 2x between runs, so only the ratio pipeline /
model-only from one run means much. The two alternate in rounds after a warm-up to spread the
noise over both. Each pipeline round starts the loader afresh, takes one untimed step (worker
start-up, first batch), times `--steps` steps, then shuts the workers down so that they cannot
prefetch on the CPU the next model-only round is timed on. One pair = one image's two views.

    .venv/bin/python benchmarks/throughput.py [--backbone resnet18] [--batch-size 256] ...
"""

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

from selfsup.data import open_unlabeled
from selfsup.methods import create
from selfsup.train.config import TrainConfig, parse_assignments
from selfsup.train.run import train_loader
from selfsup.views import TransformedImages


def step(method: torch.nn.Module, optimizer: torch.optim.Optimizer, views: list[torch.Tensor]) -> None:
    """One SimCLR training step: forward both views, NT-Xent, backward, SGD."""
    optimizer.zero_grad(set_to_none=True)
    method.training_step(views)["loss"].backward()
    optimizer.step()


def model_only_round(method, optimizer, views: list[torch.Tensor], steps: int) -> float:
    """Seconds for `steps` steps on the same in-memory random views."""
    start = time.perf_counter()
    for _ in range(steps):
        step(method, optimizer, views)
    return time.perf_counter() - start


def pipeline_round(method, optimizer, dataset, config: TrainConfig, steps: int, batch_views=None) -> float:
    """Seconds for `steps` steps fed by a fresh selfsup DataLoader, after one untimed step."""
    loader = train_loader(dataset, config, batched=batch_views is not None)
    batches = iter(loader)
    make_views = batch_views.batch if batch_views is not None else (lambda views: views)
    step(method, optimizer, make_views(next(batches)[0]))  # untimed: worker start-up and the first batch
    start = time.perf_counter()
    for _ in range(steps):
        views, _labels = next(batches)
        step(method, optimizer, make_views(views))
    seconds = time.perf_counter() - start
    del batches, loader  # shuts persistent workers down before the next model-only round
    return seconds


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (the loader workers)."""
    kib = lambda who: resource.getrusage(who).ru_maxrss  # noqa: E731 (KiB on Linux)
    return {"main": kib(resource.RUSAGE_SELF) / 1024, "largest_worker": kib(resource.RUSAGE_CHILDREN) / 1024}


def table(results: dict, command: str) -> str:
    r, c = results, results["config"]
    return "\n".join([
        f"`{command}`", "",
        f"SimCLR, {c['backbone']}, batch {c['batch_size']} pairs, {c['channels']}x{c['image_size']} px, "
        f"{c['num_workers']} loader workers, {r['machine']['cpu_count']} CPUs, {r['machine']['torch_threads']} torch threads, "
        f"{c['rounds']} rounds x {c['steps']} steps each", "",
        "| what | pairs/s (per round) | pairs/s (all) | ratio |",
        "|---|---|---|---|",
        *(f"| {name} | {' / '.join(f'{x:.0f}' for x in r[key]['per_round'])} | {r[key]['pairs_per_s']:.1f} | "
          f"{r[key]['pairs_per_s'] / r['model_only']['pairs_per_s']:.2f} |"
          for name, key in [("model-only (random tensors in memory)", "model_only"),
                            ("full pipeline, per-sample views in DataLoader workers", "pipeline"),
                            ("full pipeline, batched views after the DataLoader", "pipeline_batched")]),
        "", f"peak RSS: main process {r['peak_rss_mib']['main']:.0f} MiB, "
        f"largest loader worker {r['peak_rss_mib']['largest_worker']:.0f} MiB (counts pages shared with the main process)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=None, help="default: what selfsup's loader picks")
    parser.add_argument("--image-size", type=int, default=None, help="default: the data set's own (28)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="SimCLR config override")
    parser.add_argument("--out", default="benchmarks/results/throughput")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", *sys.argv])

    torch.manual_seed(0)
    images = open_unlabeled("fashion-mnist")
    size, channels, batch = args.image_size or images.native_size, images.channels, args.batch_size
    method = create("simclr", in_chans=channels, backbone=args.backbone, **parse_assignments(args.set)).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    dataset = TransformedImages(images, method.default_views(size, channels))
    config = TrainConfig(batch_size=batch, num_workers=args.num_workers)
    workers = train_loader(dataset, config).num_workers  # what selfsup picked when --num-workers is None
    random_views = [torch.randn(batch, channels, size, size) for _ in range(2)]

    model_only_round(method, optimizer, random_views, 1)  # warm-up: allocator, kernels
    seconds = {"model_only": [], "pipeline": [], "pipeline_batched": []}
    for r in range(args.rounds):
        seconds["model_only"].append(model_only_round(method, optimizer, random_views, args.steps))
        seconds["pipeline"].append(pipeline_round(method, optimizer, dataset, config, args.steps))
        seconds["pipeline_batched"].append(
            pipeline_round(method, optimizer, images, config, args.steps, batch_views=dataset.transform))
        print(f"round {r + 1}/{args.rounds}: model-only {seconds['model_only'][-1]:.1f}s, "
              f"per-sample pipeline {seconds['pipeline'][-1]:.1f}s, "
              f"batched pipeline {seconds['pipeline_batched'][-1]:.1f}s for {args.steps} steps each", flush=True)

    results = {
        "config": {"backbone": args.backbone, "batch_size": batch, "image_size": size, "channels": channels,
                   "steps": args.steps, "rounds": args.rounds, "num_workers": workers,
                   "overrides": parse_assignments(args.set), "optimizer": "SGD lr 0.01 momentum 0.9"},
        **{key: {"seconds_per_round": s, "per_round": [batch * args.steps / x for x in s],
                 "pairs_per_s": batch * args.steps * len(s) / sum(s)} for key, s in seconds.items()},
        "peak_rss_mib": peak_rss_mib(),
        "machine": {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": command},
    }
    for key in ("pipeline", "pipeline_batched"):
        results[f"ratio_{key}_over_model_only"] = results[key]["pairs_per_s"] / results["model_only"]["pairs_per_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = table(results, command)
    Path(f"{args.out}.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
