"""The valid range of every numeric option of every command, in one place, checked once.

Method options (flags, `--set`, YAML) are checked when their config is made (`methods.make_config`), run options
when `selfsup train` starts, and the numeric flags of the other commands when the CLI has parsed them: before
anything is built or read. A value outside its range is refused with one line naming the option, the value and
the range. A numeric option not listed here must not be negative.
"""

import math
from typing import Any

from selfsup.errors import SelfsupError

# bn_group_size 0 (MoCo: BN over the whole batch) and finetune_layers 0 (SimCLR v2: from the backbone) are valid,
# as is every unlisted count at 0 (no local crops, no queue, no projection).

INF = math.inf
# name -> (low, high, low included, high included)
_COUNT = (1, INF, True, False)  # at least 1
_POSITIVE = (0, INF, False, False)  # > 0
_SHARE = (0, 1, True, False)  # [0, 1)
_OPEN_SHARE = (0, 1, False, False)  # (0, 1)
_SCALE = (0, 1, False, True)  # (0, 1]
_RATE = (0, 1, True, True)  # [0, 1]

RANGES: dict[str, tuple[float, float, bool, bool]] = {
    # run options and the other commands' flags
    **dict.fromkeys(("max_steps", "epochs", "devices", "num_nodes", "checkpoint_every", "keep_last", "limit_samples",
                     "batch_size", "k", "image_size"), _COUNT),
    **dict.fromkeys(("monitor_every", "probe_every"), (0, INF, True, False)),  # steps between figures; 0: none
    "n": (2, INF, True, False),  # figures draw at least two examples (t-SNE needs a neighbour)
    "label_fraction": _SCALE,
    "test_fraction": _OPEN_SHARE,
    # optimisation
    "lr": _POSITIVE,
    "momentum": _SHARE,
    "warmup_fraction": _SHARE,
    # losses and heads
    **dict.fromkeys(("temperature", "epsilon", "lambd", "gumbel_start", "gumbel_end", "max_seconds"), _POSITIVE),
    "gumbel_decay": _SCALE,
    **dict.fromkeys(("ema_base", "ema_rate", "ema_bank"), _RATE),
    **dict.fromkeys(("crop_min_scale", "global_min_scale", "local_min_scale", "local_max_scale", "side_min",
                     "side_max"), _SCALE),
    **dict.fromkeys(("mask_ratio", "mask_probability", "mask_prob", "corrupt_ratio", "replace_ratio"), _OPEN_SHARE),
    **dict.fromkeys(("dropout", "layerdrop", "short_seq_prob"), _SHARE),
    **dict.fromkeys(("proj_dim", "proj_hidden_dim", "pred_hidden_dim", "proj_layers", "recon_hidden_dim", "queue_size",
                     "nce_k", "num_prototypes", "sinkhorn_iterations", "n_views",
                     "decoder_depth", "decoder_dim", "decoder_heads", "hidden", "layers", "heads", "intermediate",
                     "embedding_size", "vocab_size", "max_len", "mask_span", "mask_unit", "conv_dim", "codebooks",
                     "codewords", "codevector_dim", "final_dim", "distractors"), _COUNT),
}


def describe(bounds: tuple[float, float, bool, bool]) -> str:
    low, high, low_in, high_in = bounds
    right = "∞)" if high == INF else f"{high:g}{']' if high_in else ')'}"
    return f"{'[' if low_in else '('}{low:g}, {right}"


def check_range(name: str, value: Any) -> None:
    """A SelfsupError when the number `value` of option `name` lies outside its range (None and flags pass)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bounds = RANGES.get(name, (0, INF, True, False))
    low, high, low_in, high_in = bounds
    inside = (value > low or (low_in and value == low)) and (value < high or (high_in and value == high))
    if not inside or math.isnan(value):
        raise SelfsupError(f"{name} must lie in {describe(bounds)}, got {value:g}; pass a value in that range")


def check_ranges(options: dict[str, Any]) -> None:
    """check_range for every (name, value) of `options`."""
    for name, value in options.items():
        check_range(name, value)
