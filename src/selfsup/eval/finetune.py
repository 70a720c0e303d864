"""`selfsup eval finetune` for every modality: a pretrained encoder (the method's `finetune_encoder()`) plus a
linear classifier, trained end to end on a class-balanced fraction of the labels; the one fine-tuning loop, which
distillation reuses.

Images follow SimCLR v2's semi-supervised protocol (Chen et al. 2020b): LARS (its trust ratio on the encoder's
weight matrices; the new linear layer, biases and norms take plain momentum steps), lr 0.005*sqrt(batch), no
weight decay, no warm-up, cosine decay, 60 epochs with 1% of the labels and 30 otherwise, random crop +
horizontal flip only. Text and audio encoders follow BERT's recipe sized for a CPU: AdamW lr 1e-4, weight decay
0.01, 10% warm-up then cosine decay, 300 steps of 32 on every train label (small BERTs fine-tune at 1e-4..3e-5,
Turc et al. 2019).
"""

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import Lars
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup import __version__
from selfsup.checkpoints import load_method, read_checkpoint
from selfsup.errors import SelfsupError
from selfsup.eval.features import Encoder, checkpoint_modality, image_encoder, labelled_loader
from selfsup.eval.run import DEFAULT_DATA, check_classes, check_options, data_tag, open_labeled_split, write_result
from selfsup.methods import build
from selfsup.nn import create_backbone
from selfsup.train.module import make_trainer
from selfsup.train.optim import create_optimizer, warmup_cosine
from selfsup.views import TransformedImages, channels_of
from selfsup.views.crop_flip import CropFlip

CLASSIFIER_FILE = "classifier.ckpt"


class Classifier(nn.Module):
    """encoder (its batch of inputs) -> (B, D) features -> linear layer -> (B, num_classes) logits."""

    def __init__(self, encoder: Encoder, num_features: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.fc(self.encoder(inputs))


def build_encoder(spec: dict[str, Any], in_chans: int | None = None) -> Encoder:
    """The encoder at random init for spec {"method": NAME or None, "method_config": {...}, "data_meta": {...},
    "description": ...}: the method's `finetune_encoder()`, or a bare image backbone for method None."""
    name, config = spec["method"], spec["method_config"]
    data_meta = spec.get("data_meta") or {"in_chans": in_chans, "image_size": spec.get("image_size")}
    if name is None:
        backbone = create_backbone(config["backbone"], in_chans=data_meta["in_chans"],
                                   small_stem=config.get("small_stem", False), **config.get("backbone_kwargs", {}))
        return image_encoder(backbone, data_meta["image_size"], data_meta["in_chans"], spec["description"])
    return _method_encoder(build(name, data_meta, **config), spec["description"])


def _method_encoder(method: nn.Module, description: str) -> Encoder:
    image = method.modality == "image"
    # requires_grad: a teacher (DINO's) or a frozen patch embedding (MoCo v3's) was frozen for pretraining only;
    # channels_of: a TIFF run's fine-tuning views pick its bands and normalise with its band statistics
    return Encoder(method.finetune_encoder().requires_grad_(True), method.eval_batch, description,
                   channels_of(method.data_meta) if image else None, method.data_meta["image_size"] if image else None)


def pretrained_encoder(checkpoint: str, channels: int = 3, native_size: int | None = None,
                       backbone: str | None = None, small_stem: bool = False, image_size: int | None = None,
                       backbone_kwargs: dict | None = None) -> tuple[Encoder, dict[str, Any]]:
    """(encoder to fine-tune, the spec that rebuilds it): 'random' gives an untrained image `backbone`; a
    pretraining checkpoint its method's `finetune_encoder()` with the trained weights."""
    if checkpoint in ("pixels", "tfidf", "mfcc"):
        raise SelfsupError(f"'{checkpoint}' has no weights to fine-tune; pass a .ckpt file or 'random'")
    if checkpoint == "random":
        backbone = backbone or "resnet18"
        config = {"backbone": backbone, "small_stem": small_stem, "backbone_kwargs": backbone_kwargs or {}}
        spec = {"method": None, "method_config": config, "description": f"random-init {backbone}",
                "data_meta": {"in_chans": channels, "image_size": image_size or native_size or 224}}
        return build_encoder(spec), spec
    method, meta = load_method(checkpoint)
    if image_size:
        method.data_meta["image_size"] = image_size
    description = f"{meta['method']} {method.network_name()}"
    if {id(p) for p in method.finetune_encoder().parameters()} != {id(p) for p in method.encoder().parameters()}:
        description += " + fine-tuning layers of its head"
    spec = {"method": meta["method"], "method_config": meta["method_config"], "data_meta": method.data_meta,
            "description": description}
    return _method_encoder(method, description), spec


def feature_dim(encoder: Encoder, example: Any) -> int:
    """D of an encoder's (B, D) output, from one labelled example's input."""
    was_training = encoder.training
    with torch.no_grad():
        d = encoder.eval()(encoder.batch([example])).shape[1]
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


def train_loader(examples: Dataset, encoder: Encoder, views: CropFlip | None, batched: bool, batch_size: int,
                 num_workers: int | None) -> DataLoader:
    """Shuffled batches of whole size: uint8 images when the views run on the device, views made per image in
    the loader, or (no views: text, audio) the encoder's own batches."""
    if len(examples) < 2:
        raise SelfsupError(f"only {len(examples)} training example; pass a larger --label-fraction or more data")
    workers = num_workers if num_workers is not None else 0 if batched or views is None else 2
    options = dict(batch_size=min(batch_size, len(examples)), shuffle=True, drop_last=True, num_workers=workers,
                   persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    if views is None:
        return labelled_loader(examples, encoder.batch, **options)
    return DataLoader(examples if batched else TransformedImages(examples, views), **options)


def predict(trainer: L.Trainer, module: FinetuneModule, examples: Dataset, batch_size: int = 256,
            num_workers: int | None = None) -> torch.Tensor:
    """The module's predict_step outputs for every labelled example, in order, concatenated."""
    loader = labelled_loader(examples, module.model.encoder.batch, batch_size, num_workers or 0)
    return torch.cat(trainer.predict(module, loader))


# Defaults per modality: SimCLR v2's protocol for images, BERT's fine-tuning recipe (sized for a CPU) otherwise.
IMAGE_RECIPE = {"label_fraction": 0.1, "batch_size": 256, "optimizer": "lars", "weight_decay": 0.0,
                "warmup_fraction": 0.0}
SEQUENCE_RECIPE = {"label_fraction": 1.0, "batch_size": 32, "optimizer": "adamw", "weight_decay": 0.01,
                   "warmup_fraction": 0.1, "lr": 1e-4, "max_steps": 300}


def finetune(checkpoint: str, data: str | None = None, label_fraction: float | None = None,
             epochs: int | None = None, max_steps: int | None = None, batch_size: int | None = None,
             lr: float | None = None, optimizer: str | None = None, weight_decay: float | None = None,
             momentum: float = 0.9, crop_min_scale: float = 0.5, limit: tuple[int, int] | None = None,
             test_fraction: float | None = None, seed: int = 0, out: str | None = None,
             num_workers: int | None = None, precision: str = "32-true", accelerator: str = "auto",
             progress: bool = True, **image_options: Any) -> dict[str, Any]:
    """Fine-tune `checkpoint`'s encoder (or a random-init image backbone for 'random') with a linear layer on
    `label_fraction` of `data`'s train labels; top-1 on its test split. Defaults (None) come from the modality's
    recipe above. Writes OUT/classifier.ckpt (loadable with `load_classifier`) and OUT/result.json."""
    start = time.time()
    modality = checkpoint_modality(checkpoint)
    check_options("knn", checkpoint, modality, False, None, image_options)
    image = modality == "image"
    recipe = IMAGE_RECIPE if image else SEQUENCE_RECIPE
    label_fraction = recipe["label_fraction"] if label_fraction is None else label_fraction
    data = data or DEFAULT_DATA.get(modality, "")
    train_set, test_set = open_labeled_split(modality, data, seed, test_fraction, limit)
    check_classes(train_set, data)
    encoder, spec = pretrained_encoder(checkpoint, getattr(train_set, "channels", 3),
                                       getattr(train_set, "native_size", None),
                                       **{k: v for k, v in image_options.items() if v is not None})
    L.seed_everything(seed, verbose=False)
    labeled = Subset(train_set, label_subset(torch.as_tensor(train_set.labels), label_fraction, seed).tolist())
    model = Classifier(encoder, feature_dim(encoder, train_set[0][0]), len(train_set.classes))
    views = CropFlip(encoder.image_size, encoder.in_chans, crop_min_scale) if image else None
    batched = image and train_set.native_size is not None  # one image size: stack uint8, augment on the device
    loader = train_loader(labeled, encoder, views, batched, batch_size or recipe["batch_size"], num_workers)
    if lr is None:
        lr = 0.005 * math.sqrt(loader.batch_size) if image else recipe["lr"]
    optimizer = optimizer or recipe["optimizer"]
    weight_decay = recipe["weight_decay"] if weight_decay is None else weight_decay
    path = Path(out) if out else _default_out(checkpoint, data, image_options.get("backbone"), label_fraction)
    result_file = path if path.suffix == ".json" else path / "result.json"
    path = path.with_suffix("") if path.suffix == ".json" else path
    meta = classifier_meta(model, spec, train_set.classes, data, 0.2 if test_fraction is None else test_fraction, seed,
                           trained_by={
        "command": "finetune", "checkpoint": str(checkpoint), "label_fraction": label_fraction,
        "n_labeled": len(labeled), "lr": lr, "optimizer": optimizer, "batch_size": loader.batch_size})
    if epochs is None and max_steps is None:
        if image:
            epochs = 60 if label_fraction <= 0.01 else 30
        else:
            max_steps = recipe["max_steps"]
    trainer = make_trainer(path, epochs, max_steps, precision, accelerator, progress)
    module = FinetuneModule(model, meta, optimizer, lr, weight_decay, momentum, recipe["warmup_fraction"],
                            views=views if batched else None)
    trainer.fit(module, loader)
    trainer.save_checkpoint(path / CLASSIFIER_FILE, weights_only=True)
    predicted = predict(trainer, module, test_set, num_workers=num_workers).cpu()
    result = {
        "protocol": "finetune", "top1": round(float((predicted == torch.as_tensor(test_set.labels)).float().mean()), 4),
        "encoder": encoder.description, "checkpoint": str(checkpoint), "modality": modality, "data": data,
        "label_fraction": label_fraction, "n_labeled": len(labeled), "n_test": len(test_set),
        "steps": trainer.global_step, "batch_size": loader.batch_size, "lr": lr, "optimizer": optimizer,
        **({"image_size": encoder.image_size} if image else {}), "seconds": round(time.time() - start, 1),
        "classifier": str(path / CLASSIFIER_FILE),
    }
    return write_result(result, result_file)


def classifier_meta(model: Classifier, spec: dict, classes: list[str], data: str, test_fraction: float | None,
                    seed: int, trained_by: dict[str, Any]) -> dict[str, Any]:
    """What `load_classifier` needs to rebuild a classifier, and where it came from (plain data only)."""
    encoder = model.encoder
    in_chans = None if encoder.in_chans is None else int(encoder.in_chans)  # a plain int (Bands does not unpickle)
    return {"kind": "classifier", "version": __version__, "seed": seed, "in_chans": in_chans,
            "image_size": encoder.image_size, "classes": list(classes), "encoder": spec,
            "num_features": model.fc.in_features, "description": encoder.description, "data": data,
            "test_fraction": test_fraction, "trained_by": trained_by}


def load_classifier(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """(classifier with its trained weights, its metadata) from a checkpoint written by `finetune` or `distill`."""
    saved = read_checkpoint(path)
    meta = saved["selfsup"]
    if meta.get("kind") != "classifier":
        raise SelfsupError(f"'{path}' is a pretraining checkpoint, not a fine-tuned classifier; run `selfsup eval "
                           f"finetune --checkpoint {path}` and pass the {CLASSIFIER_FILE} it writes")
    spec = {"description": meta["description"], "image_size": meta["image_size"], **meta["encoder"]}
    model = Classifier(build_encoder(spec, meta["in_chans"]), meta["num_features"], len(meta["classes"]))
    model.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items() if k.startswith("model.")})
    return model, meta


def _default_out(checkpoint: str, data: str, backbone: str | None, label_fraction: float) -> Path:
    tag = f"{data_tag(data)}-{label_fraction * 100:g}pct"
    if checkpoint == "random":
        return Path("runs") / "baselines" / f"finetune-random-{(backbone or 'resnet18').replace(':', '_')}-{tag}"
    return Path(checkpoint).resolve().parent.parent / "finetune" / tag
