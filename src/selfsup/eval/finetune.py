"""`selfsup eval finetune`: a pretrained encoder plus a linear classifier, trained end to end on a
class-balanced fraction of the labels, as in SimCLR v2's semi-supervised protocol (Chen et al. 2020b).

Paper defaults: LARS (its trust ratio on the encoder's weight matrices; the new linear layer, biases
and norms take plain momentum steps), lr 0.005*sqrt(batch), no weight decay, no warm-up, cosine
decay, 60 epochs with 1% of the labels and 30 otherwise, random crop + horizontal flip only. The
encoder is any module mapping images to (B, D) features: a method's `finetune_encoder()` when it
has one (SimCLR v2: backbone + first head layer), else its backbone.
"""

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from timm.optim import Lars
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup import __version__
from selfsup.checkpoints import read_checkpoint
from selfsup.data import open_labeled
from selfsup.errors import SelfsupError
from selfsup.eval.features import Encoder, _match_channels
from selfsup.methods import create, method_class
from selfsup.nn import create_backbone
from selfsup.train.module import AtomicCheckpointIO
from selfsup.train.optim import create_optimizer, warmup_cosine
from selfsup.views import TransformedImages
from selfsup.views.crop_flip import crop_flip

CLASSIFIER_FILE = "classifier.ckpt"


class Classifier(nn.Module):
    """encoder (B, C, S, S) -> (B, D) features -> linear layer -> (B, num_classes) logits.

    `transform` is the encoder's evaluation preprocessing of one uint8 image (C, H, W)."""

    def __init__(self, encoder: Encoder, num_features: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(num_features, num_classes)

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder.transform(image)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(images))


def build_encoder(spec: dict[str, Any], in_chans: int) -> tuple[nn.Module, nn.Module | None]:
    """(encoder module, the method it belongs to or None) for spec {"method": NAME or None,
    "method_config": {backbone, small_stem, backbone_kwargs, ...}}: the method's `finetune_encoder()`
    when it defines one, otherwise a bare backbone. Weights are random."""
    name, config = spec["method"], spec["method_config"]
    if name is not None and hasattr(method_class(name), "finetune_encoder"):
        method = create(name, in_chans=in_chans, **config)
        return method.finetune_encoder(), method
    backbone = create_backbone(config["backbone"], in_chans=in_chans, small_stem=config.get("small_stem", False),
                               **config.get("backbone_kwargs", {}))
    return backbone, None


def _pretrained_state(encoder: nn.Module, method: nn.Module | None, saved: dict, path: str) -> dict:
    """The encoder's weights from a pretraining checkpoint's state_dict ('method.*' keys). An encoder
    taken from a method finds each tensor's key by identity within the method."""
    if method is None:
        keys = {k: "method.backbone." + k for k in encoder.state_dict()}
    else:
        where = {id(t): k for k, t in method.state_dict(keep_vars=True).items()}
        keys = {k: "method." + where[id(t)] for k, t in encoder.state_dict(keep_vars=True).items()}
    missing = [source for source in keys.values() if source not in saved]
    if missing:
        raise SelfsupError(f"checkpoint '{path}' has no weights for {missing[0]} (and {len(missing) - 1} more); "
                           "pass a checkpoint written by `selfsup train`")
    return {k: saved[source] for k, source in keys.items()}


def pretrained_encoder(checkpoint: str, channels: int, native_size: int | None, backbone: str = "resnet18",
                       small_stem: bool = False, image_size: int | None = None,
                       backbone_kwargs: dict | None = None) -> tuple[Encoder, dict[str, Any]]:
    """(encoder to fine-tune, the spec that rebuilds it): 'random' gives an untrained `backbone`; a
    pretraining checkpoint its method's fine-tuning encoder (or backbone) with the trained weights."""
    if checkpoint == "pixels":
        raise SelfsupError("'pixels' has no weights to fine-tune; pass a .ckpt file or 'random'")
    if checkpoint == "random":
        config = {"backbone": backbone, "small_stem": small_stem, "backbone_kwargs": backbone_kwargs or {}}
        spec = {"method": None, "method_config": config}
        module, _ = build_encoder(spec, channels)
        return Encoder(module, image_size or native_size or 224, channels, f"random-init {backbone}"), spec
    saved = read_checkpoint(checkpoint)
    meta = saved["selfsup"]
    if meta.get("kind") == "classifier":
        raise SelfsupError(f"'{checkpoint}' is a fine-tuned classifier; pass the pretraining checkpoint it came "
                           f"from ({meta['trained_by'].get('checkpoint', 'RUN/checkpoints/last.ckpt')})")
    spec = {"method": meta["method"], "method_config": meta["method_config"]}
    module, method = build_encoder(spec, meta["in_chans"])
    module.load_state_dict(_pretrained_state(module, method, saved["state_dict"], checkpoint))
    description = f"{meta['method']} {meta['method_config']['backbone']}"
    if method is not None:
        description += " + fine-tuning layers of its head"
    return Encoder(module, image_size or meta["image_size"], meta["in_chans"], description), spec


def feature_dim(encoder: nn.Module, in_chans: int, image_size: int) -> int:
    """D of an encoder's (B, D) output, from one blank image."""
    was_training = encoder.training
    with torch.no_grad():
        d = encoder.eval()(torch.zeros(1, in_chans, image_size, image_size)).shape[1]
    encoder.train(was_training)
    return int(d)


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced, seeded subset of N labeled images in K classes: the same
    number, round(fraction * N / K), from each class (at least 1; all of a smaller class), like
    SimCLR's 1% / 10% ImageNet subsets (~13 / ~128 images per class). fraction 1: every image."""
    if not 0 < fraction <= 1:
        raise SelfsupError(f"label fraction must lie in (0, 1], got {fraction}; pass e.g. 0.01, 0.1 or 1.0")
    if fraction == 1:
        return torch.arange(len(labels))
    labels = labels.numpy()
    classes = np.unique(labels)
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    chosen = []
    for c in classes:
        rng = np.random.default_rng([seed & (2**64 - 1), int(c)])  # one generator per (seed, class)
        chosen.append(rng.permutation(np.flatnonzero(labels == c))[:per_class])
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


class CropFlip:
    """Light augmentation for fine-tuning and distillation: random resized crop (scale min_scale..1)
    + horizontal flip + normalisation; uint8 (C, H, W) -> float (channels, S, S) per image
    (torchvision), or `.batch` on a uint8 (B, C, H, W) batch (kornia, per-sample parameters)."""

    def __init__(self, image_size: int, channels: int, min_scale: float = 0.5):
        self.channels = channels
        self.transform, self.batch_transform = crop_flip(image_size, channels, min_scale)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(_match_channels(image, self.channels))

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255  # (B, C, H, W)
        if x.shape[1] != self.channels:  # as _match_channels: grey mean, or grey repeated
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        return self.batch_transform(x)


class FinetuneModule(L.LightningModule):
    """Trains `model` (a Classifier) with cross-entropy on augmented labeled batches; `meta` is stored
    in every checkpoint under 'selfsup'. Distillation subclasses it and changes `losses`."""

    def __init__(self, model: Classifier, meta: dict[str, Any], optimizer: str, lr: float, weight_decay: float,
                 momentum: float, warmup_fraction: float = 0.0, views: CropFlip | None = None):
        super().__init__()
        self.model, self.meta, self.views = model, meta, views  # views: applied on the device when set
        self.settings = {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum}
        self.warmup_fraction = warmup_fraction

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.views is None or not self.trainer.training:  # evaluation batches are preprocessed already
            return batch
        images, labels = batch
        return self.views.batch(images), labels

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(images)  # (B, K)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.losses(*batch)
        if not torch.isfinite(out["loss"]):
            raise SelfsupError(f"the loss became {out['loss'].item()} at step {self.global_step}; pass a lower --lr")
        self.log_dict({k: v.detach() for k, v in out.items()}, prog_bar=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        return out["loss"]

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(batch[0]).argmax(1)  # (B,) predicted classes

    def make_optimizer(self) -> torch.optim.Optimizer:
        return finetune_optimizer(self.model, **self.settings)

    def configure_optimizers(self):
        optimizer = self.make_optimizer()
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(int(self.warmup_fraction * total), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["selfsup"] = self.meta


def finetune_optimizer(model: Classifier, optimizer: str, lr: float, weight_decay: float,
                       momentum: float) -> torch.optim.Optimizer:
    """LARS adapts the encoder's weight matrices (trust ratio), while the new linear layer, biases and
    norm parameters take plain momentum steps; sgd / adamw use the usual decay groups."""
    if optimizer != "lars":
        return create_optimizer(model, optimizer, lr, weight_decay, momentum)
    adapted = [p for p in model.encoder.parameters() if p.requires_grad and p.ndim > 1]
    ids = {id(p) for p in adapted}
    plain = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": adapted, "weight_decay": weight_decay, "always_adapt": True},
              {"params": plain, "weight_decay": 0.0}]
    return Lars(groups, lr=lr, momentum=momentum)


def make_trainer(out: Path, epochs: int | None, max_steps: int | None, precision: str = "32-true",
                 accelerator: str = "auto", progress: bool = True) -> L.Trainer:
    """One device, CSV log under OUT/logs/csv, atomic checkpoint writes, no automatic checkpoints."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    return L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_epochs=epochs,
                     max_steps=max_steps or -1, logger=CSVLogger(out / "logs", name="csv"),
                     plugins=[AtomicCheckpointIO()], enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=progress, log_every_n_steps=min(10, max_steps or 10), default_root_dir=out)


def train_loader(images: Dataset, views: CropFlip, batched: bool, batch_size: int,
                 num_workers: int | None) -> DataLoader:
    """Shuffled batches of whole size: uint8 images when the views run on the device, else views."""
    if len(images) < 2:
        raise SelfsupError(f"only {len(images)} training image; pass a larger --label-fraction or more data")
    workers = num_workers if num_workers is not None else 0 if batched else 2
    return DataLoader(images if batched else TransformedImages(images, views), batch_size=min(batch_size, len(images)),
                      shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())


def predict(trainer: L.Trainer, module: FinetuneModule, images: Dataset, batch_size: int = 256,
            num_workers: int | None = None) -> torch.Tensor:
    """The module's predict_step outputs for every image, in order, concatenated."""
    loader = DataLoader(TransformedImages(images, module.model.transform), batch_size=batch_size,
                        num_workers=num_workers or 0)
    return torch.cat(trainer.predict(module, loader))


def finetune(checkpoint: str, data: str = "fashion-mnist", label_fraction: float = 0.1, epochs: int | None = None,
             max_steps: int | None = None, batch_size: int = 256, lr: float | None = None, optimizer: str = "lars",
             weight_decay: float = 0.0, momentum: float = 0.9, crop_min_scale: float = 0.5,
             backbone: str = "resnet18", small_stem: bool = False, backbone_kwargs: dict | None = None,
             image_size: int | None = None, test_fraction: float = 0.2, seed: int = 0, out: str | None = None,
             num_workers: int | None = None, precision: str = "32-true", accelerator: str = "auto",
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune `checkpoint`'s encoder (or a random-init `backbone` for 'random') with a linear layer
    on `label_fraction` of `data`'s train labels; top-1 on its test split. Writes OUT/classifier.ckpt
    (loadable with `load_classifier`) and OUT/result.json; returns the result."""
    start = time.time()
    train_set, test_set = open_labeled(data, test_fraction=test_fraction, seed=seed)
    encoder, spec = pretrained_encoder(checkpoint, train_set.channels, train_set.native_size, backbone, small_stem,
                                       image_size, backbone_kwargs)
    L.seed_everything(seed, verbose=False)
    labeled = Subset(train_set, label_subset(train_set.labels, label_fraction, seed).tolist())
    model = Classifier(encoder, feature_dim(encoder, encoder.in_chans, encoder.image_size), len(train_set.classes))
    views = CropFlip(encoder.image_size, encoder.in_chans, crop_min_scale)
    batched = train_set.native_size is not None  # one image size: stack uint8 and augment on the device
    loader = train_loader(labeled, views, batched, batch_size, num_workers)
    lr = lr if lr is not None else 0.005 * math.sqrt(loader.batch_size)
    path = Path(out) if out else _default_out(checkpoint, data, backbone, label_fraction)
    meta = classifier_meta(model, spec, train_set.classes, data, test_fraction, seed, trained_by={
        "command": "finetune", "checkpoint": str(checkpoint), "label_fraction": label_fraction,
        "n_labeled": len(labeled), "lr": lr, "optimizer": optimizer, "batch_size": loader.batch_size})
    if epochs is None and max_steps is None:
        epochs = 60 if label_fraction <= 0.01 else 30
    trainer = make_trainer(path, epochs, max_steps, precision, accelerator, progress)
    module = FinetuneModule(model, meta, optimizer, lr, weight_decay, momentum, views=views if batched else None)
    trainer.fit(module, loader)
    trainer.save_checkpoint(path / CLASSIFIER_FILE, weights_only=True)
    predicted = predict(trainer, module, test_set, num_workers=num_workers).cpu()
    result = {
        "protocol": "finetune", "top1": round(float((predicted == test_set.labels).float().mean()), 4),
        "encoder": encoder.description, "checkpoint": str(checkpoint), "data": data,
        "label_fraction": label_fraction, "n_labeled": len(labeled), "n_test": len(test_set),
        "steps": trainer.global_step, "batch_size": loader.batch_size, "lr": lr, "optimizer": optimizer,
        "image_size": encoder.image_size, "seconds": round(time.time() - start, 1),
        "classifier": str(path / CLASSIFIER_FILE),
    }
    return write_result(result, path)


def classifier_meta(model: Classifier, spec: dict, classes: list[str], data: str, test_fraction: float, seed: int,
                    trained_by: dict[str, Any]) -> dict[str, Any]:
    """What `load_classifier` needs to rebuild a classifier, and where it came from (plain data only)."""
    return {"kind": "classifier", "version": __version__, "seed": seed, "in_chans": model.encoder.in_chans,
            "image_size": model.encoder.image_size, "classes": list(classes), "encoder": spec,
            "num_features": model.fc.in_features, "description": model.encoder.description, "data": data,
            "test_fraction": test_fraction, "trained_by": trained_by}


def load_classifier(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """(classifier with its trained weights, its metadata) from a checkpoint written by `finetune` or `distill`."""
    saved = read_checkpoint(path)
    meta = saved["selfsup"]
    if meta.get("kind") != "classifier":
        raise SelfsupError(f"'{path}' is a pretraining checkpoint, not a fine-tuned classifier; run `selfsup eval "
                           f"finetune --checkpoint {path}` and pass the {CLASSIFIER_FILE} it writes")
    module, _ = build_encoder(meta["encoder"], meta["in_chans"])
    encoder = Encoder(module, meta["image_size"], meta["in_chans"], meta["description"])
    model = Classifier(encoder, meta["num_features"], len(meta["classes"]))
    model.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items() if k.startswith("model.")})
    return model, meta


def write_result(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return {**result, "json": str(folder / "result.json")}


def _default_out(checkpoint: str, data: str, backbone: str, label_fraction: float) -> Path:
    tag = f"{data.replace('/', '_').replace(':', '_').strip('_.')}-{label_fraction * 100:g}pct"
    if checkpoint == "random":
        return Path("runs") / "baselines" / f"finetune-random-{backbone.replace(':', '_')}-{tag}"
    return Path(checkpoint).resolve().parent.parent / "finetune" / tag
