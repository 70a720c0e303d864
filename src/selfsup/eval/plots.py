"""Figures: what a masked-image model restores (SiT's figure), a t-SNE of test-set embeddings (any modality), the
masks an object-level method contrasts, and a run's training curves."""

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib.backend_bases import FigureCanvasBase
from sklearn.manifold import TSNE
from torch.utils.data import Subset, default_collate

from selfsup.checkpoints import load_method
from selfsup.data import open_labeled, open_unlabeled
from selfsup.errors import SelfsupError
from selfsup.eval.features import checkpoint_modality, extract_features, frozen_encoder
from selfsup.eval.run import DEFAULT_DATA, baseline_image_options, check_options, open_labeled_split
from selfsup.files import in_existing_folder
from selfsup.views import EvalTransform, channels_of, normalization_for


def plot_reconstructions(checkpoint: str, out: str | Path, data: str | None = None, n: int = 8,
                         seed: int = 0) -> Path:
    """Rows original / corrupted (or masked) / reconstructed for n test images of `data` (default: the
    data the checkpoint trained on) -> a PNG at `out`."""
    method, meta = load_method(checkpoint)
    _, test_set = open_labeled(data or meta["train"]["data"])
    chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))[:n]
    transform = EvalTransform(method.image_size, channels_of(method.data_meta))
    x = torch.stack([transform(test_set[int(i)][0]) for i in chosen])  # (n, C, S, S)
    corrupted, restored = method.visualize(x, torch.Generator().manual_seed(seed))
    rows = {"original": x, "corrupted": corrupted, "reconstructed": restored}
    fig, axes = plt.subplots(3, len(x), figsize=(1.2 * len(x), 3.9), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c, image in enumerate(_pixels(images, channels_of(method.data_meta))):
            axes[r, c].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"{meta['method']}: {Path(checkpoint).name}", fontsize=9)
    return _save(fig, out)


def plot_tsne(checkpoint: str, out: str | Path, data: str | None = None, n: int = 2000, seed: int = 0,
              test_fraction: float | None = None, random_init: bool = False, pooling: str | None = None,
              **image_options) -> Path:
    """t-SNE of the frozen encoder's features of n seeded test examples, coloured by label -> a PNG, for every
    modality. `checkpoint` may be a baseline ('random' with image_options, 'pixels', 'mfcc') or, with random_init,
    a checkpoint's random twin."""
    modality = checkpoint_modality(checkpoint)
    check_options("knn", checkpoint, modality, random_init, pooling, image_options)
    data = data or DEFAULT_DATA.get(modality, "")
    train_set, test_set = open_labeled_split(modality, data, seed, test_fraction)
    image_options = baseline_image_options(checkpoint, train_set, image_options)
    encoder = frozen_encoder(checkpoint, random_init, {"pooling": pooling} if pooling else None,
                             getattr(test_set, "channels", 3), getattr(test_set, "native_size", None),
                             **{k: v for k, v in image_options.items() if v is not None})
    chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))[:n]
    features, labels = extract_features(encoder, Subset(test_set, chosen.tolist()), desc="t-SNE features")
    points = TSNE(n_components=2, init="pca", perplexity=min(30, len(chosen) - 1), random_state=seed).fit_transform(
        features.numpy().astype(np.float32))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    names = test_set.classes or [str(c) for c in range(int(labels.max()) + 1)]
    for c, name in enumerate(names):
        at = labels.numpy() == c
        ax.scatter(points[at, 0], points[at, 1], s=4, color=plt.cm.tab10(c % 10), label=name)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(chosen)} {data} test examples: {encoder.description}", fontsize=9)
    return _save(fig, out)


def plot_masks(checkpoint: str, out: str | Path, data: str | None = None, n: int = 6, seed: int = 0) -> Path:
    """n seeded training images of `data` (default: the checkpoint's own) through the method's views, each view drawn
    with the masks its loss uses in colour (the same colour is the same mask across views) -> a PNG at `out`.
    A SelfsupError for a method whose views carry no masks."""
    method, meta = load_method(checkpoint)
    images = open_unlabeled(data or meta["train"]["data"])
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    samples = method.training_images(Subset(images, chosen))
    views = method.default_views(method.image_size, channels_of(method.data_meta))
    torch.manual_seed(seed)
    with torch.no_grad():
        panels = method.view_masks(default_collate([views(samples[i][0]) for i in range(len(samples))]))
    fig, axes = plt.subplots(len(chosen), len(panels), figsize=(2.2 * len(panels), 2.2 * len(chosen)), squeeze=False)
    for c, (name, x, masks) in enumerate(panels):
        for r, (image, ids) in enumerate(zip(_pixels(x, channels_of(method.data_meta)), masks.cpu().numpy())):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            colours = plt.cm.tab20(np.mod(ids, 20))  # (S, S, 4)
            colours[..., 3] = np.where(ids >= 0, 0.45, 0.0)
            ax.imshow(colours, interpolation="nearest")
            ax.contour(ids, levels=np.unique(ids) + 0.5, colors="white", linewidths=0.4)
            ax.set_xticks([]), ax.set_yticks([])
            axes[0, c].set_title(name, fontsize=9)
    fig.suptitle(f"{meta['method']}: the masks its loss uses\n(same colour = same mask)", fontsize=8)
    return _save(fig, out)


# (panel title, [(metrics.csv column, legend), ...], y label, what to pass when nothing was logged)
CURVE_PANELS = [
    ("training loss", [("loss", None)], "loss", "no loss logged yet"),
    ("learning rate", [("lr", None)], "learning rate", "no learning rate logged yet"),
    ("online kNN probe", [("probe/knn_top1", None)], "top-1",
     "not probed: --probe-every N with --probe-data DIR or a labelled built-in set"),
    ("collapse monitors", [("collapse/std_x_sqrt_d", "std of normalised embeddings x sqrt(D)"),
                           ("collapse/effective_rank", "effective rank (right axis)")], "std x sqrt(D)",
     "not logged: --set monitor_every=N"),
]


def read_metrics(run: str | Path) -> dict[str, dict[int, float]]:
    """{column: {step: value}} of a run's RUN/logs/csv/version_*/metrics.csv, every version (each start or resume)
    merged by Lightning's step index, a later version's value winning (a resumed run repeats the steps after its
    checkpoint). A SelfsupError when `run` holds no such file."""
    run = Path(run)
    versions = sorted(run.glob("logs/csv/version_*/metrics.csv"),
                      key=lambda p: int(m.group(1)) if (m := re.fullmatch(r"version_(\d+)", p.parent.name)) else -1)
    if not run.is_dir() or not versions:
        raise SelfsupError(f"'{run}' is not a run folder (no logs/csv/version_*/metrics.csv in it): pass the folder "
                           "`selfsup train` wrote, its --out or runs/METHOD-DATE-TIME")
    curves: dict[str, dict[int, float]] = {}
    for path in versions:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if not step:
                    continue
                for column, text in row.items():
                    if column in ("step", "epoch") or column is None or not text:
                        continue
                    try:
                        curves.setdefault(column, {})[int(float(step))] = float(text)
                    except ValueError:
                        continue
    return curves


def plot_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Loss, learning rate, online probe top-1 and collapse figures of a run over its optimiser steps -> one PNG
    (default RUN/curves.png; another extension matplotlib writes, .pdf or .svg, gives that format)."""
    run = Path(run)
    curves = read_metrics(run)
    out = in_existing_folder(out) if out else run / "curves.png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in formats:
        raise SelfsupError(f"--out '{out}' has an extension matplotlib does not write: pass FILE.png (or "
                           f"{', '.join('.' + f for f in ('pdf', 'svg', 'jpg') if f in formats)})")
    if not curves:
        raise SelfsupError(f"'{run}' has logged no metrics yet (they are written every 10 steps): train longer or "
                           "wait for the run's first log")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, (title, columns, ylabel, missing) in zip(axes.flat, CURVE_PANELS):
        drawn = [(column, label) for column, label in columns if curves.get(column)]
        lines = []
        for i, (column, label) in enumerate(drawn):
            steps = sorted(curves[column])
            target = ax.twinx() if i else ax  # a second figure of another scale on the right axis
            lines += target.plot([s + 1 for s in steps], [curves[column][s] for s in steps], color=f"C{i}",
                                 marker="o" if len(steps) < 30 else None, markersize=3, label=label)
            if i:
                target.set_ylabel(label.replace(" (right axis)", ""), color=f"C{i}")
        if len(lines) > 1:
            ax.legend(handles=lines, fontsize=7, loc="best")
        if not drawn:
            ax.text(0.5, 0.5, missing, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
    fig.suptitle(f"{_run_name(run)}: training curves", fontsize=11)
    return _save(fig, out)


def _run_name(run: Path) -> str:
    """'METHOD run FOLDER' from the run's config.yaml, or the folder's name."""
    try:
        method = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("method")
    except (OSError, yaml.YAMLError):
        method = None
    return f"{method} run {run.resolve().name}" if method else f"run {run.resolve().name}"


def _pixels(images: torch.Tensor, channels: int) -> np.ndarray:
    """Normalised (B, C, H, W) -> displayable (B, H, W) or (B, H, W, 3) in [0, 1]."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization_for(channels))
    pixels = (images.float().cpu() * std + mean).clamp(0, 1)
    return pixels[:, 0].numpy() if channels == 1 else pixels.permute(0, 2, 3, 1).numpy()


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
