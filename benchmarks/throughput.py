"""SimCLR pretraining throughput: the model alone, selfsup's two data pipelines and lightly's, in one run.

Four measurements in one process, with the same backbone, batch size, image size and view recipe on
Fashion-MNIST (uint8, 1 channel, in memory). Each one repeats a SimCLR step: both views through the
backbone and projection head, NT-Xent, backward, SGD (lr 0.01, momentum 0.9).

1. model-only: selfsup's SimCLR on two random float batches already on the device -- the most the
   model can do here, with no loading and no augmentation;
2. selfsup, per-sample views: `TransformedImages` with the method's views (torchvision v2 on one
   uint8 tensor at a time, in DataLoader workers) -> the DataLoader of `selfsup.train.run.train_loader`
   -> the device (pinned memory, non-blocking copy on CUDA);
3. selfsup, batched views: the same DataLoader only stacks uint8 images; they go to the device and the
   views are made there for the whole batch at once (kornia, parameters drawn per sample), as
   `selfsup train` does for in-memory data;
4. lightly: SimCLR as lightly's documented example builds it from its public building blocks --
   `lightly.transforms.SimCLRTransform` on the PIL image torchvision's FashionMNIST would yield, a plain
   PyTorch DataLoader with as many workers as (2), `SimCLRProjectionHead` and `lightly.loss.NTXentLoss` --
   on a copy of the same backbone (same architecture and initial weights): only the pipeline, head and
   loss are lightly's. The head has selfsup's sizes (proj_hidden_dim -> proj_dim); lightly's adds a
   BatchNorm after its last layer, selfsup's does not.

The recipe in 2-4: random resized crop to `--image-size` (scale crop_min_scale-1), horizontal flip,
colour jitter of strength s with p 0.8 (brightness and contrast only: one channel, so no saturation,
hue or grayscale), no blur below 64 px, normalisation to mean 0.5, std 0.5. One image = its two views;
images/s = batch size x timed steps / seconds.

Speeds on a shared machine drift between runs, so compare ratios from one run only; the four alternate
in rounds to spread the noise over all. In each round each measurement takes one untimed step (worker
start-up, first batch, allocator), then times `--steps` steps (on CUDA up to the end of the last
kernel). Loaders are made afresh each round and their workers shut down after it, so that they cannot
prefetch while another measurement is timed.

Peak memory per measurement, the largest over its rounds: the main process's peak RSS (VmHWM, reset
to the current RSS before each round of each measurement; it includes both models, their gradients and
momentum, made before the first round, and whatever the allocator kept from earlier measurements, so
differences of a few tens of MiB mean little), the largest DataLoader worker's peak RSS (each round's
workers are new; it counts the pages they share with the main process), and on CUDA
torch.cuda.max_memory_allocated (reset likewise; exact per measurement). Linux only (/proc).

    .venv/bin/pip install -e '.[bench]'  # lightly, for (4)
    .venv/bin/python benchmarks/throughput.py --out benchmarks/results/NAME [--backbone resnet18] [--set KEY=VALUE] ...
"""

import argparse
import copy
import itertools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from selfsup.data import open_unlabeled
from selfsup.methods import create
from selfsup.methods.simclr import SimCLRConfig
from selfsup.train.config import TrainConfig, parse_assignments
from selfsup.train.run import train_loader
from selfsup.views import TransformedImages
from selfsup.views.eval import normalization_for

try:
    import lightly
    from lightly.loss import NTXentLoss as LightlyNTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
except ImportError:
    sys.exit("benchmarks/throughput.py needs lightly for measurement 4: .venv/bin/pip install -e '.[bench]'")

MEASUREMENTS = {
    "model_only": "1. model-only (random tensors on the device)",
    "per_sample": "2. selfsup, per-sample views in DataLoader workers",
    "batched": "3. selfsup, batched views on the device",
    "lightly": "4. lightly: SimCLRTransform + DataLoader + its head and NTXentLoss",
}
HEADER = ("| what | images/s (per round) | images/s (all) | ratio to 1 | peak RSS main (MiB) "
          "| peak RSS largest worker (MiB) | peak CUDA allocated (MiB) |")
RATIOS = {"3/1": ("batched", "model_only"), "3/4": ("batched", "lightly"), "2/1": ("per_sample", "model_only")}


class LightlySimCLR(nn.Module):
    """Measurement 4's model: backbone -> lightly's SimCLRProjectionHead -> lightly's NTXentLoss.

    training_step: two view batches (B, C, S, S) -> {"loss": scalar}, the contract of selfsup's SimCLR.
    """

    def __init__(self, backbone: nn.Module, config: SimCLRConfig):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.num_features, config.proj_hidden_dim, config.proj_dim)
        self.criterion = LightlyNTXentLoss(temperature=config.temperature)

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x0, x1 = views
        z0 = self.projection_head(self.backbone(x0).flatten(start_dim=1))  # (B, proj_dim)
        z1 = self.projection_head(self.backbone(x1).flatten(start_dim=1))
        return {"loss": self.criterion(z0, z1)}


def lightly_views(image_size: int, channels: int, config: SimCLRConfig) -> v2.Compose:
    """uint8 (C, H, W) -> PIL image (as torchvision's FashionMNIST yields) -> SimCLRTransform with
    selfsup's recipe for these images -> two float views (C, S, S)."""
    mean, std = normalization_for(channels)
    colour = channels == 3
    transform = SimCLRTransform(
        input_size=image_size, min_scale=config.crop_min_scale, cj_strength=config.jitter_strength,
        cj_sat=0.8 if colour else 0.0, cj_hue=0.2 if colour else 0.0, random_gray_scale=0.2 if colour else 0.0,
        gaussian_blur=0.5 if image_size >= 64 else 0.0, normalize={"mean": list(mean), "std": list(std)})
    return v2.Compose([v2.ToPILImage(), transform])


def lightly_loader(dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """The DataLoader of lightly's example, with selfsup's worker count and pinning."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=device.type == "cuda")


def step(model: nn.Module, optimizer: torch.optim.Optimizer, views: list[torch.Tensor]) -> None:
    """One SimCLR training step: forward both views, NT-Xent, backward, SGD."""
    optimizer.zero_grad(set_to_none=True)
    model.training_step(views)["loss"].backward()
    optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(model, optimizer, batches: Iterator[list[torch.Tensor]], steps: int, device: torch.device) -> float:
    """Seconds for `steps` steps on `batches`, after one untimed step (worker start-up, first batch)."""
    step(model, optimizer, next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, next(batches))
    synchronize(device)
    return time.perf_counter() - start


def on_device(loader: DataLoader, device: torch.device,
              make_views: Callable | None = None) -> Iterator[list[torch.Tensor]]:
    """The loader's batches copied to `device` (non-blocking from pinned memory), then `make_views` if given."""
    for x, _labels in loader:  # x: list of views (B, C, S, S), or uint8 images (B, C, H, W)
        x = [v.to(device, non_blocking=True) for v in x] if isinstance(x, list) else x.to(device, non_blocking=True)
        yield make_views(x) if make_views else x


def proc_status_mib(pid: int | str, field: str = "VmHWM") -> float:
    """A memory field of /proc/PID/status in MiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def child_pids() -> list[int]:
    """Processes whose parent is this one: the DataLoader workers while a loader runs."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == me:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def reset_peaks(device: torch.device) -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure_round(model, optimizer, batches: Iterator, steps: int, device: torch.device) -> dict[str, float]:
    """Seconds and peak memory (MiB) of one round of one measurement; shuts the loader's workers down."""
    reset_peaks(device)
    seconds = timed(model, optimizer, batches, steps, device)
    workers = max((proc_status_mib(pid) for pid in child_pids()), default=0.0)
    batches.close()  # frees the loader and its iterator: persistent workers exit before the next round
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "main_rss": proc_status_mib("self"), "largest_worker_rss": workers,
            "cuda_max_allocated": cuda}


def summarize(rounds: list[dict[str, float]], batch: int, steps: int) -> dict:
    seconds = [r["seconds"] for r in rounds]
    peaks = {k: max(r[k] for r in rounds) if rounds[0][k] is not None else None
             for k in ("main_rss", "largest_worker_rss", "cuda_max_allocated")}
    return {"seconds_per_round": seconds, "images_per_s_per_round": [batch * steps / s for s in seconds],
            "images_per_s": batch * steps * len(seconds) / sum(seconds), "peak_memory_mib": peaks}


def heading(results: dict) -> str:
    c, m = results["config"], results["machine"]
    kwargs = "".join(f" {k}={v}" for k, v in c["backbone_kwargs"].items())
    return (f"SimCLR, {c['backbone']}{kwargs}, batch {c['batch_size']} images (x2 views), "
            f"{c['channels']}x{c['image_size']} px, on {m['device_name']}; loader workers: {c['num_workers']} for 2 "
            f"and 4, {c['num_workers_batched']} for 3; {m['cpu_count']} CPUs, {m['torch_threads']} torch threads; "
            f"{c['rounds']} rounds x {c['steps']} timed steps")


def row(key: str, v: dict, model_only: float) -> str:
    mib = [("-" if x is None else f"{x:.0f}") for x in v["peak_memory_mib"].values()]
    return (f"| {MEASUREMENTS[key]} | {' / '.join(f'{x:.0f}' for x in v['images_per_s_per_round'])} | "
            f"{v['images_per_s']:.1f} | {v['images_per_s'] / model_only:.2f} | {' | '.join(mib)} |")


def table(results: dict) -> str:
    m = results["measurements"]
    return "\n".join([
        f"`{results['machine']['command']}`", "", heading(results), "",
        HEADER, "|---|---|---|---|---|---|---|",
        *(row(key, v, m["model_only"]["images_per_s"]) for key, v in m.items()), "",
        "ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in results["ratios"].items())
        + " (1 model-only, 2 per-sample, 3 batched, 4 lightly)", "",
        "Worker RSS counts the pages a worker shares with the main process; 0 means no worker.",
    ])


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="SimCLR config override, e.g. 'backbone_kwargs={img_size: 32, patch_size: 4}'")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=None, help="default: what selfsup's loader picks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="PATH: writes PATH.json and PATH.md "
                        "(benchmarks/results/throughput.md is the hand-written summary of these)")
    return parser.parse_args()


def setup(args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """The four measurements as {key: (model, optimizer, () -> fresh iterator of view batches on the device)},
    and the configuration to record."""
    images, batch, size = open_unlabeled("fashion-mnist"), args.batch_size, args.image_size
    method = create("simclr", in_chans=images.channels, backbone=args.backbone, **parse_assignments(args.set))
    lightly_model = LightlySimCLR(copy.deepcopy(method.backbone), method.config)  # same initial weights
    selfsup = (method.to(device).train(), torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9))
    theirs = (lightly_model.to(device).train(), torch.optim.SGD(lightly_model.parameters(), lr=0.01, momentum=0.9))
    views = method.default_views(size, images.channels)
    per_sample = TransformedImages(images, views)
    lightly_set = TransformedImages(images, lightly_views(size, images.channels, method.config))
    config = TrainConfig(batch_size=batch, num_workers=args.num_workers)
    workers = train_loader(per_sample, config).num_workers  # selfsup's choice when --num-workers is None
    random_views = [torch.randn(batch, images.channels, size, size, device=device) for _ in range(2)]
    for model, optimizer in (selfsup, theirs):  # both models' momentum buffers exist before any measurement
        step(model, optimizer, random_views)
    sources = {
        "model_only": (*selfsup, lambda: (random_views for _ in itertools.count())),
        "per_sample": (*selfsup, lambda: on_device(train_loader(per_sample, config), device)),
        "batched": (*selfsup, lambda: on_device(train_loader(images, config, batched=True), device, views.batch)),
        "lightly": (*theirs, lambda: on_device(lightly_loader(lightly_set, batch, workers, device), device)),
    }
    recorded = {"backbone": args.backbone, "backbone_kwargs": method.config.backbone_kwargs, "batch_size": batch,
                "image_size": size, "channels": images.channels, "steps": args.steps, "rounds": args.rounds,
                "num_workers": workers, "num_workers_batched": train_loader(images, config, batched=True).num_workers,
                "device": str(device), "overrides": parse_assignments(args.set),
                "optimizer": "SGD lr 0.01 momentum 0.9"}
    return sources, recorded


def machine(device: torch.device, command: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu})"
    return {"device_name": name, "torch": torch.__version__, "lightly": lightly.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": command}


def main() -> None:
    args = arguments()
    command, device = shlex.join([".venv/bin/python", *sys.argv]), torch.device(args.device)
    torch.manual_seed(0)
    sources, config = setup(args, device)
    rounds = {key: [] for key in sources}
    for r in range(args.rounds):
        for key, (model, optimizer, batches) in sources.items():
            rounds[key].append(measure_round(model, optimizer, batches(), args.steps, device))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f}s" for k, v in rounds.items())
              + f" for {args.steps} steps each", flush=True)
    measurements = {key: {"what": MEASUREMENTS[key], **summarize(v, args.batch_size, args.steps)}
                    for key, v in rounds.items()}
    speed = {key: v["images_per_s"] for key, v in measurements.items()}
    results = {"config": config, "measurements": measurements,
               "ratios": {name: speed[a] / speed[b] for name, (a, b) in RATIOS.items()},
               "machine": machine(device, command)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
