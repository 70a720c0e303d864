"""What object-level pretraining costs over its image-level base: the training step of DetCon-S, DetCon-B, R2O and
DetCo against BYOL, SimCLR and MoCo v2 on the same backbone, batch and image size, and the one-off cost of the
unsupervised masks.

    python benchmarks/dense_step.py [THREADS]    # writes benchmarks/results/dense_step.md and .json

Model-only steps (forward, backward, optimiser) on fixed batches made by each method's own views from real images
(paste-scenes at 64 px when installed, else Fashion-MNIST at 28 px upscaled), timed after warm-up, median of
several; every method measured in the same process, one after the other, so the ratios compare like with like.
The issue's bar: a DetCon-B step costs at most 1.3x a BYOL step.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from torch.utils.data import default_collate

from selfsup.data import ArrayImageSet, open_unlabeled
from selfsup.data.segments import MaskRecipe, segment
from selfsup.methods import create
from selfsup.train.optim import create_optimizer

HERE = Path(__file__).parent
BATCH, SIZE, REPEATS = 32, 64, 7
SETTINGS = dict(backbone="resnet18", small_stem=True)  # 8x8 last map at 64 px: the masks pool different cells
METHODS = ("simclr", "byol", "detcon-s", "detcon-b", "r2o", "mocov2", "detco")


def images() -> ArrayImageSet:
    try:
        data = open_unlabeled("paste-scenes")
    except Exception:  # noqa: BLE001 - any reason paste-scenes is missing: fall back to a set that is always there
        data = open_unlabeled("fashion-mnist")
    return ArrayImageSet(torch.stack([data[i][0] for i in range(BATCH)]), name=f"{data.name}[:{BATCH}]")


def batch_of(method, data: ArrayImageSet) -> list[torch.Tensor]:
    """A batch made by the method's own per-sample views (with its masks where it has them)."""
    views = method.default_views(SIZE, data.channels)
    samples = method.training_images(data)
    torch.manual_seed(0)
    return default_collate([views(samples[i][0]) for i in range(len(samples))])


def step_seconds(name: str, data: ArrayImageSet, **options) -> float:
    """Median seconds of one model-only step of method `name` (SETTINGS, then `options`) on a batch of `data`."""
    torch.manual_seed(0)
    method = create(name, in_chans=data.channels, **{**SETTINGS, **options})
    method.data_meta["image_size"] = SIZE
    optimizer = create_optimizer(method, "sgd", 0.01, 0.0, 0.9)
    batch = batch_of(method, data)
    times = []
    for i in range(REPEATS + 2):  # two warm-up steps
        start = time.perf_counter()
        loss = method.training_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(i + 1, 1000)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def mask_cost(recipe: MaskRecipe, side: int, n: int = 200) -> float:
    """Seconds per 1,000 images of side `side` (crops of scikit-image's photos)."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    crops = [torch.from_numpy(np.ascontiguousarray(p[:side, :side])).permute(2, 0, 1) for p in photos]
    start = time.perf_counter()
    for i in range(n):
        segment(crops[i % len(crops)], recipe)
    return (time.perf_counter() - start) * 1000 / n


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    data = images()
    steps = {name: step_seconds(name, data) for name in METHODS}
    masks = {f"{source} at {side} px": mask_cost(MaskRecipe(source, n_segments=100 if source == "slic" else 16), side)
             for source in ("fh", "slic") for side in (64, 224)}
    rows = [f"| {name} | {seconds * 1000:.0f} | {seconds / steps['byol']:.2f} | {seconds / steps['simclr']:.2f} | "
            f"{seconds / steps['mocov2']:.2f} |"
            for name, seconds in steps.items()]
    lines = ["# Object-level pretraining: step cost against the image-level bases", "",
             f"`python benchmarks/dense_step.py` on this project's 2-core CPU machine, torch threads: "
             f"{torch.get_num_threads()}; resnet18 (CIFAR stem), batch {BATCH}, {SIZE} px, images from {data.name}; "
             f"model-only step (forward, backward, SGD), median of {REPEATS} after 2 warm-up steps, all in one "
             "process.", "",
             "| method | ms per step | x BYOL | x SimCLR | x MoCo v2 |", "|---|---|---|---|---|", *rows, "",
             "One-off mask cost (computed once per image, then cached; a later epoch or run pays nothing):", "",
             "| masks | seconds per 1,000 images |", "|---|---|",
             *[f"| {name} | {seconds:.1f} |" for name, seconds in masks.items()]]
    (HERE / "results" / "dense_step.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "dense_step.json").write_text(json.dumps({"step_seconds": steps, "mask_seconds_per_1000":
                                                                  masks, "threads": torch.get_num_threads()},
                                                                 indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
