"""`selfsup eval segment`: semantic segmentation on dense data (METHODS.md, "Dense evaluation protocols").

The encoder comes from `frozen_encoder` (a checkpoint, its random-init twin, or 'random' / 'pixels'), its
per-location features from the method's `dense_features` (B, D, h, w).

- Frozen probe (default): the features of every train and test image are extracted once; a 1x1 convolution on
  them, its logits upsampled bilinearly to the label map, is trained with cross-entropy (label 255 ignored). A
  second probe on the same features learns object against background (every class merged): its foreground IoU,
  `objectness_iou`, says whether the features find the objects even where their classes are not separable.
  The features are standardised per channel with the train set's statistics first (a BatchNorm without affine,
  as MAE's linear probe), so one learning rate suits every encoder: Adam, lr 1e-2, 20 epochs of 16 images.
- Fine-tuning (`finetune=True`): the encoder plus torchvision's FCN head (Long et al. 2015: 3x3 conv to D/4,
  BN, ReLU, dropout 0.1, 1x1 conv) trained end to end on a seeded `label_fraction` of the train images, with a
  random horizontal flip: AdamW, lr 1e-3 for the head and 1e-4 for the encoder, weight decay 1e-4, cosine decay,
  300 steps of 8 images (sized for a CPU). 'random' or `random_init` gives the baseline network from scratch.

Inputs: each image is resized (shorter side to the encoder's input side S) and centre-cropped as `EvalTransform`
does, and its label map the same way with nearest-neighbour interpolation; scores are computed in that S x S frame.
IoU per class from one confusion matrix over the test split; background (0) is counted as a class, and mIoU is
the mean over the classes present in the test labels or the predictions; foreground IoU (any object against
background, whatever class it is given) comes from the same matrix. Every result states its data's label tag
(real / pseudo / synthetic).
"""

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.transforms import v2
from tqdm import tqdm

from selfsup.data.dense import DenseSet, open_dense
from selfsup.errors import SelfsupError
from selfsup.eval.features import FrozenEncoder, checkpoint_modality, frozen_encoder
from selfsup.eval.run import _default_out, check_options, write_result

IGNORE = 255  # DenseTarget.semantic's "not labelled"
DEFAULT_DATA = "paste-scenes"
PROBE = {"epochs": 20, "lr": 1e-2, "batch_size": 16, "optimizer": "adam"}
FINETUNE = {"label_fraction": 0.1, "max_steps": 300, "lr": 1e-3, "encoder_lr_scale": 0.1, "batch_size": 8,
            "weight_decay": 1e-4, "optimizer": "adamw"}


class FramedPairs(Dataset):
    """`dense[i]` -> (uint8 image (C, S, S), labels uint8 (S, S)): the image resized (shorter side S, antialiased)
    and centre-cropped like `EvalTransform`, its semantic map the same way with nearest neighbours, so that the
    encoder's input and the labels stay aligned pixel for pixel."""

    def __init__(self, dense: DenseSet, size: int):
        self.dense = dense
        self.frame = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.dense)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.dense[i]
        image, mask = self.frame(tv_tensors.Image(image), tv_tensors.Mask(target.semantic))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).to(torch.uint8)


class _Collate:
    """[(uint8 image, labels (S, S)), ...] -> (the encoder's batch, labels (B, S, S) uint8)."""

    def __init__(self, batch: Callable[[list], Any]):
        self.batch = batch

    def __call__(self, items: list[tuple]) -> tuple[Any, torch.Tensor]:
        return self.batch([image for image, _ in items]), torch.stack([labels for _, labels in items])


def pair_loader(pairs: Dataset, encoder: FrozenEncoder, batch_size: int, **options: Any) -> DataLoader:
    return DataLoader(pairs, batch_size=batch_size, collate_fn=_Collate(encoder.batch), **options)


def upsampled_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, K, h, w), upsampled bilinearly to labels (B, S, S) (255 ignored)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, S, S)
    return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE)


def predict_map(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """logits (B, K, h, w) -> predicted classes (B, S, S) after bilinear upsampling to `size`."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows the true class, columns the predicted one, of predicted and labels (any equal
    shape, classes 0..K-1); pixels labelled 255 are left out."""
    keep = labels != IGNORE
    index = labels[keep].long() * num_classes + predicted[keep].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """(K,) IoU = TP / (TP + FP + FN) from a (K, K) confusion matrix; NaN for a class that is neither in the labels
    nor predicted."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.nan)


def objects_only(labels: torch.Tensor) -> torch.Tensor:
    """Label maps (N, S, S) -> 1 where any object is, 0 on background, 255 (not labelled) kept."""
    return torch.where(labels == IGNORE, labels, labels.clamp(max=1))


def foreground_iou(confusion: torch.Tensor) -> float:
    """IoU of "any object" against background (class 0) from a (K, K) confusion matrix: whether the objects are
    found, whatever class they are given; NaN when neither labels nor predictions hold an object."""
    foreground = confusion[1:, 1:].sum()  # an object pixel predicted as some object
    union = confusion.sum() - confusion[0, 0]
    return float(foreground / union) if union > 0 else math.nan


def mean_iou(iou: torch.Tensor) -> float:
    """The mean of the defined (non-NaN) per-class IoUs."""
    return float(iou.nanmean())


@torch.no_grad()
def extract_dense(encoder: FrozenEncoder, pairs: Dataset, batch_size: int = 32, device: str = "cpu",
                  desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D, h, w) float16 on the CPU, labels (N, S, S) uint8) of every framed pair, in order, with the
    encoder in eval mode (its mode is restored). Half precision halves the memory (paste-scenes' 4,000 train images
    through a small-stem ResNet-18: 8x8x512 each, 0.26 GB) and does not change what a linear probe learns."""
    module = encoder.module
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    features, labels = [], []
    for batch, label in tqdm(pair_loader(pairs, encoder, batch_size), desc=desc, leave=False, disable=None):
        features.append(encoder.dense(batch.to(device)).half().cpu())  # (B, D, h, w)
        labels.append(label)
    if module is not None:
        module.train(was_training)
    return torch.cat(features), torch.cat(labels)


def channel_stats(x: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), variance (D,)) over every location of features (N, D, h, w), in float64 chunk by chunk."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.double()
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    return mean.float(), (squares / count - mean.square()).clamp(min=0).float()


def linear_probe_head(train_x: torch.Tensor, num_classes: int, seed: int = 0) -> nn.Sequential:
    """A BatchNorm without affine holding train_x's (N, D, h, w) per-channel mean and variance (a fixed
    standardisation: keep the head in eval mode), then a seeded 1x1 convolution D -> num_classes."""
    norm = nn.BatchNorm2d(train_x.shape[1], affine=False)
    norm.running_mean, norm.running_var = channel_stats(train_x)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        conv = nn.Conv2d(train_x.shape[1], num_classes, kernel_size=1)
    return nn.Sequential(norm, conv).eval()


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, epochs: int = PROBE["epochs"],
              lr: float = PROBE["lr"], batch_size: int = PROBE["batch_size"], seed: int = 0,
              progress: bool = True) -> nn.Sequential:
    """The linear probe (`linear_probe_head`) fit with Adam on features (N, D, h, w) and labels (N, S, S) (255
    ignored) for `epochs` seeded shuffled passes; returns it in eval mode."""
    head = linear_probe_head(train_x, num_classes, seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    with tqdm(total=steps, desc="probe", leave=False, disable=None if progress else True) as bar:
        for _ in range(epochs):
            for index in torch.randperm(len(train_x), generator=order).split(batch_size):
                labels = train_y[index]
                if (labels != IGNORE).any():  # a batch without labels has no loss
                    loss = upsampled_loss(head(train_x[index].float()), labels)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    return head


@torch.no_grad()
def confusion_over(batches: Iterable[tuple[Any, torch.Tensor]], logits_of: Callable[[Any], torch.Tensor],
                   num_classes: int) -> torch.Tensor:
    """The (K, K) confusion matrix of logits_of(inputs) (B, K, h, w), upsampled, against labels (B, S, S)."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for inputs, labels in batches:
        predicted = predict_map(logits_of(inputs), labels.shape[-2:]).cpu()  # (B, S, S)
        confusion += confusion_matrix(predicted, labels, num_classes)
    return confusion


def image_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded random max(2, round(fraction * n)) of n images (all of them for fraction 1)."""
    if not 0 < fraction <= 1:
        raise SelfsupError(f"label fraction must lie in (0, 1], got {fraction}; pass e.g. 0.01, 0.1 or 1.0")
    count = min(n, max(2, round(fraction * n)))
    if count < 2:
        raise SelfsupError(f"only {n} train image; fine-tuning needs at least 2: pass more data")
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist())


class Segmenter(nn.Module):
    """The encoder's dense map (B, D, h, w) -> FCN head -> (B, K, h, w) logits; `module` holds the encoder's weights
    (a method, or a bare backbone) so that they train with the head."""

    def __init__(self, encoder: FrozenEncoder, dim: int, num_classes: int):
        super().__init__()
        self.module, self.dense = encoder.module.requires_grad_(True), encoder.dense  # a teacher's may be frozen
        self.head = FCNHead(dim, num_classes)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense(batch))


def flip_pairs(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random horizontal flip of half the (image (C, S, S), labels (S, S)) pairs, both alike."""
    flip = torch.rand(len(images), generator=generator) < 0.5  # (B,)
    images, labels = images.clone(), labels.clone()
    images[flip], labels[flip] = images[flip].flip(-1), labels[flip].flip(-1)
    return images, labels


def finetune_optimizer(model: Segmenter, lr: float, weight_decay: float, encoder_lr_scale: float
                       ) -> torch.optim.Optimizer:
    """AdamW: the new head at lr, the pretrained encoder at lr * encoder_lr_scale (parameters that its dense map
    does not use get no gradient and so never move)."""
    head = {id(p) for p in model.head.parameters()}
    encoder = [p for p in model.parameters() if id(p) not in head]
    return torch.optim.AdamW([{"params": list(model.head.parameters()), "lr": lr},
                              {"params": encoder, "lr": lr * encoder_lr_scale}], lr=lr, weight_decay=weight_decay)


def train_segmenter(model: Segmenter, loader: DataLoader, max_steps: int, lr: float, weight_decay: float,
                    encoder_lr_scale: float, seed: int, device: str, progress: bool = True) -> int:
    """`max_steps` AdamW steps (cosine decay to 0) on shuffled, flipped batches of `loader`; returns the steps."""
    optimizer = finetune_optimizer(model, lr, weight_decay, encoder_lr_scale)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max_steps)))
    flips, step = torch.Generator().manual_seed(seed), 0
    model.train()
    with tqdm(total=max_steps, desc="fine-tune", leave=False, disable=None if progress else True) as bar:
        while step < max_steps:
            for images, labels in loader:
                images, labels = flip_pairs(images, labels, flips)
                loss = upsampled_loss(model(images.to(device)), labels.to(device))
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
    return step


def open_segmentation(data: str) -> tuple[DenseSet, DenseSet]:
    """(train, test) splits of dense `data` that carry semantic maps; open_dense's error for anything else."""
    train_set, test_set = open_dense(data, "train"), open_dense(data, "test")
    if "semantic" not in train_set.has:
        raise SelfsupError(f"{train_set.name} has no semantic maps (only {', '.join(train_set.has)}); "
                           "segmentation needs masks: pass paste-scenes or a folder with DIR/masks/")
    if len(train_set.classes) >= IGNORE - 1:
        raise SelfsupError(f"{train_set.name} has {len(train_set.classes)} classes; segmentation takes at most 253")
    for split, examples in (("train", train_set), ("test", test_set)):
        if len(examples) == 0:
            raise SelfsupError(f"the {split} split of {data} holds no images; pass a dense set with both splits")
    return train_set, test_set


def check_encoder(checkpoint: str, random_init: bool, finetune: bool, image_options: dict[str, Any],
                  task: str = "segmentation") -> None:
    """Refuse, with one line and before any data is read, an encoder without per-location image features (text,
    audio), 'pixels' to fine-tune, and options that would be ignored."""
    modality = checkpoint_modality(checkpoint)
    if modality != "image":
        raise SelfsupError(f"{task} needs per-location image features and '{checkpoint}' encodes {modality}; "
                           "pass a checkpoint of an image method, or 'random'")
    check_options("knn", checkpoint, modality, random_init, None, image_options)
    if finetune and checkpoint == "pixels":
        raise SelfsupError("'pixels' has no weights to fine-tune; pass a .ckpt file or 'random'")


def evaluate_segment(checkpoint: str, data: str | None = None, finetune: bool = False,
                     label_fraction: float | None = None, epochs: int | None = None, max_steps: int | None = None,
                     lr: float | None = None, batch_size: int | None = None, random_init: bool = False,
                     seed: int = 0, out: str | None = None, device: str | None = None, progress: bool = True,
                     **image_options: Any) -> dict[str, Any]:
    """mIoU and per-class IoU (background included) on `data`'s test split (default paste-scenes) of the frozen
    linear probe, or with `finetune` of the encoder + FCN head trained on `label_fraction` of the train images.

    checkpoint: a .ckpt file (random_init: its random twin), 'random' or 'pixels' (probe only; the normalised
    pixels as a C-channel map); image_options (backbone, small_stem, backbone_kwargs for 'random'; image_size) as
    `evaluate`. epochs applies to the probe, max_steps and label_fraction to fine-tuning; None takes the defaults
    in PROBE / FINETUNE. Writes the result JSON (like `evaluate`) and returns it. Raises SelfsupError for a
    text/audio encoder, data without semantic maps (open_dense's error for data that is not dense), or an option
    that does not apply."""
    start = time.time()
    if not finetune and (label_fraction is not None or max_steps is not None):
        raise SelfsupError(f"--{'label-fraction' if label_fraction is not None else 'max-steps'} applies to "
                           "--finetune; the frozen probe trains on every train image for --epochs")
    if finetune and epochs is not None:
        raise SelfsupError("--epochs sizes the frozen probe; fine-tuning runs --max-steps")
    check_encoder(checkpoint, random_init, finetune, image_options)
    data = data or DEFAULT_DATA
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_set, test_set = open_segmentation(data)
    torch.manual_seed(seed)  # before building the network: a random-init twin is seeded
    encoder = frozen_encoder(checkpoint, random_init, None, train_set.channels, train_set.native_size,
                             **{key: v for key, v in image_options.items() if v is not None})
    if encoder.module is not None:
        encoder.module.to(device)
    size = encoder.image_size
    train_pairs, test_pairs = FramedPairs(train_set, size), FramedPairs(test_set, size)
    num_classes = len(train_set.classes) + 1  # background is class 0
    run = (_finetune if finetune else _probe)(encoder, train_pairs, test_pairs, num_classes, seed, device, progress,
                                              label_fraction=label_fraction, epochs=epochs, max_steps=max_steps,
                                              lr=lr, batch_size=batch_size, objectness=train_set.background)
    confusion = run.pop("confusion")
    iou = iou_per_class(confusion)
    if not train_set.background:  # every pixel has a class: a predicted 0 is an error, not a class to score
        iou[0] = math.nan
    protocol = f"segment-finetune-{run['label_fraction'] * 100:g}pct" if finetune else "segment"
    found = foreground_iou(confusion) if train_set.background else math.nan
    result = {"protocol": protocol, "miou": round(mean_iou(iou), 4),
              "foreground_iou": None if math.isnan(found) else round(found, 4),
              "iou": {name: None if math.isnan(v) else round(float(v), 4)
                      for name, v in zip(["background", *train_set.classes], iou.tolist())},
              "background_counted": train_set.background, "tag": train_set.label_tag("semantic"),
              "encoder": encoder.description,
              "checkpoint": checkpoint, "random_init": random_init, "modality": "image", "data": data,
              "n_train": len(train_set), "n_test": len(test_set), "classes": len(train_set.classes),
              "image_size": size, **run, "seed": seed, "seconds": round(time.time() - start, 1)}
    path = Path(out) if out else _default_out(protocol, checkpoint, data, random_init, image_options.get("backbone"))
    return write_result(result, path)


def _probe(encoder: FrozenEncoder, train_pairs: Dataset, test_pairs: Dataset, num_classes: int, seed: int,
           device: str, progress: bool, epochs: int | None, lr: float | None, batch_size: int | None,
           objectness: bool = True, **_: Any) -> dict[str, Any]:
    """The frozen 1x1-conv probe: its settings and the test confusion matrix; with `objectness` (data with a
    background) also the IoU of a second probe on object-vs-background labels."""
    epochs, lr, batch_size = epochs or PROBE["epochs"], lr or PROBE["lr"], batch_size or PROBE["batch_size"]
    train_x, train_y = extract_dense(encoder, train_pairs, device=device, desc="train features")
    test_x, test_y = extract_dense(encoder, test_pairs, device=device, desc="test features")
    head = fit_probe(train_x, train_y, num_classes, epochs, lr, batch_size, seed, progress)
    batches = zip(test_x.split(batch_size), test_y.split(batch_size))
    confusion = confusion_over(batches, lambda x: head(x.float()), num_classes)
    settings = {"feature_dim": int(train_x.shape[1]), "feature_grid": list(train_x.shape[-2:]), "epochs": epochs,
                "optimizer": PROBE["optimizer"], "lr": lr, "batch_size": batch_size}
    if not objectness:
        return {"confusion": confusion, **settings}
    # where the objects are, whatever their class: a second probe on object-vs-background labels
    probe = head if num_classes == 2 else fit_probe(train_x, objects_only(train_y), 2, epochs, lr, batch_size, seed,
                                                     progress)
    found = confusion_over(zip(test_x.split(batch_size), objects_only(test_y).split(batch_size)),
                           lambda x: probe(x.float()), 2)
    return {"confusion": confusion, "objectness_iou": round(foreground_iou(found), 4), **settings}


def _finetune(encoder: FrozenEncoder, train_pairs: Dataset, test_pairs: Dataset, num_classes: int, seed: int,
              device: str, progress: bool, label_fraction: float | None, max_steps: int | None, lr: float | None,
              batch_size: int | None, **_: Any) -> dict[str, Any]:
    """Encoder + FCN head trained end to end on a label fraction: its settings and the test confusion matrix."""
    if encoder.module is None:
        raise SelfsupError(f"{encoder.description} has no weights to fine-tune; pass a .ckpt file or 'random'")
    fraction = FINETUNE["label_fraction"] if label_fraction is None else label_fraction
    max_steps, lr = max_steps or FINETUNE["max_steps"], lr or FINETUNE["lr"]
    labelled = Subset(train_pairs, image_subset(len(train_pairs), fraction, seed))
    batch_size = min(batch_size or FINETUNE["batch_size"], len(labelled))
    dim = dense_dim(encoder, train_pairs, device)
    torch.manual_seed(seed)  # the head's initialisation and its dropout
    model = Segmenter(encoder, dim, num_classes).to(device)
    loader = pair_loader(labelled, encoder, batch_size, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(seed))
    steps = train_segmenter(model, loader, max_steps, lr, FINETUNE["weight_decay"], FINETUNE["encoder_lr_scale"],
                            seed, device, progress)
    model.eval()
    confusion = confusion_over(pair_loader(test_pairs, encoder, 32), lambda b: model(b.to(device)), num_classes)
    return {"confusion": confusion, "label_fraction": fraction, "n_labeled": len(labelled), "feature_dim": dim,
            "decoder": "FCN head (torchvision)", "steps": steps, "optimizer": FINETUNE["optimizer"], "lr": lr,
            "encoder_lr": lr * FINETUNE["encoder_lr_scale"], "weight_decay": FINETUNE["weight_decay"],
            "batch_size": batch_size}


@torch.no_grad()
def dense_dim(encoder: FrozenEncoder, pairs: Dataset, device: str) -> int:
    """D of the encoder's (B, D, h, w) map, from one framed image (the encoder's mode is restored)."""
    was_training = encoder.module.training
    encoder.module.eval()
    dim = encoder.dense(encoder.batch([pairs[0][0]]).to(device)).shape[1]
    encoder.module.train(was_training)
    return int(dim)
