"""The run's settings outside the method (data, loop, devices) and typed `key=value` overrides."""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from selfsup.errors import SelfsupError


@dataclass
class TrainConfig:
    """Everything about a run that is not the method's own hyperparameters."""

    data: str = "fashion-mnist"  # built-in name, name:DIR, an image folder, or shards:PATTERN (tar shards)
    # None: a built-in set's own size; an image folder's: the median shorter side of a seeded sample of up to 512 of
    # its images (file headers only), rounded to a multiple of 8 and kept within [16, 224] (data.folder_image_size),
    # printed in the run's summary; tar shards: 224. A resumed run keeps its size.
    image_size: int | None = None
    epochs: int | None = None  # None with no max_steps: 100 epochs
    max_steps: int | None = None
    batch_size: int = 256  # per device
    num_workers: int | None = None  # None: 0 with batched views, else one fewer than the cores, at most 8
    batched_views: bool | None = None  # augment whole batches on the device; None: when images share one size
    # auto | cpu | gpu | paper: options the user did not set come from a recipe (train/recipes.py) chosen from the
    # device, image size and number of images (auto), or are the paper's (paper)
    recipe: str = "auto"
    seed: int = 0
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"  # auto | cpu | gpu
    precision: str = "auto"  # auto (bf16-mixed on GPUs that have it, 16-mixed on older ones, 32-true on CPUs) | 32-true | bf16-mixed | 16-mixed
    sync_batchnorm: bool = False  # BN statistics over the global batch (SimCLR's global BN) when on several devices
    channels_last: bool | None = None  # NHWC tensors for convolutions; None: on GPUs
    compile: bool = False  # torch.compile the backbone (the first steps take longer)
    checkpoint_every: int = 100  # steps between checkpoints (also written every epoch and on SIGTERM)
    keep_last: int = 3  # step checkpoints kept on disk (older ones are deleted); last.ckpt is the newest
    on_bad_image: str = "skip"  # skip | error: an image file that cannot be decoded is skipped and listed, or fatal
    on_nan_loss: str = "stop"  # stop | skip: a NaN/inf loss stops the run, or its step's update is skipped
    monitor_every: int = 50  # steps between the collapse figures (train/monitor.py), logged as collapse/*; 0: off
    # steps between online kNN probes (train/probe.py: 2,000 train / 1,000 test examples, k=20), logged as
    # probe/knn_top1, and at the last step; None: every tenth of the run, at least 100 steps apart, when the data is
    # a labelled built-in set or probe_data is given (else off); 0: off
    probe_every: int | None = None
    probe_data: str | None = None  # labelled images for the probe (DIR/<class>/..., DIR/train|test/..., a built-in)
    limit_samples: int | None = None  # train on a seeded random subset of this many images
    bands: str | None = None  # TIFF tiles: the bands kept, 1-based, in order ("4,3,2"); None: all (data.tiff)


CHOICES = {"on_bad_image": ("skip", "error"), "on_nan_loss": ("stop", "skip"), "accelerator": ("auto", "cpu", "gpu"),
           "precision": ("auto", "32-true", "bf16-mixed", "16-mixed"),
           "recipe": ("auto", "cpu", "gpu", "paper")}


def check_choices(config: TrainConfig) -> None:
    """A SelfsupError for an option outside its choices or a count below 1."""
    for key, allowed in CHOICES.items():
        if getattr(config, key) not in allowed:
            raise SelfsupError(f"option {key} must be {' or '.join(allowed)}, got {getattr(config, key)!r}")
    for key in ("keep_last", "checkpoint_every"):
        if getattr(config, key) < 1:
            raise SelfsupError(f"option {key} must be at least 1, got {getattr(config, key)}")


def coerce(cls: type, key: str, value: Any) -> Any:
    """`value` converted to the type of field `key` of dataclass `cls`, or a SelfsupError."""
    field_type = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    allowed = typing.get_args(field_type) if isinstance(field_type, types.UnionType) else (field_type,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, str):  # YAML 1.1 reads 4e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is bool and isinstance(value, bool):
            return value
        if t is dict and isinstance(value, dict):
            return value
        if t is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(t.__name__ if t is not type(None) else "null" for t in allowed)
    raise SelfsupError(f"option {key} expects {names}, got {value!r}")


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """['lr=0.1', 'backbone=resnet50'] -> {'lr': 0.1, 'backbone': 'resnet50'} (values read as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SelfsupError(f"--set expects key=value, got '{pair}'")
        out[key.strip()] = yaml.safe_load(text) if text else ""
    return out


def read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise SelfsupError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as e:
        raise SelfsupError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise SelfsupError(f"config file '{path}' must hold a mapping of option: value")
    # A saved run config nests the method's options under `method_config`; accept it as input too.
    flat = {k: v for k, v in loaded.items() if k not in ("method_config", "train", "method", "version")}
    flat.update(loaded.get("train") or {})
    flat.update(loaded.get("method_config") or {})
    return flat


def split_options(options: dict[str, Any], method_config_class: type) -> tuple[dict, dict]:
    """Flat options -> (method overrides, train overrides), each value type-checked."""
    method_keys = {f.name for f in dataclasses.fields(method_config_class)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    method, train = {}, {}
    for key, value in options.items():
        if key in method_keys:
            method[key] = coerce(method_config_class, key, value)
        elif key in train_keys:
            train[key] = coerce(TrainConfig, key, value)
        else:
            raise SelfsupError(f"unknown option '{key}'; method options: {', '.join(sorted(method_keys))}; "
                               f"run options: {', '.join(sorted(train_keys))}")
    return method, train
