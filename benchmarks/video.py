"""Video evaluation of ConST-CL (issue 21): clip-label linear probes and first-frame mask propagation J for ConST-CL,
its global-only ablation, SimCLR applied frame by frame and random init, on `moving-objects` (synthetic labels).

    OMP_NUM_THREADS=1 python benchmarks/video.py                 # writes results/video.md, video.json, video.png
    OMP_NUM_THREADS=1 python benchmarks/video.py --steps 2000 --clips 100   # a longer budget

Pretraining, each in its own `selfsup train` process, on the 400 train clips of moving-objects (labels unused):
- ConST-CL (`selfsup train constcl --data moving-objects`, its CPU-sized defaults: r3d_18 at half width, clips of
  8 frames at stride 2 of 64 px, batch 8) for --steps steps; the global-only ablation is the same run with
  `--set local_weight=0`;
- frame-wise SimCLR: `selfsup train simclr` on the frames of the same train clips (every 4th frame, 3,200 PNGs of
  64 px, written once under RUNS/frames), a quarter-width ResNet-18 with the CIFAR stem (8 x 8 last map at 64 px),
  batch 64, for --steps steps;
- random init: ConST-CL's network with fresh weights (`--random-init`);
- a reference without learning: the raw pixels of frames resized to 16 px (`--checkpoint pixels --image-size 16`),
  so propagation follows colour.
Evaluation, all frozen: `selfsup eval linear` on the clip's object class (moving-objects, 10 classes) and its motion
(moving-objects-motion, 4), 400 train / 100 test clips (an image encoder embeds 8 frames at stride 2 from the
middle of the clip, averaged); `selfsup eval propagate` J on the first --clips test clips (maps upsampled to 16 x 16
cells where coarser, top-5, τ 0.07, the first and 3 previous frames, radius 3 cells), with its two references:
copying the first mask, and the ground truth drawn on the 16 x 16 grid. Every row's labels are synthetic. The
figure shows ground truth and propagated contours on frames of the first test clip.

Interrupted? Run the same command again: finished pieces are read back from RUNS/*/*.json and a half-trained
method resumes from its last checkpoint.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from fashion_mnist import cached, train, write_results

from selfsup.eval import evaluate
from selfsup.eval.propagate import evaluate_propagate

HERE = Path(__file__).parent
FRAMES_EVERY = 4  # every 4th frame of each train clip is a SimCLR training image
SIMCLR = {"backbone": "resnet18", "small_stem": True, "backbone_kwargs": {"channels": [16, 32, 64, 128],
                                                                            "stem_width": 16},
          "image_size": 64, "batch_size": 64, "proj_hidden_dim": 512, "temperature": 0.2, "crop_min_scale": 0.2}
CONSTCL = {"data": "moving-objects", "batch_size": 8}
FIGURE_FRAMES = (0, 8, 16, 24, 31)
PIXELS_SIDE = 16  # raw pixels as features (colour affinity), frames at 16 px: a 16 x 16 grid
FINER_STAGE = 3  # propagation from the stage before the last too (label-propagation papers read stride 8)


def frames_folder(root: Path) -> Path:
    """RUNS/frames: every FRAMES_EVERY-th frame of moving-objects' train clips as 64 px PNGs (written once)."""
    from PIL import Image

    from selfsup.video import load_moving_objects

    folder = root / "frames"
    done = folder / "done"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        clips = load_moving_objects("train")
        for i in range(len(clips)):
            for t in range(0, clips.frames.shape[1], FRAMES_EVERY):
                Image.fromarray(np.asarray(clips.frames[i, t])).save(folder / f"{i:03d}-{t:02d}.png")
        done.write_text("ok\n")
    return folder


def rows_to_run(runs: Path, steps: int) -> list[dict]:
    """name, checkpoint, random_init, settings of each row; trains what is not trained yet."""
    constcl = {**CONSTCL, "max_steps": steps, "checkpoint_every": 50}
    rows = []
    for name, overrides in (("ConST-CL", {}), ("ConST-CL global-only", {"local_weight": 0.0})):
        run_dir = runs / name.lower().replace(" ", "-")
        trained = cached(run_dir / "train", lambda run_dir=run_dir, o=overrides: train("constcl", run_dir,
                                                                                      {**constcl, **o}))
        rows.append({"name": name, "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"), "random_init": False,
                     "settings": overrides or {}, **trained})
    run_dir = runs / "simclr-frames"
    options = {**SIMCLR, "data": str(frames_folder(runs)), "max_steps": steps, "checkpoint_every": 50}
    trained = cached(run_dir / "train", lambda: train("simclr", run_dir, options))
    rows.append({"name": "SimCLR frame by frame", "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
                 "random_init": False, "settings": {"frames": f"every {FRAMES_EVERY}th"}, **trained})
    rows.append({"name": "random init (ConST-CL's network)", "checkpoint": rows[0]["checkpoint"], "random_init": True,
                 "settings": {}, "train_seconds": 0})
    rows.append({"name": "raw pixels (reference)", "checkpoint": "pixels", "random_init": False,
                 "settings": {"frames at": f"{PIXELS_SIDE} px"}, "train_seconds": 0, "image_size": PIXELS_SIDE})
    return rows


def evaluate_row(row: dict, runs: Path, clips: int) -> tuple[dict, list]:
    """The row with its probe top-1s and J; the propagated masks of the first clips for the figure."""
    folder = runs / "eval" / row["name"].lower().replace(" ", "-").replace("'", "").replace("(", "").replace(")", "")
    for data, column in (("moving-objects", "object"), ("moving-objects-motion", "motion")):
        result = cached(folder / f"linear-{data}", lambda data=data: evaluate(
            "linear", row["checkpoint"], data=data, random_init=row["random_init"], image_size=row.get("image_size"),
            out=str(folder / f"linear-{data}.json")))
        row[f"linear_{column}"] = result["top1"]
    propagated = evaluate_propagate(row["checkpoint"], random_init=row["random_init"], clips=clips,
                                    out=str(folder / f"propagate-{clips}.json"), progress=False, return_masks=True,
                                    image_size=row.get("image_size"))
    masks = propagated.pop("masks")
    row.update({key: propagated[key] for key in ("j", "j_copy_first_mask", "j_oracle_at_grid", "feature_grid",
                                                  "propagation_grid", "encoder", "n_clips")})
    row["j_stage3"] = row["stage3_grid"] = None
    if row["checkpoint"] != "pixels":  # the ResNet's stage-3 map, twice as fine as the last (no stages: pixels)
        finer = cached(folder / f"propagate-{clips}-stage3", lambda: evaluate_propagate(
            row["checkpoint"], random_init=row["random_init"], clips=clips, stage=FINER_STAGE, progress=False,
            out=str(folder / f"propagate-{clips}-stage3.json")))
        row["j_stage3"], row["stage3_grid"] = finer["j"], finer["feature_grid"]
    return row, masks


def figure(shown: list[tuple[str, list]], out: Path) -> None:
    """Frames FIGURE_FRAMES of the first test clip, one row per encoder: ground truth (green) and propagated
    (red) mask contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfsup.video import load_moving_objects

    test = load_moving_objects("test")
    fig, axes = plt.subplots(len(shown), len(FIGURE_FRAMES), figsize=(2 * len(FIGURE_FRAMES), 2.1 * len(shown)),
                             squeeze=False)
    for r, (name, masks) in enumerate(shown):
        i, predicted, truth = masks[0]
        for c, t in enumerate(FIGURE_FRAMES):
            ax = axes[r, c]
            ax.imshow(test.frames[i, t])
            ax.contour(truth[t].numpy().astype(float), levels=[0.5], colors="lime", linewidths=1)
            if predicted[t].any():
                ax.contour(predicted[t].numpy().astype(float), levels=[0.5], colors="red", linewidths=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t + 1}" + (" (given)" if t == 0 else ""), fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"moving-objects test clip {shown[0][1][0][0]} [synthetic]: ground truth (green), propagated (red)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps of each pretraining [30]")
    parser.add_argument("--clips", type=int, default=50, help="test clips propagated [50 of 100]")
    parser.add_argument("--runs", help="run folders and cached results [runs/benchmark-video-STEPS: a run of "
                                       "other steps never reads another's cache]")
    parser.add_argument("--out", default=str(HERE / "results" / "video.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs, out = Path(args.runs or f"runs/benchmark-video-{args.steps}"), Path(args.out)
    rows, shown = [], []
    for row in rows_to_run(runs, args.steps):
        row, masks = evaluate_row(row, runs, args.clips)
        rows.append(row)
        shown.append((row["name"], masks))
    figure(shown, out.with_suffix(".png"))
    command = "OMP_NUM_THREADS=1 python benchmarks/video.py" + (f" --steps {args.steps}" if args.steps != 30 else "") \
        + (f" --clips {args.clips}" if args.clips != 50 else "")
    lines = [f"`{command}`", "",
             f"Pretraining on moving-objects' 400 train clips (labels unused), {args.steps} steps each; frozen "
             "evaluation on its 100 test clips. Linear probe: top-1 of a logistic regression on the clip "
             "embedding (400 train / 100 test clips). J: first-frame mask propagation (feature maps upsampled "
             "bilinearly to 16 x 16 cells where coarser, top-5, τ 0.07, first + 3 previous frames, radius 3 cells) "
             f"on the first {args.clips} test clips, frames 2-32; 'copy' = J of repeating the first mask, 'grid' = J "
             "of the ground truth itself drawn on the propagation grid (the ceiling); 'map' = the encoder's own "
             "feature map at 64 px. All labels are synthetic (Fashion-MNIST objects moved over real clips). "
             f"'J stage {FINER_STAGE}' = the same propagation from the ResNet's stage-"
             f"{FINER_STAGE} map (its native size in brackets; `eval propagate --stage {FINER_STAGE}`).", "",
             f"| encoder | labels | linear top-1 object (10) | linear top-1 motion (4) | J | J stage {FINER_STAGE} | "
             "J copy | J grid | map | train s | settings |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        grid, native = ("x".join(map(str, row[key])) for key in ("propagation_grid", "feature_grid"))
        settings = ", ".join(f"{k} {v}" for k, v in row["settings"].items()) or "-"
        finer = "-" if row["j_stage3"] is None else f"{row['j_stage3']:.3f} ({'x'.join(map(str, row['stage3_grid']))})"
        lines.append(f"| {row['name']} | **synthetic** | {row['linear_object']:.3f} | {row['linear_motion']:.3f} | "
                     f"{row['j']:.3f} | {finer} | {row['j_copy_first_mask']:.3f} | "
                     f"{row['j_oracle_at_grid']:.3f} ({grid}) | "
                     f"{native} | {row['train_seconds']} | {settings} |")
    lines += ["", f"Figure: `{out.with_suffix('.png').name}` (ground truth green, propagated red, first test clip).",
              "", "Encoders: " + "; ".join(f"{row['name']}: {row['encoder']}" for row in rows) + ".",
              "", "Speed (decoding against the model step): `video_speed.md`, `python benchmarks/video_speed.py`."]
    write_results(lines, json.loads(json.dumps(rows, default=str)), out)


if __name__ == "__main__":
    main()
