"""Recipes chosen from the data: what `selfsup train METHOD` runs when the user sets nothing else.

A method's dataclass holds its paper's defaults (ResNet-50-sized heads, LARS at batch 4096, 100+ epochs): right
for a GPU cluster, and nothing measurable after ten minutes on a laptop CPU. A recipe fills the options the user
did not set from the device, the image size and the number of images; `--recipe paper` keeps the paper's. The
figures behind each choice: benchmarks/results/recipes.md (every recipe tried, 3 seeds).
"""

import math
from dataclasses import dataclass
from typing import Any

from selfsup.errors import SelfsupError

HALF_WIDTH = {"channels": [32, 64, 128, 256], "stem_width": 32}  # ResNet-18 at half width: 2.8M parameters
QUARTER_WIDTH = {"channels": [16, 32, 64, 128], "stem_width": 16}  # 0.7M parameters
# CPU-sized settings per method: heads 512 wide instead of the papers' 2048-8192 (at a 256-d backbone they would
# cost more than the backbone), milder crops (at 28-64 px a 0.08 crop is a few pixels of texture: the learning
# tests found scale 0.4-1 better for every method in a short run) and the few settings a ~1-epoch budget needs.
CPU_METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    # SimCLR's τ 0.1: kNN 0.801 ± 0.002 against 0.2's 0.787 (3 seeds each, benchmarks/results/recipes.md)
    "simclr": {"temperature": 0.1, "proj_hidden_dim": 512, "crop_min_scale": 0.4, "jitter_strength": 0.5},
    "simclrv2": {"temperature": 0.2, "proj_hidden_dim": 512, "crop_min_scale": 0.4, "jitter_strength": 0.5},
    "barlowtwins": {"proj_hidden_dim": 512, "proj_dim": 512, "crop_min_scale": 0.4},
    "instdisc": {"temperature": 0.5, "crop_min_scale": 0.4},  # τ 0.07 with Z fixed at step 1 diverges (test_instdisc)
    "exemplar": {"limit_samples": 8000},  # the paper's best number of surrogate classes
    "mocov1": {"temperature": 0.2, "queue_size": 2048, "ema_rate": 0.99, "crop_min_scale": 0.4,
               "warmup_fraction": 0.1},
    "mocov2": {"queue_size": 2048, "ema_rate": 0.99, "proj_hidden_dim": 512, "crop_min_scale": 0.4,
               "jitter_strength": 0.5, "warmup_fraction": 0.1},
    "mocov3": {"temperature": 0.2, "proj_hidden_dim": 512, "pred_hidden_dim": 512, "proj_dim": 128,
               "ema_base": 0.9, "crop_min_scale": 0.4},
    "byol": {"proj_hidden_dim": 512, "proj_dim": 128, "pred_hidden_dim": 512, "ema_base": 0.9,
             "crop_min_scale": 0.4},
    "simsiam": {"proj_hidden_dim": 512, "proj_dim": 512, "pred_hidden_dim": 128, "crop_min_scale": 0.4,
                "warmup_fraction": 0.1},
    "swav": {"proj_hidden_dim": 512, "global_min_scale": 0.4, "jitter_strength": 0.5, "n_local_crops": 0,
             "freeze_prototypes_epochs": 0.2},
    # 2 local crops of 12 px (DINO's 96/224 of the side) instead of 8: each crop costs a forward and backward
    "dino": {"proj_hidden_dim": 512, "proj_dim": 128, "num_prototypes": 1024, "n_local_crops": 2,
             "freeze_prototypes_epochs": 0.2, "ema_base": 0.99},
    # SparK masks the last map's cells and the object-level methods pool masks over it: they need the CIFAR stem's
    # larger map, at a quarter width to pay for it (benchmarks/results/fashion_mnist_spark.md, dense.md)
    "spark": {"small_stem": True, "backbone_kwargs": QUARTER_WIDTH, "batch_size": 128, "lr": 2e-3,
              "weight_decay": 0.05},
    # UP-DETR trains a DETR on a frozen backbone: its own AdamW rate, a batch a CPU step can take
    "updetr": {"batch_size": 16, "lr": 4e-4, "weight_decay": 1e-4},
    **{name: {"small_stem": True, "backbone_kwargs": QUARTER_WIDTH, "batch_size": 64, "proj_hidden_dim": 512,
              "crop_min_scale": 0.2} for name in ("detcon-s", "detcon-b", "r2o", "detco")},
}
SMALL_IMAGES = 64  # px: at or below this side a ResNet's ImageNet stem leaves a 1-2 px last map
CPU_STEPS = 1800  # ~9.5 minutes at 28 px on 2 idle cores (911 images/s; benchmarks/results/recipes.md)
CPU_SIDE = 28  # px at which CPU_STEPS is that long; larger images get fewer steps, as many pixels in all
CPU_MAX_SIDE = 64  # px: larger images train at this side on a CPU (a 224 px step costs 64x a 28 px one)
CPU_BATCH = 256
NAMES = ("auto", "paper", "cpu", "gpu")


# Options that only make sense together: when the user sets one of a group, the recipe's others are dropped too
# (a user's resnet50 does not get the half-width channels, a user's LARS not AdamW's learning rate).
TOGETHER = (("backbone", "backbone_kwargs", "small_stem"), ("optimizer", "lr", "weight_decay"),
            ("max_steps", "epochs"))


@dataclass(frozen=True)
class DataFacts:
    """What a recipe is chosen from: the number of training images, their side in px, and whether a GPU trains."""

    n_images: int
    image_size: int
    gpu: bool


def choose(method: str, backbone: str | None, requested: str, facts: DataFacts | None
           ) -> tuple[str, dict[str, Any], str]:
    """(recipe name, options it sets, one line saying why) for `requested` in NAMES.

    `backbone` is the method's default backbone (None: not an image method). 'auto' picks 'cpu' or 'gpu' from
    `facts`; 'paper', methods on other modalities and methods made for ViTs (the masked image models, whose CPU
    sizes are their own defaults) set nothing. Options the user set win over the recipe's (the caller merges them
    on top). Raises SelfsupError for an unknown name."""
    if requested not in NAMES:
        raise SelfsupError(f"--recipe must be {', '.join(NAMES)}, got {requested!r}")
    if requested == "paper" or backbone is None or "resnet" not in backbone or facts is None:
        return "paper", {}, ""
    name = requested if requested != "auto" else ("gpu" if facts.gpu else "cpu")
    options, why = (_gpu if name == "gpu" else _cpu)(method, facts)
    if backbone != "resnet18":  # the widths are ResNet-18's: a method made for another network keeps it
        options = {k: v for k, v in options.items() if k not in TOGETHER[0]}
    device = "a GPU" if facts.gpu else "no GPU"
    return name, options, f"recipe {name} ({device}, {facts.n_images} images of {facts.image_size} px; {why})"


def _cpu(method: str, facts: DataFacts) -> tuple[dict[str, Any], str]:
    """A half-width ResNet-18 for a few CPU minutes: AdamW, a batch that fits the data, CPU-sized heads."""
    batch = min(CPU_BATCH, _power_of_two_below(facts.n_images // 4))
    side = min(facts.image_size, CPU_MAX_SIDE)
    # the same pixels in all as CPU_STEPS at 28 px: 350 steps at 64 px (emoji), 1380 at 32, 1800 at 28 or less
    steps = 10 * math.ceil(CPU_STEPS * min(1.0, (CPU_SIDE / side) ** 2) / 10)
    options = {"backbone": "resnet18", "backbone_kwargs": HALF_WIDTH, "optimizer": "adamw", "lr": 1e-3,
               "weight_decay": 1e-4, "batch_size": batch, "max_steps": steps,
               **({"image_size": side} if side < facts.image_size else {}), **CPU_METHOD_OPTIONS.get(method, {})}
    if "queue_size" in options:  # a MoCo queue holds keys of other images only: at most the data minus a batch
        batch = options["batch_size"]  # a method's own batch where its entry sets one
        options["queue_size"] = min(options["queue_size"], max(batch, facts.n_images - batch))
    return options, "a ResNet-18 sized for a few CPU minutes"


def _gpu(method: str, facts: DataFacts) -> tuple[dict[str, Any], str]:
    """The paper's recipe, with the CIFAR stem for small images (the ImageNet stem would leave a 1 px map)."""
    if facts.image_size > SMALL_IMAGES:
        return {}, "the paper's settings"
    return {"small_stem": True}, "the paper's settings, the 3x3 stride-1 stem for small images"


def _power_of_two_below(n: int) -> int:
    """The largest power of two <= n, at least 2."""
    return max(2, 1 << (max(n, 2).bit_length() - 1))


def merge(chosen: dict[str, Any], user: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's options over the recipe's, the recipe's options that apply): a recipe option is dropped where the
    user set it or another of its TOGETHER group."""
    dropped = set(user) | {key for group in TOGETHER if any(k in user for k in group) for key in group}
    applied = {k: v for k, v in chosen.items() if k not in dropped}
    return {**applied, **user}, applied


def describe(line: str, applied: dict[str, Any], merged: dict[str, Any], n_images: int) -> str:
    """The recipe's line with what it set, e.g. '...: backbone resnet18, backbone_kwargs {...}, lr 0.001, ...'."""
    if not applied:
        return f"{line}: your options cover all of it"
    text = ", ".join(f"{k} {_compact(v)}" for k, v in applied.items())
    if "max_steps" in applied:
        batch = merged.get("batch_size", CPU_BATCH)
        text += f" ({applied['max_steps'] * batch / max(n_images, 1):.1f} epochs at batch {batch})"
    return f"{line} sets {text}"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
