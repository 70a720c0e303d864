"""What the online kNN probe (train/probe.py) costs: a short SimCLR run with the demo's recipe on Fashion-MNIST
(half-width ResNet-18, batch 256, 28 px), probed every `--every` steps, against the same run without the probe.

    .venv/bin/python benchmarks/probe_overhead.py              # 30 steps, a probe every 10: about 40 s at 1 thread
    .venv/bin/python benchmarks/probe_overhead.py --threads 2 --steps 60 --every 20

Writes benchmarks/results/probe_overhead.md and .json: the probe's own time (2,000 train + 1,000 test images through
the frozen encoder, then the kNN) as a share of the probed run's wall time, per probe and per training step, and
what that makes the default schedule cost (a probe every tenth of the run, at least 100 steps apart: at most one
probe per 100 steps). The weights of the two runs are compared too: the probe must not change training.
"""

import argparse
import contextlib
import io
import json
import re
import tempfile
import time
from pathlib import Path

import torch
import yaml

from selfsup.checkpoints import read_checkpoint
from selfsup.train.probe import DEFAULT_MIN_EVERY, PROBE_TEST, PROBE_TRAIN
from selfsup.train.run import train

HERE = Path(__file__).parent
RECIPE = HERE.parent / "configs" / "demo-fashion-mnist.yaml"


def timed_run(options: dict, out: Path) -> tuple[float, str]:
    """(wall seconds, what the run printed)."""
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        train("simclr", options, out=str(out), progress=False)
    return time.perf_counter() - start, printed.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = {**yaml.safe_load(RECIPE.read_text()), "data": args.data, "max_steps": args.steps, "num_workers": 0}
    with tempfile.TemporaryDirectory() as tmp:
        probed_s, printed = timed_run({**recipe, "probe_every": args.every}, Path(tmp) / "probed")
        plain_s, _ = timed_run({**recipe, "probe_every": 0}, Path(tmp) / "plain")
        a, b = (read_checkpoint(Path(tmp) / name / "checkpoints" / "last.ckpt")["state_dict"]
                for name in ("probed", "plain"))
        same = all(torch.equal(a[k], b[k]) for k in b)
    found = re.search(r"online kNN top-1 ([\d.]+) at step \d+ \((.*?); the probe took ([\d.]+)s", printed)
    top1, sample, probe_s = float(found.group(1)), found.group(2), float(found.group(3))
    probes = args.steps // args.every + (args.steps % args.every > 0)
    per_probe = probe_s / probes
    per_step = (probed_s - probe_s) / args.steps
    default_share = per_probe / (DEFAULT_MIN_EVERY * per_step + per_probe)
    result = {"steps": args.steps, "every": args.every, "probes": probes, "threads": args.threads, "data": args.data,
              "batch_size": recipe["batch_size"], "probe_train": PROBE_TRAIN, "probe_test": PROBE_TEST,
              "probed_run_s": round(probed_s, 1), "plain_run_s": round(plain_s, 1), "probe_s": probe_s,
              "probe_share": round(probe_s / probed_s, 4), "per_probe_s": round(per_probe, 2),
              "per_step_s": round(per_step, 3), "probe_in_steps": round(per_probe / per_step, 2),
              "default_schedule_max_share": round(default_share, 4), "last_top1": top1, "same_weights": same}
    (HERE / "results" / "probe_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Online kNN probe: its cost", "",
        f"`python benchmarks/probe_overhead.py --steps {args.steps} --every {args.every} --threads {args.threads}` "
        f"on this project's CPU machine ({args.threads} torch thread{'s' * (args.threads > 1)}): SimCLR with the "
        f"demo's recipe (`configs/demo-fashion-mnist.yaml`: half-width ResNet-18, batch {recipe['batch_size']}, "
        f"{args.data}), {args.steps} steps, probed every {args.every} steps ({probes} probes of {sample}).", "",
        "| | seconds |", "|---|---|",
        f"| the probed run, wall | {probed_s:.1f} |",
        f"| the same run without the probe, wall | {plain_s:.1f} |",
        f"| the probes' own time ({probes} probes) | {probe_s:.1f} ({probe_s / probed_s:.1%} of the probed run) |",
        f"| one probe | {per_probe:.2f} (= {per_probe / per_step:.1f} training steps) |",
        f"| one training step (probed run, probes taken out) | {per_step:.3f} |", "",
        f"This short run probes every {args.every} steps to have several probes to time; by default the probe runs "
        f"every tenth of the run and at least {DEFAULT_MIN_EVERY} steps apart, so it costs at most one probe per "
        f"{DEFAULT_MIN_EVERY} steps: **{default_share:.1%}** of a run with this recipe (e.g. the demo's 600 steps: 6 "
        "probes). The share goes with the time of a probe over that of a step: half the batch, about twice the share.",
        "",
        f"The probed and the unprobed run end with {'bitwise the same' if same else 'DIFFERENT'} weights: the probe "
        f"works in eval mode, without gradients, and draws nothing from the training RNG. Last probe: kNN top-1 "
        f"{top1:.4f}.",
    ]
    (HERE / "results" / "probe_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
