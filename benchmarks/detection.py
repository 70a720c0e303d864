"""UP-DETR against the same DETR without it, next to eval detect's FCOS, on one self-supervised backbone.

    OMP_NUM_THREADS=1 python benchmarks/detection.py   # writes results/detection.md, .json, detection_queries.png

The backbone: a DetCon-S checkpoint from benchmarks/dense.py (runs/benchmark-dense/detcon-s: quarter-width ResNet-18
with the CIFAR stem, 200 steps on paste-scenes' images). For each data set (trees: real hand-drawn boxes;
paste-scenes-multi: synthetic boxes) UP-DETR pretrains on its train images only (no boxes) with that backbone frozen
(`selfsup train updetr --set backbone_checkpoint=...`); then `selfsup eval detect --detector detr` fine-tunes (a) the
UP-DETR checkpoint's DETR and (b) a fresh DETR of the same size on the same backbone, for the same steps and recipe,
and reports AP50/AP on the test split; `--detector fcos` on the backbone is the torchvision reference (for trees its
figure is read back from benchmarks/dense.py's run of the same command, 100 steps). The figure shows test images
with random query patches, the boxes the pretrained DETR finds for them, and a step-time comparison. Tiny CPU runs
(minutes, one seed): nothing is tuned on test images.

Interrupted? Run it again: finished pieces are read back from RUNS/*/result.json, a half-trained run resumes.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fashion_mnist import cached, train, write_results  # noqa: E402

from selfsup.checkpoints import load_method  # noqa: E402
from selfsup.data.dense import open_dense  # noqa: E402
from selfsup.eval.detect import Boxes, DETRDetector, evaluate_detect  # noqa: E402
from selfsup.nn.detr import DETR  # noqa: E402
from selfsup.views.eval import normalization_for  # noqa: E402

HERE = Path(__file__).parent
BACKBONE = "runs/benchmark-dense/detcon-s/checkpoints/last.ckpt"
FCOS_TREES = "runs/benchmark-dense/detcon-s/detect.json"  # eval detect --detector fcos on BACKBONE, trees, 100 steps
# Pretraining: the method's defaults (10 patches x 10 queries, d 128, 2 + 2 layers) with AdamW at 2e-4 for the batch
# (DETR's 1e-4 x 2 for a run of minutes), 5 % warm-up; per data set its own batch and steps (~2-3 minutes each).
PRETRAIN = {"recipe": "paper", "optimizer": "adamw", "weight_decay": 1e-4, "warmup_fraction": 0.05, "seed": 0,
            "num_workers": 0, "checkpoint_every": 50}
SETS = {  # data: (pretraining batch, pretraining steps, DETR fine-tuning steps)
    "paste-scenes-multi": (16, 300, 300),
    "trees": (8, 120, 150),
}


def pretraining_data(data: str, runs: Path) -> str:
    """What `selfsup train` reads: the built-in name, or for trees its train crops written once as PNG files (a user
    folder): `selfsup train --data trees` fails in this version (TreeCrops' `images` array hides
    DenseSet.images())."""
    if data != "trees":
        return data
    from PIL import Image

    folder = runs / "trees-train-images"
    train_set = open_dense(data, "train")
    if len(list(folder.glob("*.png"))) != len(train_set):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(len(train_set)):
            Image.fromarray(train_set[i][0].permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return str(folder)


def lr_for(batch: int, lr: float = 2e-4) -> float:
    """The config's lr is per 256 images (scaled linearly): the base that gives `lr` at `batch`."""
    return lr * 256 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=BACKBONE, help="selfsup image checkpoint, the frozen backbone")
    parser.add_argument("--runs", default="runs/benchmark-detection")
    parser.add_argument("--out", default=str(HERE / "results" / "detection.md"))
    args = parser.parse_args()
    runs = Path(args.runs)
    torch.set_num_threads(1)
    rows, pretrained = [], {}
    for data, (batch, steps, finetune_steps) in SETS.items():
        run = runs / f"updetr-{data}"
        options = {**PRETRAIN, "data": pretraining_data(data, runs), "batch_size": batch,
                   "image_size": open_dense(data, "train").native_size, "max_steps": steps, "lr": lr_for(batch),
                   "backbone_checkpoint": args.backbone}
        trained = cached(run / "train", lambda run=run, options=options: train("updetr", run, options))
        pretrained[data] = str(run / "checkpoints" / "last.ckpt")
        tag = open_dense(data, "test").tag
        for name, variant, checkpoint in (("DETR, UP-DETR pretrained", "updetr", pretrained[data]),
                                          ("DETR, no UP-DETR", "plain", args.backbone)):
            result = cached(runs / f"detr-{data}-{variant}", lambda c=checkpoint, d=data: evaluate_detect(
                c, d, detector="detr", max_steps=finetune_steps, progress=False,
                out=str(runs / f"detr-{d}-{Path(c).parts[-3]}.json")))
            rows.append({"data": data, "tag": tag, "detector": name, "ap50": result["ap50"], "ap": result["ap"],
                         "steps": result["steps"], "seconds": result["seconds"],
                         "pretrain_seconds": trained["train_seconds"] if variant == "updetr" else None})
        if data == "trees" and Path(FCOS_TREES).is_file():
            fcos = json.loads(Path(FCOS_TREES).read_text())
        else:
            fcos = cached(runs / f"fcos-{data}", lambda d=data: evaluate_detect(
                args.backbone, d, detector="fcos", progress=False, out=str(runs / f"fcos-{d}.json")))
        rows.append({"data": data, "tag": tag, "detector": "FCOS (eval detect's default)", "ap50": fcos["ap50"],
                     "ap": fcos["ap"], "steps": fcos["steps"], "seconds": fcos["seconds"], "pretrain_seconds": None})
    speed = cached(runs / "speed", lambda: step_times(pretrained["paste-scenes-multi"]))
    found = {data: cached(runs / f"found-{data}", lambda d=data: patch_iou(pretrained[d], args.backbone, d))
             for data in SETS}
    figure(pretrained, HERE / "results" / "detection_queries.png")
    out = Path(args.out)
    reading = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""  # written by hand: kept
    lines = table(rows, speed, found, args) + ([f"## Reading{reading.rstrip()}", ""] if reading else [])
    write_results(lines, [*rows, {"speed": speed, "found": found}], out)


@torch.no_grad()
def patch_iou(checkpoint: str, backbone: str, data: str, n: int = 64) -> dict:
    """On `n` test images (at most the test split; 10 seeded patches each), for the UP-DETR checkpoint and the same
    network before pretraining (its random twin with the backbone's weights): the mean IoU between each query patch's
    box and the box of its own group's most confident query (the box "found" for it), the share of those above 0.5,
    and what training's Hungarian matching (over all 100 queries) sees: the matched box's mean IoU and the share of
    patches matched to a query of their own group (chance: 1 in 10)."""
    from torchvision.ops import box_convert, box_iou

    out = {}
    for name, weights in (("pretrained", True), ("untrained", False)):
        method, _ = load_method(checkpoint, weights=weights)
        if not weights:  # the same frozen backbone, the DETR at random init
            method.backbone.load_state_dict(load_method(backbone)[0].encoder().state_dict())
        found = list(found_boxes(method, data, n, box_convert, box_iou))
        ious, matched, own = (torch.cat([f[j] for f in found]) for j in (3, 4, 5))
        out[name] = {"mean_iou": round(float(ious.mean()), 4), "found_at_0.5": round(float((ious > 0.5).float().mean()),
                                                                                      4),
                     "matched_iou": round(float(matched.mean()), 4), "matched_in_own_group": round(float(
                         own.float().mean()), 4)}
    return out


def found_boxes(method, data: str, n: int, box_convert, box_iou):
    """Per test image: (image (C, S, S) normalised, patches (M, C, P, P), patch boxes (M, 4) and found boxes (M, 4)
    xyxy in [0, 1], their IoU (M,), the IoU of the Hungarian-matched query's box (M,), whether that query is in the
    patch's own group (M,)); patches drawn with a fixed seed."""
    test = open_dense(data, "test")
    views = method.default_views(method.image_size, test.channels)
    torch.manual_seed(0)
    k = method.config.queries_per_patch
    for i in range(min(n, len(test))):
        x, patches, boxes = views(test[i][0])
        p = method.patch_features(patches[None])
        logits, pred, _ = method.forward_queries(x[None], p)
        M = boxes.shape[0]
        score = logits[0].softmax(-1)[:, 0].reshape(M, k)  # p(patch) per query, (M, k)
        best = pred[0].reshape(M, k, 4)[torch.arange(M), score.argmax(1)]  # (M, 4) cxcywh
        target, found = box_convert(boxes, "cxcywh", "xyxy"), box_convert(best, "cxcywh", "xyxy")
        q, t = method.criterion.match(logits[0], pred[0], boxes, torch.zeros(M, dtype=torch.int64))
        matched = box_iou(target[t], box_convert(pred[0, q], "cxcywh", "xyxy")).diagonal()
        yield x, patches, torch.stack([target, found]), box_iou(target, found).diagonal(), matched, q // k == t


def step_times(checkpoint: str, batch: int = 16, repeats: int = 10) -> dict:
    """ms per training step (forward + backward, one thread) on the same 16 paste-scenes-multi train images: the
    UP-DETR step (10 query patches through the frozen backbone, grouped queries, matching, 4 losses) against a plain
    DETR step (the same DETR and frozen backbone, the images' own boxes, DETR's loss)."""
    method, _ = load_method(checkpoint)
    method.train()
    train_set = open_dense("paste-scenes-multi", "train")
    views = method.default_views(method.image_size, train_set.channels)
    torch.manual_seed(0)
    up_batch = [torch.stack(t) for t in zip(*[views(train_set[i][0]) for i in range(batch)])]
    detector = DETRDetector(DETR(method.backbone), method.in_chans, len(train_set.classes), method.image_size).train()
    method.backbone.eval()
    boxes = Boxes(train_set, method.in_chans)
    items = [boxes[i] for i in range(batch)]
    images, targets = [image for image, _ in items], [target for _, target in items]

    def up():
        method.training_step(up_batch)["loss"].backward()

    def plain():
        detector(images, targets)["loss"].backward()

    out = {}
    for name, step in (("updetr", up), ("plain_detr", plain)):
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        out[name] = round((time.perf_counter() - start) / repeats * 1000, 1)
    out.update({"batch": batch, "image_size": method.image_size, "threads": torch.get_num_threads(),
                "queries": method.config.n_patches * method.config.queries_per_patch})
    return out


def figure(pretrained: dict, path: Path, n_images: int = 3, n_patches: int = 4) -> None:
    """Rows: test images of each set with `n_patches` of their 10 query patches (dashed) and the box the pretrained
    DETR finds for each (solid, same colour), then the patches themselves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.ops import box_convert, box_iou

    colours = ["tab:red", "tab:blue", "tab:orange", "tab:green"]
    fig, axes = plt.subplots(len(pretrained) * n_images, 1 + n_patches, figsize=(2.2 * (1 + n_patches),
                                                                                 2.2 * len(pretrained) * n_images))
    row = 0
    for data, checkpoint in pretrained.items():
        method, _ = load_method(checkpoint)
        mean, std = (torch.tensor(v).view(-1, 1, 1) for v in normalization_for(method.in_chans))
        show = lambda t: (t * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
        for x, patches, boxes, iou, _, _ in found_boxes(method, data, n_images, box_convert, box_iou):
            S = x.shape[-1]
            ax = axes[row, 0]
            ax.imshow(show(x))
            for m in range(n_patches):
                for j, style in ((0, "--"), (1, "-")):  # the patch's box, the box found
                    x0, y0, x1, y1 = (boxes[j, m] * S).tolist()
                    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls=style, lw=1.5,
                                               color=colours[m]))
                axes[row, 1 + m].imshow(show(patches[m]))
                axes[row, 1 + m].set_title(f"patch {m + 1}: IoU {iou[m]:.2f}", fontsize=8, color=colours[m])
            ax.set_title(f"{data} test", fontsize=8)
            for a in axes[row]:
                a.set_xticks([])
                a.set_yticks([])
            row += 1
    fig.suptitle("UP-DETR: query patches (dashed) and the boxes found for them (solid)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], speed: dict, found: dict, args) -> list[str]:
    lines = ["# UP-DETR: DETR with and without UP-DETR pretraining, next to FCOS, on one self-supervised backbone", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/detection.py` on this 2-core CPU machine, one thread "
             f"(torch {torch.__version__}). Backbone: `{args.backbone}` (DetCon-S, 200 steps on paste-scenes' images, "
             "quarter-width ResNet-18, CIFAR stem). UP-DETR pretrains on each set's train images (no boxes) with the "
             "backbone frozen; DETR fine-tuning (`eval detect --detector detr`: AdamW 1e-4, batch 4) trains the whole "
             "network, backbone included, for the same steps with and without UP-DETR. FCOS is `eval detect`'s "
             "default (100 steps). AP50 / AP by torchmetrics on the test split. Tiny CPU runs, one seed each.", "",
             "| data | labels | detector | AP50 | AP | fine-tune steps | fine-tune + eval (s) | UP-DETR pretrain (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['tag']} | {r['detector']} | {r['ap50']:.4f} | {r['ap']:.4f} | {r['steps']} "
                     f"| {r['seconds']} | {r['pretrain_seconds'] or '-'} |")
    lines += ["", "The pretext task on 64 test images per set (trees: its 32), 10 seeded query patches each. Found: "
              "the box of the most confident query of the patch's own group (mean IoU with the patch, share above "
              "0.5). "
              "Matched: the query training's Hungarian matching (over all 100 queries) pairs with the patch (mean "
              "IoU, share in the patch's own group; chance 0.1).", "",
              "| data | network | found: mean IoU | found: IoU > 0.5 | matched: mean IoU | matched: in own group |",
              "|---|---|---|---|---|---|"]
    for data, f in found.items():
        for name in ("pretrained", "untrained"):
            r = f[name]
            lines.append(f"| {data} | {name} | {r['mean_iou']:.3f} | {r['found_at_0.5']:.3f} | "
                         f"{r['matched_iou']:.3f} | {r['matched_in_own_group']:.3f} |")
    lines += ["", f"Step time (forward + backward, {speed['threads']} thread, batch {speed['batch']} of "
              f"{speed['image_size']} px paste-scenes-multi train images, {speed['queries']} queries, one run): "
              f"UP-DETR {speed['updetr']} ms, plain DETR {speed['plain_detr']} ms "
              f"({speed['updetr'] / speed['plain_detr']:.2f}x).", "",
              "Figure: `detection_queries.png`.", ""]
    return lines


if __name__ == "__main__":
    main()
