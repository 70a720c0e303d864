"""Self-distillation and masked modelling at one shared budget on Fashion-MNIST: DINO (ViT and ResNet), MoBY,
CAE, SparK next to MoCo v3, SiT, MAE and each network at random init. Frozen kNN / linear top-1 on the full
60k -> 10k split, fine-tuning with 10% of the labels for the masked models and their random-init networks, and the
reconstruction grids of CAE and SparK.

    python benchmarks/vit_family.py                            # writes results/vit_family.md
    python benchmarks/vit_family.py --runs-only dino-vit cae   # train/evaluate some rows, then rewrite the table
    python benchmarks/vit_family.py --runs-only                # rewrite the table from the cached rows

Shared by every row: 300 steps of batch 128 (0.64 epoch), AdamW, warm-up 5 % then cosine, seed 0, 28 px grey
images. Each network keeps the optimiser settings its earlier recorded runs used (ViT: those of
masked_fashion_mnist.py; ResNet and Swin: those of the SparK and MoBY runs); each method keeps its paper's loss
settings except CPU-sized heads and what the row's settings column lists. Finished pieces are cached in
RUNS/NAME/result.json (and finetune-10pct/result.json): rerun the same command after an interruption.
"""

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from fashion_mnist import cached, evaluate, settings_text, train_and_evaluate, write_results
from masked_fashion_mnist import AVG_POOL, VIT, VIT_KWARGS

from selfsup.data import open_labeled
from selfsup.eval.finetune import finetune
from selfsup.eval.plots import plot_reconstructions
from selfsup.methods.moby import SWIN_T, small_swin
from selfsup.train.recipes import QUARTER_WIDTH

HERE = Path(__file__).parent
STEPS, BATCH = 300, 128
SHARED = {"data": "fashion-mnist", "batch_size": BATCH, "optimizer": "adamw", "warmup_fraction": 0.05, "seed": 0,
          "checkpoint_every": 100, "probe_every": 0}
# network -> how it is built and optimised (lr is scaled by B/256 by the trainer)
NETWORKS: dict[str, dict] = {
    "ViT": {"backbone": VIT, "backbone_kwargs": VIT_KWARGS, "lr": 1e-3, "weight_decay": 0.05},
    "ResNet": {"backbone": "resnet18", "backbone_kwargs": QUARTER_WIDTH, "small_stem": True, "lr": 2e-3,
               "weight_decay": 0.05},
    "Swin": {"backbone": SWIN_T, "backbone_kwargs": small_swin(), "lr": 2e-3, "weight_decay": 0.05},
}
NETWORK_TEXT = {
    "ViT": "timm ViT-Tiny, 6 blocks, 7 px patches (16 + 1 tokens, 2.7M parameters)",
    "ResNet": "quarter-width ResNet-18, CIFAR stem (0.7M parameters)",
    "Swin": "2-stage Swin, patch 2, window 7 (MoBY's CPU default, 0.3M parameters)",
}
DINO_HEAD = {"proj_hidden_dim": 512, "proj_dim": 128, "num_prototypes": 1024, "n_local_crops": 2,
             "freeze_prototypes_epochs": 0.2,
             # the recorded 234-step run at τ_t 0.04 -> 0.07 collapsed to a uniform teacher (fashion_mnist_dino.md):
             # the teacher is kept at the sharper end of the paper's range for the whole short run
             "teacher_temperature": 0.04, "warmup_teacher_temperature": 0.04, "ema_base": 0.99}
# row -> (method, network, settings beyond the paper's); "random" rows are the network at random init
ROWS: dict[str, tuple[str, str, dict]] = {
    "random-vit": ("random", "ViT", {}),
    "mocov3": ("mocov3", "ViT", {"temperature": 0.2, "proj_hidden_dim": 512, "pred_hidden_dim": 512, "proj_dim": 128,
                                 "ema_base": 0.99, "crop_min_scale": 0.4}),
    # 14 px local crops: two by two 7 px patches (the 96/224 rule would give 12 px, which 7 px patches do not tile)
    "dino-vit": ("dino", "ViT", {**DINO_HEAD, "local_crop_size": 14,
                                 "backbone_kwargs": {**VIT_KWARGS, "dynamic_img_size": True}}),
    "sit": ("sit", "ViT", {"recon_hidden_dim": 512, "proj_hidden_dim": 512, "proj_dim": 128}),
    "mae": ("mae", "ViT", {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4, **AVG_POOL}),
    # the mean patch token through the final norm, layer scale 0.1: CAE's own ViT settings on the shared ViT
    "cae": ("cae", "ViT", {"backbone_kwargs": {**VIT_KWARGS, "global_pool": "avg", "fc_norm": False,
                                               "init_values": 0.1}}),
    "random-resnet": ("random", "ResNet", {}),
    "dino-resnet": ("dino", "ResNet", DINO_HEAD),
    "spark": ("spark", "ResNet", {}),
    "random-swin": ("random", "Swin", {}),
    "moby": ("moby", "Swin", {"crop_min_scale": 0.4}),
}
FINETUNED = ("random-vit", "sit", "mae", "cae", "random-resnet", "spark")  # the masked models and their networks
RECONSTRUCTS = ("cae", "spark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-only", nargs="*", default=list(ROWS), choices=list(ROWS),
                        help="rows to train/evaluate now (the table lists every cached row; none: the table only)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps with 10%% labels [300]")
    parser.add_argument("--runs", default="runs/benchmark-vit-family")
    parser.add_argument("--out", default=str(HERE / "results" / "vit_family.md"))
    args = parser.parse_args()
    runs, figures = Path(args.runs), Path(args.out).parent
    train_set, test_set = open_labeled("fashion-mnist") if args.runs_only else (None, None)
    for name in args.runs_only:
        run_row(name, runs / name, train_set, test_set, args.finetune_steps, figures)
    rows = [{**cached_row, "row": name} for name in ROWS
            if (cached_row := read(runs / name / "result.json")) is not None]
    for row in rows:
        row["finetune"] = (read(runs / row["row"] / "finetune-10pct" / "result.json") or {}).get("top1")
    write_table(rows, args.finetune_steps, Path(args.out))


def run_row(name: str, folder: Path, train_set, test_set, finetune_steps: int, figures: Path) -> None:
    method, network, settings = ROWS[name]
    build = NETWORKS[network]
    encoder = {k: build[k] for k in ("backbone", "backbone_kwargs", "small_stem") if k in build}
    if method == "random":
        cached(folder, partial(evaluate, "random", train_set, test_set, name, **encoder))
        checkpoint = "random"
    else:
        options = {**SHARED, **build, **settings, "max_steps": STEPS}
        cached(folder, partial(train_and_evaluate, method, folder, options, train_set, test_set, settings))
        checkpoint = str(folder / "checkpoints" / "last.ckpt")
    if name in FINETUNED:
        cached(folder / "finetune-10pct", partial(
            finetune, checkpoint, label_fraction=0.1, max_steps=finetune_steps, batch_size=BATCH, optimizer="adamw",
            lr=1e-3, weight_decay=0.05, out=str(folder / "finetune-10pct"), progress=False,
            **(encoder if checkpoint == "random" else {})))
    if name in RECONSTRUCTS:
        plot_reconstructions(checkpoint, figures / f"reconstructions_{name}.png", n=10)


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_table(rows: list[dict], finetune_steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every", "probe_every"))
    lines = [
        "# Fashion-MNIST: self-distillation and masked modelling at one budget",
        "",
        f"Command: `python benchmarks/vit_family.py` on this 2-core CPU machine (torch {torch.__version__}), each "
        f"training in its own process at 1 torch thread. Pretraining: {STEPS} steps, {shared}; labels are **real** "
        "(Fashion-MNIST). Frozen features on the full 60k -> 10k split: weighted kNN (k 200, T 0.07) and a linear "
        f"probe. Fine-tuning: {finetune_steps} steps end to end on a class-balanced 10% of the train labels, AdamW "
        "lr 1e-3, wd 0.05, batch 128; top-1 on the 10k test images. Networks (optimiser lr per 256 images, wd):",
        "",
        *[f"- {net}: {NETWORK_TEXT[net]}; lr {b['lr']}, wd {b['weight_decay']}" for net, b in NETWORKS.items()],
        "",
        "| row | network | kNN top-1 | linear top-1 | fine-tuned, 10% labels | pretrain time (s) | settings beyond "
        "the paper's |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        _, network, _ = ROWS[r["row"]]
        finetuned = f"{r['finetune']:.4f}" if r.get("finetune") is not None else "-"
        lines.append(f"| {r['row']} | {network} | {r['knn']:.4f} | {r['linear']:.4f} | {finetuned} | "
                     f"{r.get('train_seconds', '-')} | {settings_text(r)} |")
    lines += ["", "Figures beside this file: `reconstructions_cae.png`, `reconstructions_spark.png` (rows: test "
              "image, masked, restored)."]
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
