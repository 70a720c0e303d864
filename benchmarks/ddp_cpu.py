"""Two CPU processes (DDP over gloo) against one, at the same global batch: speed and what the encoder learned.

`selfsup train simclr` with the README demo's recipe (configs/demo-fashion-mnist.yaml) for `--steps` steps,
run twice from the command line:

- one process, global batch B, all the machine's cores as torch threads;
- `--devices 2 --accelerator cpu --sync-batchnorm`, B/2 per process, half the cores each.

Both then get the same `selfsup eval knn` (k=200, Fashion-MNIST test set). The two runs see the same
images in each step; batched views draw different crops on each process, so the weights are close but
not equal (tests/train/test_distributed_training.py shows equality with per-sample views).

    .venv/bin/python benchmarks/ddp_cpu.py [--steps 150]
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SELFSUP = str(Path(sys.executable).parent / "selfsup")
CONFIG = "configs/demo-fashion-mnist.yaml"


def run(argv: list[str], threads: int) -> str:
    """stdout of `selfsup ARGV` with `threads` torch threads per process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([SELFSUP, *argv], env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"selfsup {shlex.join(argv)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def train_and_evaluate(out: Path, devices: int, batch: int, steps: int) -> dict:
    cores = os.cpu_count() or 2
    argv = ["train", "simclr", "--config", CONFIG, "--max-steps", str(steps), "--batch-size", str(batch),
            "--out", str(out), "--no-progress"]
    if devices > 1:
        argv += ["--devices", str(devices), "--accelerator", "cpu", "--sync-batchnorm"]
    seconds = float(re.search(r"trained \d+ steps in (\d+)s", run(argv, max(1, cores // devices))).group(1))
    result = out / "knn.json"
    run(["eval", "knn", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--out", str(result)], cores)
    return {"devices": devices, "batch_per_device": batch, "threads_per_process": max(1, cores // devices),
            "train_seconds": seconds, "steps_per_s": steps / seconds,
            "knn_top1": json.loads(result.read_text())["top1"], "command": f"selfsup {shlex.join(argv)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch [256]")
    parser.add_argument("--out", default="benchmarks/results/ddp_cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train_and_evaluate(Path(tmp) / f"devices{d}", d, args.batch_size // d, args.steps) for d in (1, 2)]
    command = shlex.join([".venv/bin/python", *sys.argv])
    lines = [f"`{command}`", "", f"SimCLR, demo recipe ({CONFIG}), global batch {args.batch_size}, {args.steps} steps, "
             f"{os.cpu_count()} CPU cores; kNN k=200 on the Fashion-MNIST test set", "",
             "| processes | batch per process | threads per process | training s | steps/s | speed-up | kNN top-1 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['devices']} | {r['batch_per_device']} | {r['threads_per_process']} | {r['train_seconds']:.0f} | "
              f"{r['steps_per_s']:.3f} | {r['steps_per_s'] / rows[0]['steps_per_s']:.2f} | {r['knn_top1']:.4f} |"
              for r in rows]
    lines += ["", "Training seconds include start-up (for 2 processes: the second one's imports and the gloo "
              "rendezvous).", "", *(f"- `{r['command']}`" for r in rows)]
    Path(f"{args.out}.json").write_text(json.dumps({"command": command, "runs": rows}, indent=2) + "\n")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
