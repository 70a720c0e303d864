"""Object-level pretraining against its image-level bases, one shared budget: DetCon-S, DetCon-B, DetCo and R2O
next to BYOL, SimCLR and random init, on the dense evaluations of `selfsup eval segment` and `selfsup eval detect`.

    python benchmarks/dense.py                       # writes results/dense.md and dense.json
    python benchmarks/dense.py --methods byol detcon-b --steps 100

Every method pretrains in its own `selfsup train` process on paste-scenes' 4,000 train images (images only), with
the same encoder (quarter-width ResNet-18 with the CIFAR stem: an 8 x 8 last map at 64 px, so the masks pool
different cells), batch, steps, optimiser and seed (SHARED); each keeps its paper's loss settings, except the
CPU-sized heads and the few settings in PER_METHOD, which the table lists. Each frozen encoder is then evaluated:
- probe mIoU: the frozen 1x1-conv probe on paste-scenes (synthetic labels), background counted;
- fine-tune mIoU: encoder + FCN head trained on 10 % of paste-scenes' train labels (synthetic);
- AP50 / AP on trees (real boxes, hand-drawn): FCOS on the encoder, 100 steps (eval detect's defaults).

Interrupted? Run the same command again: finished pieces are read back from RUNS/*/*.json and a half-trained
method resumes from its last checkpoint.
"""

import argparse
from pathlib import Path

import torch
from fashion_mnist import cached, settings_text, train, write_results

from selfsup.eval.detect import evaluate_detect
from selfsup.eval.segment import evaluate_segment

HERE = Path(__file__).parent
NARROW = {"channels": [16, 32, 64, 128], "stem_width": 16}
ENCODER = {"backbone": "resnet18", "backbone_kwargs": NARROW, "small_stem": True}
SHARED = {"data": "paste-scenes", **ENCODER, "image_size": 64, "batch_size": 64, "optimizer": "adamw", "lr": 1e-3,
          "weight_decay": 1e-4, "warmup_fraction": 0.05, "seed": 0, "checkpoint_every": 50}
# CPU-sized heads for every method (512 hidden, as fashion_mnist.py), crops of 0.2-1 (at 64 px a 0.08 crop is a
# 18 px patch, and a DetCon mask must appear in both views), and the EMA rate a few hundred steps need.
HEADS = {"proj_hidden_dim": 512, "crop_min_scale": 0.2}
PER_METHOD: dict[str, dict] = {
    "simclr": {**HEADS, "temperature": 0.2},
    "byol": {**HEADS, "pred_hidden_dim": 512, "ema_base": 0.99},
    "detcon-s": {**HEADS},
    "detcon-b": {**HEADS, "pred_hidden_dim": 512, "ema_base": 0.99},
    "r2o": {**HEADS, "pred_hidden_dim": 512},
    "detco": {**HEADS, "queue_size": 4096},
}
METHODS = tuple(PER_METHOD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per method [200: 3.2 epochs]")
    parser.add_argument("--runs", default="runs/benchmark-dense", help="run folders and cached results")
    parser.add_argument("--out", default=str(HERE / "results" / "dense.md"))
    args = parser.parse_args()
    runs = Path(args.runs)
    rows = [evaluate_all("random", runs / "random", "random init (same encoder)")]
    for name in args.methods:
        options = {**SHARED, **PER_METHOD[name], "max_steps": args.steps}
        run_dir = runs / name
        trained = cached(run_dir / "train", lambda name=name, options=options, run_dir=run_dir: {
            **train(name, run_dir, options), "settings": PER_METHOD[name]})
        rows.append({**trained, **evaluate_all(str(run_dir / "checkpoints" / "last.ckpt"), run_dir, name)})
    write_table(rows, args.steps, Path(args.out))


def evaluate_all(checkpoint: str, folder: Path, name: str) -> dict:
    """Probe mIoU, 10 % fine-tune mIoU (paste-scenes) and AP50 / AP (trees) of one encoder, each cached."""
    options = {**ENCODER, "progress": False} if checkpoint == "random" else {"progress": False}
    probe = cached(folder / "segment", lambda: evaluate_segment(checkpoint, "paste-scenes",
                                                                out=str(folder / "segment.json"), **options))
    tuned = cached(folder / "segment-finetune", lambda: evaluate_segment(
        checkpoint, "paste-scenes", finetune=True, out=str(folder / "segment-finetune.json"), **options))
    boxes = cached(folder / "detect", lambda: evaluate_detect(checkpoint, "trees", out=str(folder / "detect.json"),
                                                              **options))
    return {"method": name, "objectness_iou": probe["objectness_iou"], "probe_miou": probe["miou"],
            "probe_fg_iou": probe["foreground_iou"], "finetune_miou": tuned["miou"],
            "finetune_fg_iou": tuned["foreground_iou"], "ap50": boxes["ap50"], "ap": boxes["ap"],
            "eval_seconds": round(probe["seconds"] + tuned["seconds"] + boxes["seconds"])}


def write_table(rows: list[dict], steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every"))
    lines = [
        "# Object-level pretraining against its image-level bases: dense probes, one budget",
        "",
        f"Command: `python benchmarks/dense.py --steps {steps}` on this 2-core CPU machine (torch {torch.__version__})."
        f" Pretraining on paste-scenes' 4,000 train images (no labels): {steps} steps, {shared}.",
        "",
        "## paste-scenes (synthetic labels: Fashion-MNIST objects pasted on real photos)",
        "",
        "Frozen probes on the last map (8 x 8 at 64 px): a 1x1 conv, Adam 1e-2, 20 epochs, on the 10 classes + "
        "background (mIoU, background counted; foreground IoU = any object predicted as any object), and a second "
        "1x1 conv on object-vs-background labels (objectness IoU: are the objects found, whatever their class?). "
        "Fine-tune: encoder + FCN head on 10 % of the train labels (400 images), 300 steps of 8.",
        "",
        "| method | objectness IoU (probe) | probe mIoU | probe foreground IoU | 10 % fine-tune mIoU | fine-tune "
        "foreground IoU | labels | train time (s) | settings beyond the paper's |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['method']} | {r['objectness_iou']:.4f} | {r['probe_miou']:.4f} | {r['probe_fg_iou']:.4f} | "
          f"{r['finetune_miou']:.4f} | {r['finetune_fg_iou']:.4f} | synthetic | {r.get('train_seconds', '-')} | "
          f"{settings_text(r)} |" for r in rows],
        "",
        "## trees (real labels: DeepForest's hand-drawn tree boxes, held-out region)",
        "",
        "FCOS on the encoder (FPN 128 ch), fine-tuned 100 steps of 4 on the 138 train crops (200 px), AP50 and AP "
        "(torchmetrics) on the 32 test crops (185 boxes).",
        "",
        "| method | AP50 | AP | labels |",
        "|---|---|---|---|",
        *[f"| {r['method']} | {r['ap50']:.4f} | {r['ap']:.4f} | real |" for r in rows],
    ]
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
