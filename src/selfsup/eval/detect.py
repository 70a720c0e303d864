"""`selfsup eval detect`: object detection on dense data with boxes (METHODS.md, "Dense evaluation protocols").

A standard torchvision detector, FCOS (default), RetinaNet or Faster R-CNN (built with weights=None and
weights_backbone=None), gets the pretrained encoder (the method's `encoder()`, a timm or torchvision ResNet) as the
bottom-up path of torchvision's `BackboneWithFPN` (its IntermediateLayerGetter takes the stage outputs layer1..4, the
same modules as the encoder's, so the pretrained weights are what trains). FCOS and RetinaNet read C3-C5 plus P6/P7
(`LastLevelP6P7`), Faster R-CNN C2-C5 plus a max-pooled P6, as torchvision's own ResNet-50 detectors do. The whole
detector, backbone included, is fine-tuned (`freeze_backbone` keeps the encoder's weights and BN statistics fixed);
'random' or `random_init` gives the same network from scratch, the baseline.

Recipe, sized for a CPU (RECIPE): SGD, momentum 0.9, lr 0.005, weight decay 1e-4 (none on norms and biases),
linear warm-up over the first 10 % of the steps then cosine decay, batches of 4 images with a seeded random
horizontal flip: torchvision's detection reference recipe (SGD lr 0.02 for 16 images, weight decay 1e-4, warm-up)
with its lr scaled linearly to 4 images. Length: 100 steps (400 images) unless `epochs` or `max_steps` is given, a
fixed compute budget whatever the data's size: about 3 epochs of `trees` (138 images, ~5 min on one CPU core with
ResNet-18) and a tenth of an epoch of `paste-scenes-multi` (4,000 images), where 3 epochs would take a CPU core
well over 10 minutes. Deviations from torchvision's detectors, for small images and a CPU: the FPN is 128 channels
wide instead of 256 (at 256 the heads' convolutions cost 3x the whole ResNet-18 at 200 px); RetinaNet's and
Faster R-CNN's anchors are half the COCO sizes (16-256 px instead of 32-512: trees' crowns and Fashion-MNIST
objects are 10-100 px); FCOS keeps detections from score 0.05 (COCO evaluation's usual floor) instead of 0.2.
Labels stay 1-based with num_classes = K + 1, as torchvision's COCO models.

Inputs: images keep their native size: the detector's GeneralizedRCNNTransform gets min_size = max_size = the data's
side (`image_size` overrides it), so nothing is rescaled and boxes stay aligned; pixels are scaled to [0, 1] and
normalised with the statistics every selfsup view uses. A grayscale encoder sees RGB data as its channel mean (and an
RGB one grey repeated), as every other evaluation does (`selfsup.views.match_channels`).

DETR (`detector="detr"`, Carion et al. 2020): the DETR of an UP-DETR checkpoint (its `encoder()`: backbone, transformer,
box head), or for any other checkpoint a fresh DETR of the same size on its encoder, with a new linear class head for
K classes + "no object"; Hungarian matching and DETR's loss (selfsup.losses.updetr.DETRLoss, weights 1/5/2, ∅ 0.1).
Images are resized to the side `size` (boxes with them) and each of the Q queries is one detection. Recipe
(DETR_RECIPE): DETR's AdamW lr 1e-4, weight decay 1e-4, the same warm-up + cosine, batches of 4, 100 steps; without
DETR's separate backbone lr (1e-5), gradient clipping (0.1) and auxiliary decoding losses.

Metric: torchmetrics' MeanAveragePrecision (iou_type "bbox", pycocotools backend) on the test split: AP50 and AP
(COCO mAP@[.5:.95], mean over classes). Every result names its data's label tag (real / pseudo / synthetic).
"""

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import box_convert
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from tqdm import tqdm

from selfsup.checkpoints import load_method
from selfsup.data.dense import DenseSet, open_dense
from selfsup.errors import SelfsupError
from selfsup.eval.features import checkpoint_modality
from selfsup.eval.run import _default_out, check_options, write_result
from selfsup.losses.updetr import DETRLoss
from selfsup.nn.detr import DETR
from selfsup.nn import create_backbone
from selfsup.train.optim import create_optimizer, warmup_cosine
from selfsup.views.eval import match_channels, normalization_for

DETECTORS = ("fcos", "retinanet", "fasterrcnn", "detr")
DEFAULT_DATA = "trees"
RECIPE = {"max_steps": 100, "batch_size": 4, "optimizer": "sgd", "lr": 0.005, "momentum": 0.9, "weight_decay": 1e-4,
          "warmup_fraction": 0.1}
DETR_RECIPE = {**RECIPE, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-4}
FPN_CHANNELS = 128
STAGES = ("layer1", "layer2", "layer3", "layer4")  # a ResNet's stages C2..C5 (strides 4..32), timm and torchvision
ANCHOR_SIZES = (16, 32, 64, 128, 256)  # px at P3..P7 (RetinaNet) or P2..P6 (Faster R-CNN): COCO's halved


class Boxes(Dataset):
    """`dense[i]` -> (float image (channels, H, W) in [0, 1], {"boxes": float32 (N, 4) xyxy px, "labels": int64 (N,)
    1-based}): the native image with its channels matched to the encoder's, so boxes need no change."""

    def __init__(self, dense: DenseSet, channels: int):
        self.dense, self.channels = dense, channels

    def __len__(self) -> int:
        return len(self.dense)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.dense[i]
        image = match_channels(image, self.channels).float() / 255  # (channels, H, W)
        return image, {"boxes": target.boxes.float().reshape(-1, 4), "labels": target.labels.long().reshape(-1)}


def collate(items: list[tuple]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Detectors take lists: images of any size and targets with any number of boxes."""
    return [image for image, _ in items], [target for _, target in items]


def flip(images: list[torch.Tensor], targets: list[dict], generator: torch.Generator) -> tuple[list, list]:
    """A seeded random horizontal flip of half the images (C, H, W), their boxes mirrored: x -> W - x."""
    flipped_images, flipped_targets = [], []
    for image, target in zip(images, targets):
        if torch.rand(1, generator=generator).item() < 0.5:
            boxes = target["boxes"].clone()  # (N, 4) xyxy
            boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
            image, target = image.flip(-1), {**target, "boxes": boxes}
        flipped_images.append(image)
        flipped_targets.append(target)
    return flipped_images, flipped_targets


def check_stages(backbone: nn.Module, description: str) -> None:
    """Raise SelfsupError unless `backbone` is a ResNet-style CNN whose children include layer1..layer4."""
    children = {name for name, _ in backbone.named_children()}
    if not set(STAGES) <= children:
        raise SelfsupError(f"eval detect supports ResNet-style CNN backbones with 4 stages (timm or torchvision "
                           f"resnet*, resnext*, wide_resnet*); {description} is a {type(backbone).__name__}: pass a "
                           "checkpoint trained with such a backbone, or 'random' with --backbone resnet18")


@torch.no_grad()
def stage_widths(backbone: nn.Module, in_chans: int) -> list[int]:
    """Channels of the C2..C5 maps (layer1..layer4 outputs), from one 64 x 64 input in eval mode (mode restored)."""
    was_training = backbone.training
    body = IntermediateLayerGetter(backbone.eval(), {name: name for name in STAGES})
    widths = [int(v.shape[1]) for v in body(torch.zeros(1, in_chans, 64, 64)).values()]
    backbone.train(was_training)
    return widths


def fpn_backbone(backbone: nn.Module, in_chans: int, detector: str, channels: int = FPN_CHANNELS
                 ) -> BackboneWithFPN:
    """The encoder's stages under torchvision's FPN: C3-C5 + P6/P7 for FCOS/RetinaNet (5 maps), C2-C5 + a max-pooled
    level for Faster R-CNN (5 maps), each `channels` wide."""
    widths = stage_widths(backbone, in_chans)
    first = 0 if detector == "fasterrcnn" else 1
    layers = {name: str(i) for i, name in enumerate(STAGES[first:])}
    extra = LastLevelMaxPool() if detector == "fasterrcnn" else LastLevelP6P7(channels, channels)
    return BackboneWithFPN(backbone, layers, widths[first:], channels, extra_blocks=extra)


class DETRDetector(nn.Module):
    """torchvision's detector interface around a DETR (selfsup.methods.updetr.DETR): train mode, (images [(C, H, W)
    in [0, 1]], targets [{"boxes" (N, 4) xyxy px, "labels" (N,) 1-based}]) -> {"loss": DETR's Hungarian loss}; eval
    mode, images -> [{"boxes" (Q, 4) xyxy px, "scores" (Q,), "labels" (Q,) 1-based}], one detection per query, scored
    by its best class probability (∅ left out). Images are resized to `size` x `size` and normalised as selfsup's
    views; boxes are mapped to and from each image's own size."""

    def __init__(self, detr: DETR, in_chans: int, num_classes: int, size: int):
        super().__init__()
        self.detr, self.size = detr, size
        self.class_head = nn.Linear(detr.num_features, num_classes + 1)  # K classes + ∅ (last)
        self.criterion = DETRLoss(num_classes)
        mean, std = normalization_for(in_chans)
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    @property
    def backbone(self) -> SimpleNamespace:
        """`.body` is the CNN, as in torchvision's detectors (train_detector freezes it there)."""
        return SimpleNamespace(body=self.detr.backbone)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        S = self.size
        x = torch.stack([image if image.shape[-2:] == (S, S) else
                         F.interpolate(image[None], (S, S), mode="bilinear", antialias=True)[0] for image in images])
        hidden, boxes = self.detr((x - self.mean) / self.std)  # (B, Q, d), (B, Q, 4) cxcywh in [0, 1]
        logits = self.class_head(hidden)  # (B, Q, K + 1)
        scale = [torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
                 for h, w in (image.shape[-2:] for image in images)]  # px per unit, per image
        if self.training:
            target_boxes = [box_convert(t["boxes"], "xyxy", "cxcywh") / s for t, s in zip(targets, scale)]
            return {"loss": self.criterion(logits, boxes, target_boxes, [t["labels"] - 1 for t in targets])["loss"]}
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, Q) each
        corners = box_convert(boxes, "cxcywh", "xyxy")
        return [{"boxes": corners[b] * scale[b], "scores": scores[b], "labels": labels[b] + 1}
                for b in range(len(images))]


def build_detector(detector: str, backbone: nn.Module, in_chans: int, num_classes: int, size: int,
                   channels: int = FPN_CHANNELS) -> nn.Module:
    """torchvision's `detector` for `num_classes` object classes (labels 1..K) on images resized to side `size`
    (min_size = max_size: native images stay as they are), normalised as selfsup's views."""
    if detector == "detr":  # an UP-DETR checkpoint's whole DETR, else a fresh one on the encoder
        return DETRDetector(backbone if isinstance(backbone, DETR) else DETR(backbone), in_chans, num_classes, size)
    mean, std = normalization_for(in_chans)
    common = {"num_classes": num_classes + 1, "min_size": size, "max_size": size, "image_mean": list(mean),
              "image_std": list(std)}
    body = fpn_backbone(backbone, in_chans, detector, channels)
    if detector == "fcos":
        return FCOS(body, score_thresh=0.05, **common)
    if detector == "retinanet":
        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in ANCHOR_SIZES)  # 3 scales per level
        return RetinaNet(body, anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5), **common)
    if detector == "fasterrcnn":
        anchors = AnchorGenerator(tuple((s,) for s in ANCHOR_SIZES), ((0.5, 1.0, 2.0),) * 5)
        return FasterRCNN(body, rpn_anchor_generator=anchors, **common)
    raise SelfsupError(f"unknown detector '{detector}'; pass one of {', '.join(DETECTORS)}")


@torch.no_grad()
def average_precision(model: nn.Module, loader: DataLoader, device: str = "cpu") -> dict[str, float]:
    """{"ap50", "ap"} of the model in eval mode on every (images, targets) batch of `loader`, by torchmetrics'
    MeanAveragePrecision (COCO AP at IoU 0.5, and averaged over IoU 0.5:0.95; mean over classes)."""
    model.eval()
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    for images, targets in loader:
        predictions = model([image.to(device) for image in images])
        metric.update([{k: v.cpu() for k, v in p.items()} for p in predictions], targets)
    return ap_of(metric)


def ap_of(metric: MeanAveragePrecision) -> dict[str, float]:
    """{"ap50", "ap"} of a MeanAveragePrecision that has seen every test image (-1: no ground-truth box at all)."""
    scores = metric.compute()
    return {"ap50": round(float(scores["map_50"]), 4), "ap": round(float(scores["map"]), 4)}


def train_detector(model: nn.Module, loader: DataLoader, steps: int, settings: dict[str, Any], seed: int,
                   device: str = "cpu", freeze_backbone: bool = False, progress: bool = True) -> int:
    """`steps` optimiser steps on the sum of the detector's losses over shuffled, flipped batches; returns steps.
    settings: optimizer, lr, momentum, weight_decay, warmup_fraction (linear warm-up, then cosine to 0).
    freeze_backbone: the encoder's weights and BN statistics stay as they are; the FPN and heads train."""
    model.backbone.body.requires_grad_(not freeze_backbone)
    optimizer = create_optimizer(model, settings["optimizer"], settings["lr"], settings["weight_decay"],
                                 settings["momentum"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        math.ceil(settings["warmup_fraction"] * steps), steps))
    flips, step = torch.Generator().manual_seed(seed), 0
    with tqdm(total=steps, desc="detect fine-tune", leave=False, disable=None if progress else True) as bar:
        while step < steps:
            for images, targets in loader:
                model.train()
                if freeze_backbone:
                    model.backbone.body.eval()  # BN statistics stay the encoder's
                images, targets = flip(images, targets, flips)
                losses = model([x.to(device) for x in images], [{k: v.to(device) for k, v in t.items()}
                                                                 for t in targets])
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise SelfsupError(f"the detection loss became {loss.item()} at step {step}; pass a lower --lr")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
                if step == steps:
                    break
    return step


def open_detection(data: str) -> tuple[DenseSet, DenseSet]:
    """(train, test) splits of dense `data` that carry boxes; open_dense's error for data that is not dense."""
    train_set, test_set = open_dense(data, "train"), open_dense(data, "test")
    if not {"boxes", "labels"} <= set(train_set.has):
        raise SelfsupError(f"{train_set.name} has no boxes (only {', '.join(train_set.has)}); detection needs boxes: "
                           "pass trees, paste-scenes-multi or a folder with a COCO JSON or Pascal VOC XML box file")
    for split, examples in (("train", train_set), ("test", test_set)):
        if len(examples) == 0:
            raise SelfsupError(f"the {split} split of {data} holds no images; pass a dense set with both splits")
    return train_set, test_set


def detection_backbone(checkpoint: str, random_init: bool, channels: int, image_options: dict[str, Any],
                       detector: str = "fcos") -> tuple[nn.Module, int, str]:
    """(the encoder to fine-tune, its input channels, its description) of a checkpoint (random_init: its random
    twin) or 'random' (an untrained image_options["backbone"] for `channels`-channel data). Raises SelfsupError for
    a text/audio checkpoint, a baseline without weights, or a backbone that is not a 4-stage ResNet (detr: an
    UP-DETR checkpoint's DETR is taken whole; the other detectors take the CNN under it)."""
    modality = checkpoint_modality(checkpoint)
    if modality != "image":
        raise SelfsupError(f"detection fine-tunes an image backbone and '{checkpoint}' encodes {modality}; pass a "
                           "checkpoint of an image method (e.g. simclr, byol), or 'random'")
    check_options("knn", checkpoint, modality, random_init, None, image_options)
    if checkpoint == "pixels":
        raise SelfsupError("'pixels' has no weights to fine-tune; pass a .ckpt file or 'random'")
    if checkpoint == "random":
        name = image_options.get("backbone") or "resnet18"
        backbone = create_backbone(name, in_chans=channels, small_stem=bool(image_options.get("small_stem")),
                                   **(image_options.get("backbone_kwargs") or {}))
        in_chans, description = channels, f"random-init {name}"
    else:
        method, meta = load_method(checkpoint, weights=not random_init)
        backbone, in_chans = method.encoder(), method.data_meta["in_chans"]
        description = f"{meta['method']} {method.network_name()}{' at random init' if random_init else ''}"
    if isinstance(backbone, DETR) and detector != "detr":  # an UP-DETR checkpoint under FCOS & co: its CNN
        backbone = backbone.backbone
    if not isinstance(backbone, DETR):
        check_stages(backbone, description)
    return backbone.requires_grad_(True), in_chans, description  # a teacher's weights may have been frozen


def summary(result: dict[str, Any]) -> str:
    """The one-line report, e.g. "detect trees (real): fcos on simclr resnet18 — AP50 0.412, AP 0.153 (32 test
    images, 185 boxes)"."""
    return (f"detect {result['data']} ({result['tag']}): {result['detector']} on {result['encoder']} — "
            f"AP50 {result['ap50']:.3f}, AP {result['ap']:.3f} ({result['n_test']} test images, "
            f"{result['test_boxes']} boxes)")


def evaluate_detect(checkpoint: str, data: str | None = None, detector: str = "fcos", epochs: int | None = None,
                    max_steps: int | None = None, lr: float | None = None, batch_size: int | None = None,
                    freeze_backbone: bool = False, random_init: bool = False, seed: int = 0, out: str | None = None,
                    device: str | None = None, progress: bool = True, **image_options: Any) -> dict[str, Any]:
    """AP50 and AP on `data`'s test split (default trees) of `detector` (fcos | retinanet | fasterrcnn | detr) whose
    backbone is `checkpoint`'s encoder, fine-tuned on the train images for `epochs` passes or `max_steps` steps
    (default RECIPE's 100 steps; 0 evaluates the untrained detector; detr: DETR_RECIPE).

    checkpoint: a .ckpt file of an image method (random_init: its random twin) or 'random'; image_options
    (backbone, small_stem, backbone_kwargs for 'random'; image_size: the side the detector resizes to, default the
    data's native side) as `evaluate`. None takes RECIPE's value. Writes the result JSON (like `evaluate`) and
    returns it, with "summary" the one-line report. Raises SelfsupError for an unknown detector, a text/audio
    checkpoint, a backbone that is not a 4-stage ResNet, data without boxes, or an option that does not apply."""
    start = time.time()
    if detector not in DETECTORS:
        raise SelfsupError(f"unknown detector '{detector}'; pass one of {', '.join(DETECTORS)}")
    data = data or DEFAULT_DATA
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)  # before building the network: a random-init backbone and the heads are seeded
    train_set, test_set = open_detection(data)
    backbone, in_chans, description = detection_backbone(checkpoint, random_init, train_set.channels, image_options,
                                                         detector)
    size = image_options.get("image_size") or train_set.native_size or max(train_set[0][0].shape[-2:])
    model = build_detector(detector, backbone, in_chans, len(train_set.classes), size).to(device)
    recipe = DETR_RECIPE if detector == "detr" else RECIPE
    settings = {**recipe, **{k: v for k, v in (("lr", lr), ("batch_size", batch_size)) if v is not None}}
    loader = DataLoader(Boxes(train_set, in_chans), batch_size=min(settings["batch_size"], len(train_set)),
                        shuffle=True, drop_last=True, collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    if epochs is not None and max_steps is not None:
        raise SelfsupError("--epochs and --max-steps both set the training length; pass one of them")
    steps = epochs * len(loader) if epochs is not None else recipe["max_steps"] if max_steps is None else max_steps
    if steps < 0:
        raise SelfsupError(f"the training length must be 0 or more, got {steps} steps; pass --epochs N or "
                           "--max-steps N")
    steps = train_detector(model, loader, steps, settings, seed, device, freeze_backbone, progress) if steps else 0
    test_loader = DataLoader(Boxes(test_set, in_chans), batch_size=8, collate_fn=collate)
    scores = average_precision(model, test_loader, device)
    result = {"protocol": "detect", **scores, "detector": detector, "tag": train_set.tag, "encoder": description,
              "checkpoint": checkpoint, "random_init": random_init, "freeze_backbone": freeze_backbone,
              "modality": "image", "data": data, "n_train": len(train_set), "n_test": len(test_set),
              "test_boxes": sum(len(test_set[i][1].boxes) for i in range(len(test_set))),
              "classes": len(train_set.classes), "image_size": size, "in_chans": in_chans,
              "data_channels": train_set.channels, "fpn_channels": FPN_CHANNELS,
              "epochs": round(steps / len(loader), 3), "steps": steps, "batch_size": loader.batch_size,
              **{k: settings[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "warmup_fraction")},
              "seed": seed, "seconds": round(time.time() - start, 1)}
    result["summary"] = summary(result)
    path = Path(out) if out else _default_out(f"detect-{detector}", checkpoint, data, random_init,
                                              image_options.get("backbone"))
    return write_result(result, path)
