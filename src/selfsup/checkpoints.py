"""Reading checkpoints safely, rebuilding their backbone, and exporting it as safetensors or ONNX.

Checkpoints are Lightning's, with a `selfsup` entry naming the method, its config and the data
shape. Loading never unpickles code (`weights_only=True`); writing is atomic (temp + rename).
"""

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from selfsup import __version__
from selfsup.errors import SelfsupError
from selfsup.files import not_a_checkpoint
from selfsup.nn import create_backbone
from selfsup.nn.detr import DETR
from selfsup.nn.video import SIDECAR_LIBRARY, load_video_backbone, write_video_sidecar
from selfsup.views import channels_of, normalization_for

LAST = "last.ckpt"
ONNX_OPSET = 18  # what torch's exporter (torch.export based) writes natively; lower opsets go through a converter
_STEP_FILE = re.compile(r"step=(\d+)\.ckpt")


def inside(root: str | Path, relative: str | Path) -> Path:
    """root/relative, refused with a SelfsupError when it (after `..` and symlinks) lies outside root."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise SelfsupError(f"refusing to write '{path}': it lies outside the run folder '{root}'; "
                           "use a relative path without '..' and no symlink leading out")
    return path


def write_atomic(checkpoint: dict, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path` (and fsync
    the folder): a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step={step:08d}.ckpt"


def step_checkpoints(folder: str | Path) -> list[Path]:
    """The step-numbered checkpoints in `folder`, newest (highest step) first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("step=*.ckpt") if (m := _STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def point_last_at(path: str | Path) -> Path:
    """Make last.ckpt beside `path` the same file (a hard link swapped in atomically; a copy where
    the file system has no links); returns last.ckpt's path."""
    path = Path(path)
    last, tmp = path.with_name(LAST), path.with_name(f".{LAST}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp, last)
    _fsync_folder(last.parent)
    return last


def prune_step_checkpoints(folder: str | Path, keep_last: int) -> None:
    """Delete all but the `keep_last` (at least 1) newest step files."""
    for old in step_checkpoints(folder)[max(keep_last, 1):]:
        old.unlink(missing_ok=True)


def latest_good_checkpoint(folder: str | Path) -> tuple[Path, dict[str, Any], list[str]]:
    """(path, checkpoint, why each newer one was passed over): the newest step file that reads
    cleanly, or last.ckpt for a run without step files; a SelfsupError when none does."""
    folder = Path(folder)
    candidates = step_checkpoints(folder) or [folder / LAST]
    skipped = []
    for path in candidates:
        try:
            return path, read_checkpoint(path), skipped
        except SelfsupError as e:
            skipped.append(str(e))
    raise SelfsupError(f"cannot resume: no readable checkpoint in '{folder}' ({'; '.join(skipped)})")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded without executing pickled code, or a SelfsupError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"checkpoint '{path}' does not exist; pass a .ckpt file from a run folder "
                           "(RUN/checkpoints/last.ckpt), or 'random' for a random-init encoder")
    problem = not_a_checkpoint(path)
    if problem:
        raise SelfsupError(problem)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SelfsupError(f"refusing to load '{path}': it holds objects other than tensors and plain "
                           f"data, which could run code ({_first_line(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # an empty file raises a bare EOFError
        raise SelfsupError(f"checkpoint '{path}' is corrupt or truncated ({_first_line(e)})") from None
    if not isinstance(checkpoint, dict) or "selfsup" not in checkpoint:
        raise SelfsupError(f"'{path}' is not a selfsup checkpoint (no 'selfsup' entry); "
                           "pass one written by `selfsup train`")
    return checkpoint


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


def _pretraining_checkpoint(path: str | Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    meta = checkpoint["selfsup"]
    if meta.get("kind") == "classifier":  # written by `eval finetune` / `distill`: no method, other keys
        raise SelfsupError(f"'{path}' is a fine-tuned classifier, not a pretraining checkpoint; evaluate it with "
                           "the result.json that `selfsup eval finetune` wrote, or pass the pretraining checkpoint "
                           f"it came from ({meta.get('trained_by', {}).get('checkpoint', 'RUN/checkpoints/last.ckpt')})")
    return checkpoint


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's `selfsup` metadata without reading its tensors (memory-mapped), or a SelfsupError."""
    path = Path(path)
    if not path.is_file():
        return read_checkpoint(path)["selfsup"]  # its error names what to pass
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
        return read_checkpoint(path)["selfsup"]  # the full read says why it cannot be used
    if not isinstance(checkpoint, dict) or "selfsup" not in checkpoint:
        return read_checkpoint(path)["selfsup"]
    return checkpoint["selfsup"]


def data_meta_of(meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's method was built from (image: in_chans, image_size; text: the tokenizer ...)."""
    if "data_meta" in meta:
        return meta["data_meta"]
    return {"in_chans": meta["in_chans"], "image_size": meta["image_size"]}  # image checkpoints before 0.2


def modality_of(meta: dict[str, Any]) -> str:
    return meta.get("modality", "image")


def load_method(path: str | Path, weights: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """(the whole method of a pretraining checkpoint in eval mode, its `selfsup` metadata). weights=False: the
    same network (and, for text, the same tokenizer) at random init, the twin every figure needs."""
    from selfsup.methods import RENAMED, make_config, method_class

    checkpoint = _pretraining_checkpoint(path)
    meta = checkpoint["selfsup"]
    options = {RENAMED.get(k, k): v for k, v in meta["method_config"].items()}  # written before a rename
    method = method_class(meta["method"]).build(make_config(meta["method"], **options), data_meta_of(meta))
    if "prepared" in meta:  # memory banks and surrogate classes sized as in training
        method.prepare(*meta["prepared"])
    if weights:
        prefix = "method."
        try:
            method.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
                                    if k.startswith(prefix)})
        except RuntimeError as e:
            raise SelfsupError(f"'{path}' does not fit the {meta['method']} network this selfsup builds "
                               f"({_first_line(e)}); retrain it with this version") from None
    return method.eval(), meta


def export_encoder(checkpoint_path: str | Path, out: str | Path, format: str | None = None) -> Path:
    """Write the method's `encoder()`; returns the path of the sidecar that says how to load it.

    A Hugging Face model (BERT, ALBERT, wav2vec 2.0) goes to the folder `out` (config.json, model.safetensors, the
    tokenizer's files for text), loadable offline with `transformers.AutoModel.from_pretrained(out)`. An image
    backbone goes to the file `out`: FILE.safetensors with the sidecar FILE.json naming its timm/torchvision
    architecture, or (format 'onnx', the default for an .onnx `out`) FILE.onnx mapping 'images' (B, C, S, S) float32
    to 'features' (B, D), B dynamic, with the sidecar FILE.onnx.json. Both sidecars give the input size S, the
    channels C and the normalisation mean/std. A SelfsupError for an `out` that does not fit the format, and for
    ONNX of a text or audio model."""
    from transformers import PreTrainedModel

    out = Path(out)
    format = format or ("onnx" if out.suffix == ".onnx" else "safetensors")
    if format not in ("safetensors", "onnx"):
        raise SelfsupError(f"unknown export format '{format}'; pass safetensors or onnx")
    meta = read_meta(checkpoint_path)
    if format == "onnx" and modality_of(meta) != "image":
        raise SelfsupError(f"ONNX export takes image encoders, and {meta['method']} encodes {modality_of(meta)}: "
                           "export it as a Hugging Face folder (--out FOLDER, without --format onnx)")
    method, meta = load_method(checkpoint_path)
    encoder = method.encoder()
    if isinstance(encoder, PreTrainedModel):
        if format == "onnx":  # DiT: an image encoder that is a Hugging Face model
            raise SelfsupError(f"{meta['method']} exports a Hugging Face folder, which ONNX export does not take: "
                               f"pass --out {out.with_suffix('')}")
        return _export_pretrained(encoder, method, meta, out)
    suffix = f".{format}"
    if out.suffix != suffix or out.is_dir():
        instead = out / f"backbone{suffix}" if out.is_dir() else out.with_suffix(suffix)
        raise SelfsupError(f"{meta['method']} exports its backbone to one {suffix} file (its .json sidecar goes "
                           f"beside it), not to '{out}': pass --out {instead}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        if isinstance(encoder, DETR):  # its output is (hidden (B, Q, d), boxes (B, Q, 4)), not features (B, D)
            raise SelfsupError(f"{meta['method']} exports a whole DETR, which ONNX export does not take: pass --out "
                               f"{out.with_suffix('.safetensors')}")
        return _export_onnx(encoder, _image_sidecar(encoder, meta), out)
    safetensors.torch.save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(out))
    _readable_like_new_files(out)
    if modality_of(meta) == "video":  # selfsup.nn.video's VideoResNet, which no timm/torchvision name rebuilds
        return write_video_sidecar(encoder, out, {"method": meta["method"], "selfsup_version": __version__,
                                                  **data_meta_of(meta)})
    sidecar = {
        **_image_sidecar(encoder, meta),
        "how_to_load": "selfsup.checkpoints.load_exported(PATH), or build the architecture with "
                       "num_classes=0, in_chans and kwargs (and the small stem if set), then "
                       "load_state_dict(safetensors.torch.load_file(PATH))",
    }
    sidecar_path = out.with_suffix(".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2))
    return sidecar_path


def _image_sidecar(encoder: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """What an exported image backbone is and what input it takes (both the safetensors and the ONNX sidecar)."""
    config = meta["method_config"]
    library, _, arch = config["backbone"].rpartition(":")
    data_meta = data_meta_of(meta)
    mean, std = normalization_for(channels_of(data_meta))  # a TIFF run's own band statistics
    return {
        "library": library or "timm",
        "architecture": arch,
        "in_chans": data_meta["in_chans"],
        "small_stem": config["small_stem"],
        "kwargs": config.get("backbone_kwargs", {}),
        "num_features": int(encoder.num_features),
        "image_size": data_meta["image_size"],
        "mean": list(mean),
        "std": list(std),
        # TIFF tiles: which bands (1-based) of how many per file the encoder takes, and how non-uint8 pixels were
        # mapped to 0..255 before the division by 255 that mean and std assume
        **({"bands": {"bands": [i + 1 for i in data_meta["bands"]["index"]], "of": data_meta["bands"]["count"],
                      "dtype": data_meta["bands"]["dtype"], "stretch": data_meta["bands"]["stretch"]}}
           if data_meta.get("bands") else {}),
        "method": meta["method"],
        "selfsup_version": __version__,
        # a DETR around the backbone (UP-DETR): selfsup.nn.detr.DETR(backbone, **detr)
        **({"detr": encoder.hparams} if isinstance(encoder, DETR) else {}),
    }


def _export_onnx(encoder: nn.Module, sidecar: dict[str, Any], out: Path) -> Path:
    """torch.export's ONNX of `encoder`: 'images' (B, C, S, S) -> 'features' (B, D), weights inside the file."""
    size = sidecar["image_size"]
    example = torch.zeros(2, sidecar["in_chans"], size, size)  # batch 2: torch.export specialises sizes 0 and 1
    torch.onnx.export(encoder.eval(), (example,), str(out), input_names=["images"], output_names=["features"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET, dynamo=True,
                      external_data=False, verbose=False)
    sidecar_path = out.with_suffix(".onnx.json")
    sidecar_path.write_text(json.dumps({
        **sidecar, "format": "onnx", "opset": ONNX_OPSET, "input": "images", "output": "features",
        "how_to_load": "onnxruntime.InferenceSession(PATH).run(['features'], {'images': x}), x float32 (B, in_chans, "
                       "image_size, image_size): pixels scaled to [0, 1], resized and centre-cropped to image_size, "
                       "then per channel minus mean, divided by std",
    }, indent=2))
    return sidecar_path


def _readable_like_new_files(path: Path) -> None:
    """safetensors writes 0600; give the weights the permissions every other new file gets (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a backbone written by `export_encoder` (reads PATH and its .json sidecar); UP-DETR's: the whole DETR."""
    path = Path(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    if sidecar["library"] == SIDECAR_LIBRARY:
        return load_video_backbone(path, sidecar)
    name = f"{sidecar['library']}:{sidecar['architecture']}"
    backbone = create_backbone(name, in_chans=sidecar["in_chans"], small_stem=sidecar["small_stem"],
                               **sidecar.get("kwargs", {}))
    model = DETR(backbone, **sidecar["detr"]) if "detr" in sidecar else backbone
    model.load_state_dict(safetensors.torch.load_file(str(path)))
    return model


def _export_pretrained(encoder: nn.Module, method: nn.Module, meta: dict[str, Any], out: Path) -> Path:
    if out.suffix in (".safetensors", ".pt", ".ckpt"):
        raise SelfsupError(f"{meta['method']} exports a Hugging Face folder, not one file: pass --out FOLDER "
                           f"(e.g. {out.with_suffix('')})")
    encoder.save_pretrained(str(out))
    if "tokenizer" in method.data_meta:
        from selfsup.text import tokenizer_from_json

        tokenizer_from_json(method.data_meta["tokenizer"]).save_pretrained(str(out))
    sidecar = out / "selfsup.json"
    sidecar.write_text(json.dumps({
        "method": meta["method"], "modality": modality_of(meta), "architecture": type(encoder).__name__,
        "selfsup_version": __version__,
        "how_to_load": "transformers.AutoModel.from_pretrained(FOLDER) (and AutoTokenizer.from_pretrained(FOLDER) "
                       "for text); nothing is downloaded",
    }, indent=2))
    return sidecar
