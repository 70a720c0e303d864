"""TokenCut object discovery (`selfsup discover`): CorLoc on paste-scenes (synthetic) and trees (real) of small
self-supervised ViTs (MoCo v3, DINO, MAE, CAE), their random-init network and the centred-box baseline, TokenCut's
time per image, and figures.

    python benchmarks/discovery.py                   # writes results/discovery.md, .json and discovery_*.png

Each trained ViT is one run (TRAINED below, trained once by this script when RUNS/METHOD-vit holds no
checkpoint) on paste-scenes' 4,000 train images, labels unused: ViT-Tiny cut to 6 blocks, 8 px patches at 64 px,
built with dynamic_img_size so other input sides can be timed, one shared budget. Nothing is tuned on the evaluation images: TokenCut
runs with the paper's τ 0.2 and ε 1e-5, the encoder's own side (64 px) for the main rows, and one other side fixed
beforehand (112 px: 14 x 14 = 196 tokens, for trees' small crowns). Results are cached per run in RUNS/<row>/.
A "## Reading" section already in the output file is kept (it is written by hand, after looking at the figures).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from PIL import Image

from selfsup.eval.discover import discover

HERE = Path(__file__).parent
VIT = ["--backbone", "timm:vit_tiny_patch16_224", "--set",
       "backbone_kwargs={img_size: 64, patch_size: 8, depth: 6, dynamic_img_size: true}"]
SHARED = ["--data", "paste-scenes", "--image-size", "64", "--batch-size", "64", "--max-steps", "180", "--probe-every",
          "0", "--num-workers", "0", "--seed", "0", "--set", "optimizer=adamw", "--set", "lr=1e-3"]
# method -> its options beyond SHARED: one ViT, one budget; each method's paper loss settings with CPU-sized heads
TRAINED = {
    "mocov3": ["--set", "weight_decay=0.1", "--set", "temperature=0.2", "--set", "proj_hidden_dim=512", "--set",
               "pred_hidden_dim=512"],
    # the teacher held at τ_t 0.04 and ema 0.99 for a short run (vit_family.py's DINO_HEAD); 2 local 32 px crops
    "dino": ["--set", "weight_decay=0.05", "--set", "proj_hidden_dim=512", "--set", "proj_dim=128", "--set",
             "num_prototypes=1024", "--set", "n_local_crops=2", "--set", "local_crop_size=32", "--set",
             "teacher_temperature=0.04", "--set", "warmup_teacher_temperature=0.04", "--set", "ema_base=0.99",
             "--set", "freeze_prototypes_epochs=0.2"],
    "mae": ["--set", "weight_decay=0.05", "--set", "decoder_dim=128", "--set", "decoder_depth=2", "--set",
            "decoder_heads=4"],
    # CAE's own ViT settings (the mean patch token through the final norm, layer scale 0.1) on the shared ViT
    "cae": ["--set", "weight_decay=0.05", "--set", "backbone_kwargs={img_size: 64, patch_size: 8, depth: 6, "
            "dynamic_img_size: true, global_pool: avg, fc_norm: false, init_values: 0.1}"],
}
DATA = {"paste-scenes": ("test", "synthetic"), "trees": ("all", "real")}  # split used, label tag
SIDES = (32, 64, 80, 112)  # input sides timed: 16, 64, 100 and 196 tokens of 8 px
TIMED_IMAGES = 200
RANDOM_SEEDS = (0, 1, 2)  # random-init twins drawn: the row gives their mean and range


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/benchmark-discovery", help="the trained run and cached results")
    parser.add_argument("--out", default=str(HERE / "results" / "discovery.md"))
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    trained = {method: train(runs / f"{method}-vit", method) for method in TRAINED}
    checkpoint = trained["mocov3"]["checkpoint"]  # the random twins and the timing use MoCo v3's network
    rows = []
    for data, (split, tag) in DATA.items():
        for side in (64, 112) if data == "trees" else (64,):
            twins = [(trained["mocov3"]["checkpoint"], f"random-seed{seed}", True, seed) for seed in RANDOM_SEEDS]
            runs_of = [(t["checkpoint"], method, False, 0) for method, t in trained.items()
                       if side == 64 or method == "mocov3"]
            for source, name, random_init, seed in twins + runs_of:
                folder = runs / f"{data}-{side}px-{name}"
                result = cached(folder, lambda: discover(source, data, folder, split=split, image_size=side,
                                                         random_init=random_init, seed=seed, progress=False))
                rows.append({"data": data, "tag": tag, "side": side, "row": name.split("-seed")[0], **result})
    timing = [cached(runs / f"time-{side}px", lambda: discover(
        checkpoint, "paste-scenes", runs / f"time-{side}px", limit=TIMED_IMAGES, image_size=side, progress=False))
        for side in SIDES]
    figures = {f"discovery_{row['data']}_{row['side']}px_{row['row']}.png": Path(row["out"]) / "overlay.png"
               for row in rows if row["side"] == 64 and row["seed"] == 0
               and (row["data"] == "paste-scenes" or row["row"] in ("random", "mocov3"))}  # trees: ~0.6 MB each
    for name, source in figures.items():  # 256 colours: the photo-like trees figures drop from ~1.9 MB
        Image.open(source).convert("RGB").quantize(256).save(out.parent / name, optimize=True)
    write(rows, timing, trained, list(figures), out)


def train(run: Path, method: str) -> dict:
    """{"checkpoint", "command", "seconds", "config"}: `method` on the shared ViT and budget in its own process,
    unless the run already has last.ckpt."""
    checkpoint, record = run / "checkpoints" / "last.ckpt", run / "benchmark-train.json"
    command = ["selfsup", "train", method, *VIT, *SHARED, *TRAINED[method], "--out", str(run), "--no-progress"]
    if not checkpoint.is_file():
        start = time.time()
        if subprocess.run([sys.executable, "-m", "selfsup.cli", *command[1:]]).returncode != 0:
            raise SystemExit("training failed; see the output above")
        record.write_text(json.dumps({"seconds": round(time.time() - start)}))
    seconds = json.loads(record.read_text())["seconds"] if record.is_file() else None
    return {"checkpoint": str(checkpoint), "command": " ".join(_quoted(a) for a in command), "seconds": seconds,
            "config": yaml.safe_load((run / "config.yaml").read_text())["method_config"]}


def _quoted(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}") else arg


def cached(folder: Path, compute) -> dict:
    """metrics.json in `folder` if an earlier invocation finished it; otherwise compute it."""
    path = folder / "metrics.json"
    if path.is_file():
        return {**json.loads(path.read_text()), "out": str(folder)}
    result = compute()
    print(json.dumps(result), flush=True)
    return result


def _row(data: str, split: str, runs: list[dict]) -> str:
    """One table row: a single run, or the mean (and range) of the random-init twins' seeds."""
    r = runs[0]
    mean = {key: sum(x[key] for x in runs) / len(runs) for key in ("corloc", "mean_iou", "complete_graphs")}
    spread = (f" ({min(x['corloc'] for x in runs):.4f}-{max(x['corloc'] for x in runs):.4f})" if len(runs) > 1
              else "")
    seeds = f", seeds {', '.join(str(x['seed']) for x in runs)}: mean (range)" if len(runs) > 1 else ""
    return (f"| {data} | {r['tag']} | {split} ({r['n_with_boxes']}) | {r['encoder']}{seeds} | {r['side']} px "
            f"({r['tokens']}) | {mean['corloc']:.4f}{spread} | {mean['mean_iou']:.4f} | "
            f"{mean['complete_graphs']:.0f} of {r['n_images']} |")


def write(rows: list[dict], timing: list[dict], trained: dict, figures: list[str], out: Path) -> None:
    reading = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""
    table = ["| data | labels | split (images with boxes) | encoder | input side (tokens) | CorLoc | mean best IoU | "
             "complete graphs (no cut) |", "|---|---|---|---|---|---|---|---|"]
    for data, (split, _) in DATA.items():
        same = [r for r in rows if r["data"] == data]
        first = same[0]
        table.append(f"| {data} | {first['tag']} | {split} ({first['n_with_boxes']}) | centred box (half the side) | "
                     f"- | {first['corloc_centred_box']:.4f} | - | - |")
        for side in sorted({r["side"] for r in same}):
            table.append(_row(data, split, [r for r in same if r["side"] == side and r["random_init"]]))
            table.extend(_row(data, split, [r]) for r in same if r["side"] == side and not r["random_init"])
    lines = [
        "# TokenCut object discovery: CorLoc of small self-supervised ViTs",
        "",
        f"Command: `python benchmarks/discovery.py` (torch {torch.__version__}, OMP_NUM_THREADS=1: one intra-op "
        "thread for torch and for scipy's BLAS, on a 2-core CPU machine shared with other work).",
        "",
        "Trained ViTs: one network and one budget for every method, ViT-Tiny cut to 6 blocks (2.7M parameters), 8 px "
        "patches on 64 px images, 180 steps of 64 images (2.9 epochs of paste-scenes' train split, no labels), "
        "AdamW lr 1e-3 per 256 images, each method's own loss settings with CPU-sized heads. The random-init rows "
        "are MoCo v3's network with fresh weights (`--random-init --seed S`). Commands (OMP_NUM_THREADS=1, wall-clock "
        "on the shared machine) and resolved method configurations (RUN/config.yaml):",
        "",
        *[f"- {method}: `{t['command']}` ({t['seconds']} s); {json.dumps(t['config'])}"
          for method, t in trained.items()],
        "",
        "TokenCut as the paper: the last block's keys (heads concatenated, class token dropped), W_ij = 1 if "
        "cos > 0.2 else 1e-5, second-smallest generalised eigenvector of (D − W) y = λ D y, split at the mean, "
        "seed = argmax |y|, box around the seed's 4-connected component. CorLoc: IoU >= 0.5 with any ground-truth "
        "box; images without boxes are left out. Centred box: half the width and half the height, centred. "
        "paste-scenes: the 1,000 test scenes (64 px, one object each; synthetic labels). trees: all 170 crops "
        "(200 px, train and test splits: nothing here trains on trees; real hand-drawn crown boxes, ~5 per crop; "
        "crops without a tree are left out), resized to the encoder's side.",
        "",
        *table,
        "",
        f"## Time per image ({TIMED_IMAGES} paste-scenes test images, MoCo v3's ViT, one thread)",
        "",
        "Keys: the ViT's forward pass (batches of 32) per image; Ncut: affinity + `scipy.linalg.eigh` of the "
        "generalised problem + component + box, per image.",
        "",
        "| input side | tokens | keys (ms / image) | Ncut (ms / image) |",
        "|---|---|---|---|",
        *[f"| {t['image_size']} px | {t['tokens']} | {1000 * t['seconds_per_image']['keys']:.2f} | "
          f"{1000 * t['seconds_per_image']['ncut']:.2f} |" for t in timing],
        "",
        "## Figures",
        "",
        "The first 16 images of each set with TokenCut's mask (red tint), its box (red) and the ground-truth boxes "
        "(green, dashed); each title gives the best IoU:",
        "",
        *[f"- `{name}`" for name in figures],
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + ("\n## Reading" + reading if reading else ""))
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "timing": timing, "train": trained}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
