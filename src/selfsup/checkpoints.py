"""Reading checkpoints safely, rebuilding their backbone, and exporting it as safetensors.

Checkpoints are Lightning's, with a `selfsup` entry naming the method, its config and the data
shape. Loading never unpickles code (`weights_only=True`); writing is atomic (temp + rename).
"""

import json
import os
import pickle
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from selfsup import __version__
from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone

BACKBONE_PREFIX = "method.backbone."


def write_atomic(checkpoint: dict, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`:
    a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded without executing pickled code, or a SelfsupError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"checkpoint '{path}' does not exist; pass a .ckpt file from a run folder "
                           "(RUN/checkpoints/last.ckpt), or 'random' for a random-init encoder")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SelfsupError(f"refusing to load '{path}': it holds objects other than tensors and plain "
                           f"data, which could run code ({str(e).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise SelfsupError(f"checkpoint '{path}' is corrupt or truncated ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(checkpoint, dict) or "selfsup" not in checkpoint:
        raise SelfsupError(f"'{path}' is not a selfsup checkpoint (no 'selfsup' entry); "
                           "pass one written by `selfsup train`")
    return checkpoint


def backbone_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(backbone with the trained weights, the checkpoint's `selfsup` metadata)."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint["selfsup"]
    config = meta["method_config"]
    backbone = create_backbone(config["backbone"], in_chans=meta["in_chans"], small_stem=config["small_stem"],
                               **config.get("backbone_kwargs", {}))
    state = {k[len(BACKBONE_PREFIX):]: v for k, v in checkpoint["state_dict"].items()
             if k.startswith(BACKBONE_PREFIX)}
    backbone.load_state_dict(state)
    return backbone, meta


def export_backbone(checkpoint_path: str | Path, out: str | Path) -> Path:
    """Write the backbone's weights to `out` (.safetensors) and a JSON sidecar describing how to
    rebuild it; returns the sidecar's path."""
    backbone, meta = backbone_from_checkpoint(checkpoint_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(out))
    library, _, arch = meta["method_config"]["backbone"].rpartition(":")
    sidecar = {
        "library": library or "timm",
        "architecture": arch,
        "in_chans": meta["in_chans"],
        "small_stem": meta["method_config"]["small_stem"],
        "kwargs": meta["method_config"].get("backbone_kwargs", {}),
        "num_features": int(backbone.num_features),
        "image_size": meta["image_size"],
        "method": meta["method"],
        "selfsup_version": __version__,
        "how_to_load": "selfsup.checkpoints.load_exported(PATH), or build the architecture with "
                       "num_classes=0, in_chans and kwargs (and the small stem if set), then "
                       "load_state_dict(safetensors.torch.load_file(PATH))",
    }
    sidecar_path = out.with_suffix(".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2))
    return sidecar_path


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a backbone written by `export_backbone` (reads PATH and its .json sidecar)."""
    path = Path(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    name = f"{sidecar['library']}:{sidecar['architecture']}"
    backbone = create_backbone(name, in_chans=sidecar["in_chans"], small_stem=sidecar["small_stem"],
                               **sidecar.get("kwargs", {}))
    backbone.load_state_dict(safetensors.torch.load_file(str(path)))
    return backbone
