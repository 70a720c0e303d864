"""Figures: what a masked-image model restores (SiT's figure), a t-SNE of test-set embeddings (any modality), and the
masks an object-level method contrasts."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.manifold import TSNE
from torch.utils.data import Subset, default_collate

from selfsup.checkpoints import load_method
from selfsup.data import open_labeled, open_unlabeled
from selfsup.eval.features import checkpoint_modality, extract_features, frozen_encoder
from selfsup.eval.run import DEFAULT_DATA, check_options, open_labeled_split
from selfsup.views import EvalTransform, normalization_for


def plot_reconstructions(checkpoint: str, out: str | Path, data: str | None = None, n: int = 8,
                         seed: int = 0) -> Path:
    """Rows original / corrupted (or masked) / reconstructed for n test images of `data` (default: the
    data the checkpoint trained on) -> a PNG at `out`."""
    method, meta = load_method(checkpoint)
    _, test_set = open_labeled(data or meta["train"]["data"])
    chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))[:n]
    transform = EvalTransform(method.image_size, method.in_chans)
    x = torch.stack([transform(test_set[int(i)][0]) for i in chosen])  # (n, C, S, S)
    corrupted, restored = method.visualize(x, torch.Generator().manual_seed(seed))
    rows = {"original": x, "corrupted": corrupted, "reconstructed": restored}
    fig, axes = plt.subplots(3, len(x), figsize=(1.2 * len(x), 3.9), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c, image in enumerate(_pixels(images, method.in_chans)):
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
    _, test_set = open_labeled_split(modality, data, seed, test_fraction)
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
    views = method.default_views(method.image_size, method.in_chans)
    torch.manual_seed(seed)
    with torch.no_grad():
        panels = method.view_masks(default_collate([views(samples[i][0]) for i in range(len(samples))]))
    fig, axes = plt.subplots(len(chosen), len(panels), figsize=(2.2 * len(panels), 2.2 * len(chosen)), squeeze=False)
    for c, (name, x, masks) in enumerate(panels):
        for r, (image, ids) in enumerate(zip(_pixels(x, method.in_chans), masks.cpu().numpy())):
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
