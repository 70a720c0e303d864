"""Remote-sensing pretraining at one shared budget: GLCNet, SaDL-CD and the multitask network next to SimCLR, BYOL
and random init, pretrained on `trees` and scored on the dense remote-sensing evaluations.

    python benchmarks/remote_sensing.py                               # every row, writes results/remote_sensing.md
    python benchmarks/remote_sensing.py --runs-only random simclr     # train/evaluate some rows, rewrite the table
    python benchmarks/remote_sensing.py --runs-only                   # rewrite the table from the cached rows

Every method pretrains in its own `selfsup train` process on trees' 138 train crops (real NEON airborne RGB tiles,
images only; the held-out region of the tiles is never seen), with the same encoder (dense.py's quarter-width
ResNet-18 with the CIFAR stem: an 8 x 8 last map at 64 px; GLCNet keeps its DeepLabv3+ decoder on it), batch, steps,
optimiser and seed (SHARED); each keeps its paper's loss settings except the CPU-sized heads in PER_METHOD, which the
table lists. Each encoder is then scored (selfsup's python entry points, defaults unless named):
- rs-mosaics mIoU: `eval segment --finetune --label-fraction 0.1` (encoder + FCN head, 300 steps of 8 on 40 of the
  400 train mosaics), the 5 texture classes (every pixel has one: background is not scored); synthetic labels;
- trees mIoU: the same fine-tuning on 10 % of trees' train crops (14), tree vs ground (both counted); the masks are
  the ellipses inscribed in the real hand-drawn boxes, so the labels are pseudo;
- rs-change F1 and IoU of the change class: `eval change` (frozen encoder, |f_A - f_B| + light decoder, 300 steps);
  synthetic change (crowns removed and added) on the real tiles;
- rs-mosaics at 1 % of the labels (`--finetune --label-fraction 0.01`: 4 mosaics) and with the frozen 1x1-conv probe
  (`eval segment`, every train mosaic, 20 epochs): the scarce-label and the frozen-feature ends of the same task.
A row whose method is not registered (yet) is skipped with a printed line. Finished pieces are cached in
RUNS/NAME/{train,mosaics,trees,change}/result.json: rerun the same command after an interruption (a half-trained
method resumes from its last checkpoint). A '## Reading' section already in the output file is kept.
"""

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from dense import ENCODER
from dense import PER_METHOD as DENSE_SETTINGS
from fashion_mnist import cached, settings_text, train, write_results

from selfsup.eval.change import evaluate_change
from selfsup.eval.segment import evaluate_segment
from selfsup.methods import METHODS

HERE = Path(__file__).parent
SIZE, BATCH, STEPS = 64, 32, 300
SHARED = {"data": "trees", **ENCODER, "image_size": SIZE, "batch_size": BATCH, "optimizer": "adamw", "lr": 1e-3,
          "weight_decay": 1e-4, "warmup_fraction": 0.05, "seed": 0, "checkpoint_every": 50}
LABEL_FRACTION, SCARCE_FRACTION = 0.1, 0.01
# row -> settings beyond the paper's (None: the encoder at random init). SimCLR and BYOL as dense.py runs them.
PER_METHOD: dict[str, dict | None] = {
    "random": None,
    "simclr": DENSE_SETTINGS["simclr"],
    "byol": DENSE_SETTINGS["byol"],
    # DeepLabv3+'s decoder runs at the stride-4 stage, which the CIFAR stem leaves at full resolution (64 x 64): 64
    # channels instead of 256 keep its step at ~2.7x SimCLR's CPU time (256: ~20x)
    "glcnet": {"decoder_channels": 64},
    "sadlcd": {},
    "rs-multitask": {},
}
EVALS = ("mosaics", "trees", "change", "mosaics-1pct", "mosaics-frozen")
REQUIRED = EVALS[:3]  # a row is listed once these are done (rows cached before the last two existed show '-')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-only", nargs="*", default=list(PER_METHOD), choices=list(PER_METHOD),
                        help="rows to train/evaluate now (the table lists every cached row; none: the table only)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"pretraining steps per method [{STEPS}]")
    parser.add_argument("--runs", default="runs/benchmark-remote-sensing", help="run folders and cached results")
    parser.add_argument("--out", default=str(HERE / "results" / "remote_sensing.md"))
    args = parser.parse_args()
    runs = Path(args.runs)
    for name in args.runs_only:
        if name != "random" and name not in METHODS:
            print(f"remote_sensing: skipping {name}: no method of that name is registered in selfsup.methods")
            continue
        run_row(name, runs / name, args.steps)
    rows = [row for name in PER_METHOD if (row := read_row(name, runs / name)) is not None]
    write_table(rows, args.steps, Path(args.out))


def run_row(name: str, folder: Path, steps: int) -> None:
    """Pretrain `name` (unless 'random') and evaluate it three times, each piece cached in its own folder."""
    if name == "random":
        checkpoint, options = "random", {**ENCODER, "image_size": SIZE}
    else:
        settings = PER_METHOD[name]
        cached(folder / "train", partial(pretrain, name, folder, {**SHARED, **settings, "max_steps": steps}, settings))
        checkpoint, options = str(folder / "checkpoints" / "last.ckpt"), {}
    for key in EVALS:
        cached(folder / key, partial(evaluate, key, checkpoint, str(folder / f"{key}.json"), options))


def pretrain(name: str, folder: Path, options: dict, settings: dict) -> dict:
    return {**train(name, folder, options), "settings": settings}


def evaluate(key: str, checkpoint: str, out: str, options: dict) -> dict:
    """One of EVALS on the encoder `checkpoint`; `options` build the random-init encoder."""
    common = {"out": out, "progress": False, **options}
    if key == "change":
        return evaluate_change(checkpoint, "rs-change", **common)
    data = "trees" if key == "trees" else "rs-mosaics"  # the result's tag: trees' ellipse maps are 'pseudo'
    if key == "mosaics-frozen":
        return evaluate_segment(checkpoint, data, **common)
    fraction = SCARCE_FRACTION if key == "mosaics-1pct" else LABEL_FRACTION
    return evaluate_segment(checkpoint, data, finetune=True, label_fraction=fraction, **common)


def read_row(name: str, folder: Path) -> dict | None:
    """The row's cached pieces, or None before its REQUIRED evaluations are all done."""
    pieces = {key: folder / key / "result.json" for key in ("train", *EVALS)}
    if not all(pieces[key].is_file() for key in REQUIRED):
        return None
    got = {key: json.loads(path.read_text()) for key, path in pieces.items() if path.is_file()}
    trained = got.get("train", {})
    return {"row": name, "train_seconds": trained.get("train_seconds"), "peak_rss_mib": trained.get("peak_rss_mib"),
            "settings": trained.get("settings", {}),
            "mosaics_miou": got["mosaics"]["miou"], "mosaics_tag": got["mosaics"]["tag"],
            "trees_miou": got["trees"]["miou"], "trees_tree_iou": got["trees"]["iou"]["tree"],
            "trees_tag": got["trees"]["tag"], "change_f1": got["change"]["f1"], "change_iou": got["change"]["iou"],
            "change_tag": got["change"]["tag"],
            "scarce_miou": got["mosaics-1pct"]["miou"] if "mosaics-1pct" in got else None,
            "frozen_miou": got["mosaics-frozen"]["miou"] if "mosaics-frozen" in got else None,
            "eval_seconds": round(sum(got[key]["seconds"] for key in EVALS if key in got))}


def write_table(rows: list[dict], steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every"))
    tags = {key: rows[0][f"{key}_tag"] if rows else "-" for key in REQUIRED}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        "# Remote sensing: dense pretraining at one budget",
        "",
        f"Command: `python benchmarks/remote_sensing.py --steps {steps}` (rows as listed by `--runs-only`) on this "
        f"2-core CPU machine (torch {torch.__version__}), each training in its own process at OMP_NUM_THREADS=1. "
        f"Pretraining on trees' 138 train crops (real airborne RGB, no labels): {steps} steps, {shared}.",
        "",
        f"- rs-mosaics ({tags['mosaics']} labels): encoder + FCN head fine-tuned on {LABEL_FRACTION:.0%} of the 400 "
        "train mosaics (300 steps of 8), mIoU over the 120 test mosaics and the 5 texture classes (every pixel "
        "has one: background is not scored);",
        f"- trees ({tags['trees']} labels: ellipses inscribed in the real hand-drawn boxes): the same fine-tuning on "
        f"{LABEL_FRACTION:.0%} of the 138 train crops, mIoU of tree and ground on the 32 held-out crops, and the tree "
        "IoU;",
        f"- rs-change ({tags['change']} change on real tiles): frozen encoder, siamese |f_A - f_B| + light decoder, "
        "300 steps; F1 and IoU of the change class on the 132 test pairs;",
        f"- rs-mosaics at {SCARCE_FRACTION:.0%} of the labels (the same fine-tuning on 4 mosaics) and with the frozen "
        "1x1-conv probe on every train mosaic (20 epochs).",
        "",
        f"| row | rs-mosaics mIoU ({tags['mosaics']}) | trees mIoU ({tags['trees']}) | trees tree IoU | rs-change F1 "
        f"({tags['change']}) | rs-change IoU | rs-mosaics mIoU, {SCARCE_FRACTION:.0%} labels | rs-mosaics mIoU, "
        "frozen probe | pretrain time (s) | eval time (s) | settings beyond the paper's |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {'random init (same encoder)' if r['row'] == 'random' else r['row']} | {fmt(r['mosaics_miou'])} | "
          f"{fmt(r['trees_miou'])} | {fmt(r['trees_tree_iou'])} | {fmt(r['change_f1'])} | {fmt(r['change_iou'])} | "
          f"{fmt(r['scarce_miou'])} | {fmt(r['frozen_miou'])} | "
          f"{r['train_seconds'] if r['train_seconds'] is not None else '-'} | {r['eval_seconds']} | "
          f"{settings_text(r)} |" for r in rows],
    ]
    if out.is_file() and "\n## Reading" in (old := out.read_text()):  # written by hand: kept across reruns
        lines += ["", "## Reading" + old.split("\n## Reading", 1)[1].rstrip()]
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
