"""Masked image modelling on Fashion-MNIST with one small ViT: SiT, GMML alone, SiT's contrastive part alone,
MAE and SimMIM, each pretrained for the same budget; frozen kNN / linear top-1, and end-to-end fine-tuning
with 10% of the labels next to the same ViT fine-tuned from random init (the SiT paper's comparison).
Also draws the reconstruction grids and t-SNE plots of the test set.

    python benchmarks/masked_fashion_mnist.py                     # writes results/masked_fashion_mnist.md
    python benchmarks/masked_fashion_mnist.py --methods sit gmml sit-contrastive   # SiT's ablation
    python benchmarks/masked_fashion_mnist.py --steps 100 --finetune-steps 50 --methods sit

Finished pieces are cached in RUNS/*/result.json (and finetune-10pct/result.json): run the same command
again after an interruption and only the missing ones run.
"""

import argparse
from functools import partial
from pathlib import Path

import torch
from fashion_mnist import cached, evaluate, settings_text, train_and_evaluate, write_results

from selfsup.data import open_labeled
from selfsup.eval.finetune import finetune
from selfsup.eval.plots import plot_reconstructions, plot_tsne

HERE = Path(__file__).parent
VIT = "timm:vit_tiny_patch16_224"
# ViT-Tiny's width at half its depth, 7 px patches: 16 + 1 tokens (4 px patches, 49 tokens, cost 3x as much per step)
VIT_KWARGS = {"img_size": 28, "patch_size": 7, "depth": 6}
SHARED = {"data": "fashion-mnist", "backbone": VIT, "backbone_kwargs": VIT_KWARGS, "batch_size": 128,
          "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.05, "seed": 0,
          "checkpoint_every": 100}
# The methods that never train the class token use the mean patch token (their defaults do too).
AVG_POOL = {"backbone_kwargs": {**VIT_KWARGS, "global_pool": "avg"}}
# run name -> (method, what differs from the paper besides SHARED): CPU-sized heads and decoder.
RUNS: dict[str, tuple[str, dict]] = {
    "sit": ("sit", {"recon_hidden_dim": 512, "proj_hidden_dim": 512, "proj_dim": 128}),
    "gmml": ("gmml", {"recon_hidden_dim": 512, **AVG_POOL}),
    "sit-contrastive": ("sit", {"recon_weight": 0.0, "proj_hidden_dim": 512, "proj_dim": 128}),
    "mae": ("mae", {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4, **AVG_POOL}),
    # on a 4 x 4 patch grid, 2 x 2 mask units would leave only 4 units to mask
    "simmim": ("simmim", {"mask_unit": 1, **AVG_POOL}),
}
RECONSTRUCTS = ("sit", "gmml", "mae", "simmim")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=[n for n in RUNS if n != "sit-contrastive"], choices=list(RUNS),
                        help="default: all but sit-contrastive, the ablation (another 20 minutes on 2 cores)")
    parser.add_argument("--steps", type=int, default=600, help="pretraining steps per method [600]")
    parser.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps with 10%% labels [300]")
    parser.add_argument("--runs", default="runs/benchmark-masked-fashion-mnist")
    parser.add_argument("--out", default=str(HERE / "results" / "masked_fashion_mnist.md"))
    args = parser.parse_args()
    runs, figures = Path(args.runs), Path(args.out).parent
    train_set, test_set = open_labeled("fashion-mnist")
    encoder = {"backbone": VIT, "backbone_kwargs": VIT_KWARGS}

    rows = [cached(runs / "random", partial(evaluate, "random", train_set, test_set, **encoder))]
    rows[0]["finetune"] = fine_tuned("random", runs / "random", args.finetune_steps)
    plot_tsne("random", figures / "tsne_vit_random.png", n=2000, **encoder)
    for name in args.methods:
        method, settings = RUNS[name]
        options = {**SHARED, **settings, "max_steps": args.steps}
        row = cached(runs / name, partial(train_and_evaluate, method, runs / name, options, train_set, test_set,
                                          settings))
        checkpoint = str(runs / name / "checkpoints" / "last.ckpt")
        rows.append({**row, "method": name, "finetune": fine_tuned(checkpoint, runs / name, args.finetune_steps)})
        if name in RECONSTRUCTS:
            plot_reconstructions(checkpoint, figures / f"reconstructions_{name}.png", n=10)
        if name == "sit":
            plot_tsne(checkpoint, figures / "tsne_vit_sit.png", n=2000)
    write_table(rows, args.steps, args.finetune_steps, Path(args.out))


def fine_tuned(checkpoint: str, run_dir: Path, steps: int) -> float:
    """Top-1 on the test split after fine-tuning end to end on a class-balanced 10% of the train labels."""
    folder = run_dir / "finetune-10pct"

    def run() -> dict:
        return finetune(checkpoint, label_fraction=0.1, max_steps=steps, batch_size=128, optimizer="adamw", lr=1e-3,
                        weight_decay=0.05, backbone=VIT, backbone_kwargs=VIT_KWARGS, out=str(folder), progress=False)

    return cached(folder, run)["top1"]


def write_table(rows: list[dict], steps: int, finetune_steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every"))
    lines = [
        "# Fashion-MNIST: masked image modelling on a small ViT",
        "",
        f"Command: `python benchmarks/masked_fashion_mnist.py --steps {steps} --finetune-steps {finetune_steps}` on "
        f"this 2-core CPU machine (torch {torch.__version__}). Pretraining: {steps} steps, {shared}. Frozen "
        "features on the full 60k -> 10k split: weighted kNN (k 200, T 0.07) and a linear probe. Fine-tuning: "
        f"{finetune_steps} steps end to end on a class-balanced 10% of the train labels (6000 images), AdamW lr "
        "1e-3, wd 0.05, batch 128, crop + flip; top-1 on the 10k test images.",
        "",
        "| encoder | kNN top-1 | linear top-1 | fine-tuned, 10% labels | pretrain time (s) | settings beyond the "
        "paper's |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = "random init (same ViT)" if r["method"] == "random" else r["method"]
        lines.append(f"| {label} | {r['knn']:.4f} | {r['linear']:.4f} | {r['finetune']:.4f} | "
                     f"{r.get('train_seconds', '-')} | {settings_text(r)} |")
    lines += ["", "Figures beside this file: `reconstructions_NAME.png` (rows: test image, corrupted or masked, "
              "restored) and `tsne_vit_random.png` / `tsne_vit_sit.png`."]
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
