"""`selfsup eval change`: binary change detection on pairs of images (METHODS.md, "Dense evaluation protocols").

A siamese network on the pretrained encoder: the encoder (from `frozen_encoder`: a checkpoint, its random-init twin,
or 'random' / 'pixels') maps time 1 and time 2 through the same weights to per-location features f_A, f_B
(B, D, h, w) (the method's `dense_features`); their absolute difference |f_A - f_B| (symmetric in time, as in the
FC-Siam-diff network of Daudt et al. 2018) goes through a light decoder:
BatchNorm(D) -> 3x3 conv D->64, BN, ReLU -> x2 bilinear upsampling -> 3x3 conv 64->32, BN, ReLU -> 1x1 conv 32->1,
whose logit map is upsampled bilinearly to the S x S pair. Loss: binary cross-entropy with pos_weight = (no-change
pixels / change pixels) of the train masks, clipped to [1, MAX_POS_WEIGHT], so the rare change class weighs as much
as the rest. Prediction: change where the logit > 0 (probability > 0.5).

- Frozen (default): the features of every train and test pair are extracted once (eval mode); the decoder trains on
  the train differences with Adam, lr 1e-3, for `max_steps` (300) steps of 16 pairs, each pair flipped horizontally
  at random with its mask.
- Fine-tuning (`finetune=True`): the encoder trains with the decoder end to end on the framed pairs (AdamW, lr 1e-3
  for the decoder, 1e-4 for the encoder, weight decay 1e-4, cosine decay, 300 steps of 8 pairs, random horizontal
  flips). 'random' or `random_init` gives the network from scratch.

Inputs: both images are resized (shorter side to the encoder's input side S) and centre-cropped as `EvalTransform`
does, and the mask alike with nearest neighbours; scores are computed in that S x S frame. Scores of the change class
pooled over every test pixel (as the LEVIR-CD papers count): precision TP/(TP+FP), recall TP/(TP+FN),
F1 = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN). Every result states its data's label tag (rs-change: synthetic labels on
real images). A figure shows time 1, time 2, the true and the predicted change of FIGURE_PAIRS test pairs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from selfsup.data.change import ChangeSet, open_change
from selfsup.errors import SelfsupError
from selfsup.eval.features import FrozenEncoder, frozen_encoder
from selfsup.eval.run import _default_out, write_result
from selfsup.eval.segment import check_encoder, dense_dim

DEFAULT_DATA = "rs-change"
FROZEN = {"max_steps": 300, "lr": 1e-3, "batch_size": 16, "optimizer": "adam"}
FINETUNE = {"max_steps": 300, "lr": 1e-3, "encoder_lr_scale": 0.1, "batch_size": 8, "weight_decay": 1e-4,
            "optimizer": "adamw"}
MAX_POS_WEIGHT = 50.0
FIGURE_PAIRS = 4


class FramedChange(Dataset):
    """`pairs[i]` -> (time 1 uint8 (C, S, S), time 2 uint8 (C, S, S), mask uint8 (S, S)): both images resized
    (shorter side S, antialiased) and centre-cropped like `EvalTransform`, the mask with nearest neighbours."""

    def __init__(self, pairs: ChangeSet, size: int):
        self.pairs = pairs
        self.frame = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b, mask = self.pairs[i]
        if a.shape[1:] != b.shape[1:] or a.shape[1:] != mask.shape:
            raise SelfsupError(f"pair {i} of {self.pairs.name} has time 1 {tuple(a.shape[1:])}, time 2 "
                               f"{tuple(b.shape[1:])} and mask {tuple(mask.shape)} px: pass pairs of one size")
        a, b, mask = self.frame(tv_tensors.Image(a), tv_tensors.Image(b), tv_tensors.Mask(mask))
        return a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class _Collate:
    """[(a, b, mask), ...] -> (the encoder's batch of a, of b, masks (B, S, S) uint8)."""

    def __init__(self, batch):
        self.batch = batch

    def __call__(self, items: list[tuple]) -> tuple[Any, Any, torch.Tensor]:
        return (self.batch([a for a, _, _ in items]), self.batch([b for _, b, _ in items]),
                torch.stack([m for _, _, m in items]))


def change_loader(pairs: Dataset, encoder: FrozenEncoder, batch_size: int, **options: Any) -> DataLoader:
    return DataLoader(pairs, batch_size=batch_size, collate_fn=_Collate(encoder.batch), **options)


class ChangeDecoder(nn.Module):
    """|f_A - f_B| (B, D, h, w) -> change logits (B, 1, 2h, 2w): the light decoder of the module docstring."""

    def __init__(self, dim: int, width: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(dim),
            nn.Conv2d(dim, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, 1, 1))

    def forward(self, difference: torch.Tensor) -> torch.Tensor:
        return self.layers(difference)


class SiameseChange(nn.Module):
    """(time 1, time 2) batches (B, C, S, S) -> change logits (B, 1, h', w'): one encoder's dense map of both,
    |f_A - f_B|, ChangeDecoder. `module` holds the encoder's weights so that they train with the decoder."""

    def __init__(self, encoder: FrozenEncoder, dim: int):
        super().__init__()
        self.module, self.dense = encoder.module.requires_grad_(True), encoder.dense  # a teacher's may be frozen
        self.decoder = ChangeDecoder(dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        features = self.dense(torch.cat([a, b]))  # (2B, D, h, w): one pass, the same weights for both times
        f_a, f_b = features.chunk(2)
        return self.decoder((f_a - f_b).abs())


def change_loss(logits: torch.Tensor, masks: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """BCE of logits (B, 1, h, w), upsampled bilinearly to masks (B, S, S) 0/1, change weighted by pos_weight."""
    logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (B, S, S)
    return F.binary_cross_entropy_with_logits(logits, masks.float(), pos_weight=torch.tensor(pos_weight,
                                                                                              device=logits.device))


def predict_change(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """logits (B, 1, h, w) -> bool change maps (B, S, S): logit > 0 after bilinear upsampling to `size`."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0] > 0


def change_counts(predicted: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """int64 (3,) = (TP, FP, FN) of the change class, from predicted and true maps of any equal shape (non-zero =
    change)."""
    predicted, masks = predicted.bool(), masks.bool()
    return torch.stack([(predicted & masks).sum(), (predicted & ~masks).sum(), (~predicted & masks).sum()])


def change_scores(counts: torch.Tensor) -> dict[str, float | None]:
    """{precision, recall, f1, iou} of the change class from (TP, FP, FN); None where a ratio is 0/0."""
    tp, fp, fn = (int(c) for c in counts)

    def ratio(num: int, den: int) -> float | None:
        return round(num / den, 4) if den else None

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn)}


def pos_weight_of(masks: torch.Tensor) -> float:
    """(no-change pixels / change pixels) of masks (N, S, S), clipped to [1, MAX_POS_WEIGHT]."""
    change = int(masks.bool().sum())
    return float(min(MAX_POS_WEIGHT, max(1.0, (masks.numel() - change) / max(change, 1))))


def flip(generator: torch.Generator, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """A seeded random horizontal flip of the same half of the batch of every tensor (B, ..., W), all alike."""
    chosen = torch.rand(len(tensors[0]), generator=generator) < 0.5  # (B,)
    out = [t.clone() for t in tensors]
    for t in out:
        t[chosen] = t[chosen].flip(-1)
    return out


@torch.no_grad()
def extract_pairs(encoder: FrozenEncoder, pairs: Dataset, device: str, batch_size: int = 32, desc: str = "features"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(|f_A - f_B| (N, D, h, w) float16 on the CPU, masks (N, S, S) uint8) of every framed pair, in order, with
    the encoder in eval mode (its mode is restored)."""
    module = encoder.module
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    differences, masks = [], []
    for a, b, mask in tqdm(change_loader(pairs, encoder, batch_size), desc=desc, leave=False, disable=None):
        f_a, f_b = encoder.dense(a.to(device)), encoder.dense(b.to(device))  # (B, D, h, w) each
        differences.append((f_a - f_b).abs().half().cpu())
        masks.append(mask)
    if module is not None:
        module.train(was_training)
    return torch.cat(differences), torch.cat(masks)


def open_pairs(data: str) -> tuple[ChangeSet, ChangeSet]:
    """(train, test) change pairs of `data`; SelfsupError when a split holds none."""
    train_set, test_set = open_change(data, "train"), open_change(data, "test")
    for split, pairs in (("train", train_set), ("test", test_set)):
        if len(pairs) == 0:
            raise SelfsupError(f"the {split} split of {data} holds no pairs; pass pairs for both splits")
    return train_set, test_set


def evaluate_change(checkpoint: str, data: str | None = None, finetune: bool = False, max_steps: int | None = None,
                    lr: float | None = None, batch_size: int | None = None, random_init: bool = False, seed: int = 0,
                    out: str | None = None, device: str | None = None, progress: bool = True,
                    **image_options: Any) -> dict[str, Any]:
    """F1, IoU, precision and recall of the change class on `data`'s test pairs (default rs-change) of the siamese
    network on the frozen encoder, or with `finetune` of the encoder trained with the decoder.

    checkpoint: a .ckpt file (random_init: its random twin), 'random' or 'pixels' (frozen only: |A - B| of the
    normalised pixels); image_options (backbone, small_stem, backbone_kwargs for 'random'; image_size) as
    `evaluate_segment`. max_steps, lr, batch_size: None takes FROZEN / FINETUNE's. Writes the result JSON (like
    `evaluate`) and a figure beside it (same name, .png), and returns the result with "json" and "figure". Raises
    SelfsupError for a text/audio encoder, 'pixels' with finetune, options that do not apply, or unusable data."""
    start = time.time()
    check_encoder(checkpoint, random_init, finetune, image_options, task="change detection")
    data = data or DEFAULT_DATA
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_set, test_set = open_pairs(data)
    torch.manual_seed(seed)  # before building the network: a random-init twin is seeded
    encoder = frozen_encoder(checkpoint, random_init, None, train_set.channels, train_set.native_size,
                             **{key: v for key, v in image_options.items() if v is not None})
    if encoder.module is not None:
        encoder.module.to(device)
    size = encoder.image_size
    train_pairs, test_pairs = FramedChange(train_set, size), FramedChange(test_set, size)
    run = (_finetune if finetune else _frozen)(encoder, train_pairs, test_pairs, seed, device, progress,
                                               max_steps=max_steps, lr=lr, batch_size=batch_size)
    counts, shown = run.pop("counts"), run.pop("shown")
    protocol = "change-finetune" if finetune else "change"
    scores = change_scores(counts)
    result = {"protocol": protocol, **scores, "tp_fp_fn": [int(c) for c in counts], "tag": train_set.tag,
              "labels": "synthetic labels on real images" if train_set.tag == "synthetic" else train_set.tag,
              "encoder": encoder.description, "checkpoint": checkpoint, "random_init": random_init,
              "modality": "image", "data": data, "n_train": len(train_set), "n_test": len(test_set),
              "skipped_names": train_set.skipped, "image_size": size, "difference": "|f_A - f_B|", **run,
              "seed": seed, "seconds": round(time.time() - start, 1)}
    path = Path(out) if out else _default_out(protocol, checkpoint, data, random_init, image_options.get("backbone"),
                                              seed=seed)
    written = write_result(result, path)
    return {**written, "figure": str(plot_pairs(shown, path.with_suffix(".png"), result))}


def _train_decoder(decoder: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, max_steps: int, lr: float,
                   batch_size: int, pos_weight: float, seed: int, device: str, progress: bool) -> nn.Module:
    """`max_steps` Adam steps of the decoder on seeded shuffled, flipped batches of differences (N, D, h, w) and
    masks (N, S, S); returns it in eval mode."""
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    order, flips = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    decoder.train()
    step = 0
    with tqdm(total=max_steps, desc="decoder", leave=False, disable=None if progress else True) as bar:
        while step < max_steps:
            for index in torch.randperm(len(train_x), generator=order).split(batch_size):
                if len(index) < 2:  # BatchNorm needs two samples
                    continue
                x, y = flip(flips, train_x[index].float(), train_y[index])
                loss = change_loss(decoder(x.to(device)), y.to(device), pos_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
                if step == max_steps:
                    break
    return decoder.eval()


def _frozen(encoder: FrozenEncoder, train_pairs: FramedChange, test_pairs: FramedChange, seed: int, device: str,
            progress: bool, max_steps: int | None, lr: float | None, batch_size: int | None) -> dict[str, Any]:
    max_steps, lr = max_steps or FROZEN["max_steps"], lr or FROZEN["lr"]
    batch_size = min(batch_size or FROZEN["batch_size"], len(train_pairs))
    if batch_size < 2:
        raise SelfsupError(f"only {len(train_pairs)} train pair; the decoder needs at least 2: pass more pairs")
    train_x, train_y = extract_pairs(encoder, train_pairs, device, desc="train features")
    test_x, test_y = extract_pairs(encoder, test_pairs, device, desc="test features")
    pos_weight = pos_weight_of(train_y)
    torch.manual_seed(seed)  # the decoder's initialisation
    decoder = _train_decoder(ChangeDecoder(train_x.shape[1]).to(device), train_x, train_y, max_steps, lr, batch_size,
                             pos_weight, seed, device, progress)
    counts, predictions = torch.zeros(3, dtype=torch.int64), []
    with torch.no_grad():
        for x, y in zip(test_x.split(32), test_y.split(32)):
            predicted = predict_change(decoder(x.float().to(device)), y.shape[-2:]).cpu()  # (B, S, S)
            counts += change_counts(predicted, y)
            predictions.append(predicted)
    shown = _shown(test_pairs, test_y, torch.cat(predictions))
    return {"counts": counts, "shown": shown, "feature_dim": int(train_x.shape[1]),
            "feature_grid": list(train_x.shape[-2:]), "decoder": "BN, 3x3 conv 64, x2 up, 3x3 conv 32, 1x1 conv",
            "pos_weight": round(pos_weight, 3), "steps": max_steps, "optimizer": FROZEN["optimizer"], "lr": lr,
            "batch_size": batch_size, "change_fraction_train": round(float(train_y.float().mean()), 4),
            "change_fraction_test": round(float(test_y.float().mean()), 4)}


def _finetune(encoder: FrozenEncoder, train_pairs: FramedChange, test_pairs: FramedChange, seed: int, device: str,
              progress: bool, max_steps: int | None, lr: float | None, batch_size: int | None) -> dict[str, Any]:
    if encoder.module is None:
        raise SelfsupError(f"{encoder.description} has no weights to fine-tune; pass a .ckpt file or 'random'")
    max_steps, lr = max_steps or FINETUNE["max_steps"], lr or FINETUNE["lr"]
    batch_size = min(batch_size or FINETUNE["batch_size"], len(train_pairs))
    if batch_size < 2:
        raise SelfsupError(f"only {len(train_pairs)} train pair; fine-tuning needs at least 2: pass more pairs")
    masks = torch.stack([train_pairs[i][2] for i in range(len(train_pairs))])  # (N, S, S)
    pos_weight = pos_weight_of(masks)
    dim = dense_dim(encoder, train_pairs, device)
    torch.manual_seed(seed)
    model = SiameseChange(encoder, dim).to(device)
    decoder = {id(p) for p in model.decoder.parameters()}
    optimizer = torch.optim.AdamW([
        {"params": list(model.decoder.parameters()), "lr": lr},
        {"params": [p for p in model.parameters() if id(p) not in decoder], "lr": lr * FINETUNE["encoder_lr_scale"]}],
        lr=lr, weight_decay=FINETUNE["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max_steps)))
    loader = change_loader(train_pairs, encoder, batch_size, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(seed))
    flips, step = torch.Generator().manual_seed(seed + 1), 0
    model.train()
    with tqdm(total=max_steps, desc="fine-tune", leave=False, disable=None if progress else True) as bar:
        while step < max_steps:
            for a, b, y in loader:
                a, b, y = flip(flips, a, b, y)
                loss = change_loss(model(a.to(device), b.to(device)), y.to(device), pos_weight)
                if not torch.isfinite(loss):
                    raise SelfsupError(f"the loss became {loss.item()} at step {step}; pass a lower --lr")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
                if step == max_steps:
                    break
    model.eval()
    counts, predictions, truth = torch.zeros(3, dtype=torch.int64), [], []
    with torch.no_grad():
        for a, b, y in change_loader(test_pairs, encoder, 32):
            predicted = predict_change(model(a.to(device), b.to(device)), y.shape[-2:]).cpu()
            counts += change_counts(predicted, y)
            predictions.append(predicted)
            truth.append(y)
    shown = _shown(test_pairs, torch.cat(truth), torch.cat(predictions))
    return {"counts": counts, "shown": shown, "feature_dim": dim,
            "decoder": "BN, 3x3 conv 64, x2 up, 3x3 conv 32, 1x1 conv", "pos_weight": round(pos_weight, 3),
            "steps": step, "optimizer": FINETUNE["optimizer"], "lr": lr,
            "encoder_lr": lr * FINETUNE["encoder_lr_scale"], "weight_decay": FINETUNE["weight_decay"],
            "batch_size": batch_size}


def _shown(pairs: FramedChange, truth: torch.Tensor, predicted: torch.Tensor) -> list[tuple]:
    """The FIGURE_PAIRS test pairs with the most true change: [(index, a, b, truth (S, S), predicted (S, S))]."""
    order = truth.flatten(1).float().sum(1).argsort(descending=True)[:FIGURE_PAIRS].tolist()
    return [(i, *pairs[i][:2], truth[i], predicted[i]) for i in order]


def plot_pairs(shown: list[tuple], path: Path, result: dict[str, Any]) -> Path:
    """A figure, one row per pair: time 1, time 2, true change, predicted change; written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(shown), 4, figsize=(8, 2 * len(shown)), squeeze=False)
    for row, (i, a, b, truth, predicted) in zip(axes, shown):
        for ax, image, title in zip(row, (a, b, truth, predicted), (f"time 1 (pair {i})", "time 2", "true change",
                                                                     "predicted")):
            if image.ndim == 3 and image.shape[0] >= 3:  # the first three bands as RGB
                ax.imshow(image[:3].permute(1, 2, 0).numpy())
            elif image.ndim == 3:  # one band
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
            else:  # a change map: white = change
                ax.imshow(image.float().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    f1 = "n/a" if result["f1"] is None else f"{result['f1']:.3f}"
    iou = "n/a" if result["iou"] is None else f"{result['iou']:.3f}"
    fig.suptitle(f"{result['protocol']} F1 {f1}, IoU {iou} | {result['encoder']} | {result['data']} "
                 f"[{result['labels']}]", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
