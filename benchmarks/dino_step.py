"""What DINO's multi-crop costs: its training step with 0, 2, 4 and 8 local crops against SimCLR's two-view step,
on the same backbone, batch and image size (issue 19).

    python benchmarks/dino_step.py [THREADS]    # writes benchmarks/results/dino_step.md and .json

Model-only steps (forward, backward, SGD) on fixed batches made by each method's own views, median of several after
two warm-up steps (dense_step.py's harness): a quarter-width resnet18 with the CIFAR stem, batch 32, 64 px images of
paste-scenes. All in one process, in ROUNDS rounds that measure every configuration once each, so that a shared
machine's load drifts over all of them alike; a configuration's figure is the median over the rounds. DINO: 2 global crops of 64 px seen by the teacher and the student, N local crops of 27 px
(the paper's 96/224 of the side) seen by the student only; the paper's default N = 8 (selfsup's too), a CPU-sized
head (num_prototypes 4096).
"""

import json
import statistics
import sys
from pathlib import Path

import torch
from dense_step import BATCH, REPEATS, SIZE, images, step_seconds

from selfsup.train.recipes import QUARTER_WIDTH
from selfsup.views.multicrop import local_crop_size

HERE = Path(__file__).parent
LOCAL_CROPS = (0, 2, 4, 8)
DINO = {"num_prototypes": 4096}
NETWORK = {"backbone_kwargs": QUARTER_WIDTH}
ROUNDS = 3


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    data = images()
    rounds = [[step_seconds("simclr", data, **NETWORK),
               *(step_seconds("dino", data, n_local_crops=n, **NETWORK, **DINO) for n in LOCAL_CROPS)]
              for _ in range(ROUNDS)]
    simclr, *dino_seconds = (statistics.median(column) for column in zip(*rounds))
    dino = dict(zip(LOCAL_CROPS, dino_seconds))
    rows = [f"| SimCLR, 2 views of {SIZE} px | {simclr * 1000:.0f} | 1.00 |",
            *[f"| DINO, 2 global of {SIZE} px + {n} local of {local_crop_size(SIZE)} px | {seconds * 1000:.0f} | {seconds / simclr:.2f} |"
              for n, seconds in dino.items()]]
    lines = ["# DINO's multi-crop step against SimCLR's two-view step", "",
             f"`python benchmarks/dino_step.py` on this project's 2-core CPU machine, torch threads: "
             f"{torch.get_num_threads()}; quarter-width resnet18 (CIFAR stem), batch {BATCH}, images from "
             f"{data.name}; model-only step (forward, backward, SGD; DINO's teacher forward and EMA update "
             f"included), median of {REPEATS} after 2 warm-up steps, then the median over {ROUNDS} rounds that "
             "alternate the configurations, all in one process.", "",
             "| step | ms per step | x SimCLR |", "|---|---|---|", *rows, ""]
    out = HERE / "results" / "dino_step.md"
    reading = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""  # written by hand: kept
    out.write_text("\n".join(lines) + ("\n## Reading" + reading if reading else ""))
    (HERE / "results" / "dino_step.json").write_text(json.dumps(
        {"simclr_seconds": simclr, "dino_seconds_by_local_crops": dino, "rounds": rounds,
         "threads": torch.get_num_threads()},
        indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
