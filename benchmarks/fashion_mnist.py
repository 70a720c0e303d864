"""Every registered image method, one shared budget, on Fashion-MNIST: kNN and linear top-1.

    python benchmarks/fashion_mnist.py                      # all methods, writes results/fashion_mnist.md
    python benchmarks/fashion_mnist.py --methods simclr byol --steps 100

Each method trains in its own `selfsup train` process (so its peak memory is its own), with the
same backbone, batch, steps, optimiser and seed (SHARED); each keeps its paper's loss settings,
except the CPU-sized heads and the few settings in PER_METHOD, which the table lists. The frozen
encoder is then evaluated on the full 60k -> 10k split: weighted kNN (k 200, exp(s/0.07)) and a
linear probe, next to raw pixels and the same encoder at random init.

Interrupted? Run the same command again: finished methods are read back from RUNS/*/result.json
and a half-trained one resumes from its last checkpoint.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from selfsup.data import open_labeled
from selfsup.eval import extract_features, frozen_encoder, knn_predict
from selfsup.eval.linear import linear_probe
from selfsup.methods import METHODS
from selfsup.train.recipes import CPU_METHOD_OPTIONS

HERE = Path(__file__).parent
# A quarter-width ResNet-18 (128-d features), as in the learning tests: the whole table runs in ~40 minutes.
NARROW = {"channels": [16, 32, 64, 128], "stem_width": 16}
SHARED = {"data": "fashion-mnist", "backbone": "resnet18", "backbone_kwargs": NARROW, "batch_size": 256,
          "optimizer": "adamw", "lr": 0.001, "weight_decay": 1e-4, "seed": 0, "checkpoint_every": 50}
# CPU-sized heads and the settings a ~1-epoch budget on 28 px grayscale images needs: the CPU recipe's own
# (selfsup.train.recipes); everything else is the paper's.
PER_METHOD = CPU_METHOD_OPTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered image method")
    parser.add_argument("--steps", type=int, default=234, help="optimiser steps per method [234: one epoch at batch 256]")
    parser.add_argument("--runs", default="runs/benchmark-fashion-mnist", help="run folders and cached results")
    parser.add_argument("--out", default=str(HERE / "results" / "fashion_mnist.md"))
    args = parser.parse_args()
    # every image method on a CNN (the masked image models need a ViT and have their own runner,
    # masked_fashion_mnist.py); text and audio methods are skipped by their declared modality
    methods = args.methods or [n for n in sorted(METHODS) if METHODS[n].modality == "image"
                               and "vit" not in METHODS[n].config_class.backbone]
    runs = Path(args.runs)
    train_set, test_set = open_labeled("fashion-mnist")

    rows = [cached(runs / name, lambda name=name: evaluate(name, train_set, test_set)) for name in ("pixels", "random")]
    for name in methods:
        settings = PER_METHOD.get(name, {})
        options = {**SHARED, **settings, "max_steps": args.steps}
        rows.append(cached(runs / name, lambda name=name, options=options, settings=settings: train_and_evaluate(
            name, runs / name, options, train_set, test_set, settings)))
    write_table(rows, args.steps, Path(args.out))


def cached(folder: Path, compute) -> dict:
    """result.json in `folder` if a previous invocation finished it; otherwise compute and store it."""
    path = folder / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return result


def train_and_evaluate(name: str, run_dir: Path, options: dict, train_set, test_set, settings: dict) -> dict:
    """`train` then `evaluate`; `settings` (what differs from the paper) is recorded with the result."""
    trained = train(name, run_dir, options)
    result = evaluate(str(run_dir / "checkpoints" / "last.ckpt"), train_set, test_set, name)
    return {**result, **trained, "settings": settings}


def train(name: str, run_dir: Path, options: dict) -> dict:
    """`selfsup train name` with `options` (a YAML config) in its own process, resumed if it has a checkpoint:
    its wall-clock seconds and peak resident memory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "benchmark.yaml"
    config.write_text(yaml.safe_dump(options))
    command = [sys.executable, "-m", "selfsup.cli", "train", name, "--config", str(config), "--out", str(run_dir),
               "--no-progress"]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        command.append("--resume")
    start = time.time()
    process = subprocess.Popen(command)
    peak_kib = 0
    while process.poll() is None:
        peak_kib = max(peak_kib, high_water_mark(process.pid))
        time.sleep(0.5)
    if process.returncode != 0:
        raise SystemExit(f"training {name} failed; see the output above")
    return {"train_seconds": round(time.time() - start), "peak_rss_mib": round(peak_kib / 1024)}


def high_water_mark(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM, KiB). Not ru_maxrss from wait4: Linux keeps that
    across exec, so a child forked from this benchmark process would report this process's own size."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just exited
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def evaluate(checkpoint: str, train_set, test_set, name: str | None = None, backbone: str = SHARED["backbone"],
             backbone_kwargs: dict = NARROW, small_stem: bool = False) -> dict:
    """kNN and linear top-1 of the frozen encoder (`pixels`, `random` or a checkpoint) on 60k -> 10k;
    `backbone`, `backbone_kwargs` and `small_stem` build the random-init encoder."""
    start = time.time()
    torch.manual_seed(0)
    encoder = frozen_encoder(checkpoint, channels=train_set.channels, native_size=train_set.native_size,
                             backbone=backbone, backbone_kwargs=backbone_kwargs, small_stem=small_stem)
    train_x, train_y = extract_features(encoder, train_set, desc="train features")
    test_x, test_y = extract_features(encoder, test_set, desc="test features")
    knn = (knn_predict(train_x, train_y, test_x, k=200, temperature=0.07) == test_y).float().mean()
    linear = (torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy())) == test_y).float().mean()
    return {"method": name or checkpoint, "knn": round(float(knn), 4), "linear": round(float(linear), 4),
            "eval_seconds": round(time.time() - start)}


def write_table(rows: list[dict], steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every"))
    lines = [
        "# Fashion-MNIST: every method, one budget",
        "",
        f"Command: `python benchmarks/fashion_mnist.py --steps {steps}` on this 2-core CPU machine "
        f"(torch {torch.__version__}). Shared: {steps} steps, {shared}. Evaluation on the full 60k -> 10k "
        "split, frozen features: weighted kNN (k 200, T 0.07) and a linear probe (logistic regression).",
        "",
        "| method | kNN top-1 | linear top-1 | train time (s) | peak memory (MiB) | settings beyond the paper's |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = {"pixels": "raw pixels", "random": "random init (same encoder)"}.get(r["method"], r["method"])
        lines.append(f"| {label} | {r['knn']:.4f} | {r['linear']:.4f} | {r.get('train_seconds', '-')} | "
                     f"{r.get('peak_rss_mib', '-')} | {settings_text(r)} |")
    write_results(lines, rows, out)


def settings_text(row: dict) -> str:
    """A result's settings beyond the paper's as 'key value, ...', or '-'."""
    return ", ".join(f"{k} {v}" for k, v in row.get("settings", {}).items()) or "-"


def write_results(lines: list[str], rows: list[dict], out: Path) -> None:
    """The table's markdown `lines` to `out` (followed by OUT_reading.md beside it, when there is one: a reading
    written by hand, kept across reruns), the raw rows beside it as .json, and the table to stdout."""
    reading = out.with_name(f"{out.stem}_reading.md")
    if reading.is_file():
        lines = [*lines, "", reading.read_text().rstrip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
