"""Name -> method class. A method file registers itself with @register; nothing else changes."""

import dataclasses
import difflib
from typing import Any

from selfsup.errors import SelfsupError
from selfsup.ranges import check_ranges

METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise SelfsupError(f"unknown method '{name}'{hint}; available: {', '.join(sorted(METHODS))} "
                           "(see `selfsup methods`)")
    return METHODS[name]


# Options renamed so that `momentum` is only the optimiser's: EMA rates are ema_*. Checkpoints written before read on.
RENAMED = {"base_momentum": "ema_base", "key_momentum": "ema_rate", "bank_momentum": "ema_bank"}


def make_config(name: str, **overrides: Any):
    """The method's config dataclass with the paper's defaults, then `overrides` applied."""
    config_class = method_class(name).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    renamed = [f"{old} is now {RENAMED[old]}" for old in unknown if RENAMED.get(old) in known]
    if renamed:
        raise SelfsupError(f"{name}: option {'; '.join(renamed)} (EMA rates are ema_*; momentum is the optimiser's)")
    check_ranges(overrides)
    if unknown:
        raise SelfsupError(f"{name} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(known))}")
    return config_class(**overrides)


def build(name: str, data_meta: dict[str, Any], **overrides: Any):
    """Method `name` of any modality for data described by `data_meta`, its paper defaults changed by `overrides`."""
    return method_class(name).build(make_config(name, **overrides), data_meta)


def create(name: str, in_chans: int = 3, **overrides: Any):
    """Image method `name` for `in_chans`-channel images, its paper defaults changed by `overrides`
    (e.g. backbone="resnet50")."""
    return build(name, {"in_chans": in_chans}, **overrides)
