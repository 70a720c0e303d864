"""`selfsup embed`: the frozen features `selfsup eval knn` uses, one row per input, as Parquet, .npy or CSV.

A row names its input (the file's path for folder data, its index in the split otherwise), its label when the data
has one (the class name) and its embedding (D,), for the user's own nearest-neighbour search or clustering.
"""

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError
from selfsup.eval.features import FEATURE_BASELINES, checkpoint_modality, extract_features, frozen_encoder
from selfsup.eval.run import DEFAULT_DATA, open_labeled_split
from selfsup.files import in_existing_folder

Names = list[str] | list[int]


def embed(checkpoint: str, out: str | Path, data: str | None = None, split: str | None = None,
          batch_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the embeddings (N, D) float32 of `data` by `checkpoint`'s frozen encoder to `out`; returns
    {"files", "rows", "dim", "labelled", "encoder", "data"}.

    out: FILE.parquet (columns path|index, label, embedding), FILE.npy (N, D) with FILE.paths.txt beside it (one
    path or index per line, a tab and the label when labelled), or FILE.csv (path|index, label, e0 ... e{D-1}).
    data: an image folder without `split` is every image file under it, unlabelled; anything else (a built-in set,
    NAME:DIR, a labelled folder, text and audio evaluation sets) is the labelled split `split` (train by default)
    as `selfsup eval` opens it, with seed `seed` [data: what the checkpoint was pretrained on when it can be opened
    here, else the modality's evaluation set].
    Raises SelfsupError for an unknown extension, a folder of `out` that does not exist, a baseline name or a file
    that is not a pretraining checkpoint, and data the checkpoint's modality cannot read."""
    out = _check_out(out)
    if checkpoint in (*FEATURE_BASELINES, "tfidf"):
        raise SelfsupError(f"embed takes a .ckpt file written by `selfsup train`; '{checkpoint}' is an evaluation "
                           "baseline with no checkpoint")
    modality = checkpoint_modality(checkpoint)
    encoder = frozen_encoder(checkpoint)
    data = data or trained_on(checkpoint) or DEFAULT_DATA.get(modality, "")
    examples, by_path = _open(modality, data, split, seed)
    features, labels = extract_features(encoder, examples, batch_size or (256 if modality == "image" else 64),
                                        desc="embed")
    names = [str(p) for p in examples.paths] if by_path else list(range(len(examples)))
    classes = getattr(examples, "classes", None)
    named = [classes[i] if classes else str(i) for i in labels.tolist()] if bool((labels >= 0).all()) else None
    files = WRITERS[out.suffix](out, features.numpy(), "path" if by_path else "index", names, named)
    return {"files": [str(f) for f in files], "rows": len(features), "dim": int(features.shape[1]),
            "labelled": named is not None, "encoder": encoder.description,
            "data": data + (f" ({split})" if split else "")}


def trained_on(checkpoint: str) -> str | None:
    """The data `checkpoint` was pretrained on, where it can still be opened here (a built-in name or an existing
    folder); None otherwise (shards, a moved folder)."""
    from selfsup.checkpoints import read_meta
    from selfsup.data import BUILTIN

    data = str(read_meta(checkpoint).get("train", {}).get("data") or "")
    if data.partition(":")[0] in BUILTIN or os.path.isdir(os.path.expanduser(data)):
        return data
    return None


def _check_out(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.suffix not in WRITERS:
        raise SelfsupError(f"--out '{out}' has an unknown extension '{out.suffix}'; pass FILE.parquet, FILE.npy "
                           "(with FILE.paths.txt beside it) or FILE.csv")
    return in_existing_folder(out)


def _open(modality: str, data: str, split: str | None, seed: int) -> tuple[Dataset, bool]:
    """(the (input, label) examples to embed, whether their rows are named by path)."""
    folder = os.path.isdir(os.path.expanduser(data))
    if modality == "image" and folder and split is None:
        from selfsup.data import FolderImageSet, cached_index

        root = os.path.expanduser(data)
        paths = cached_index(root)
        if not paths:
            raise SelfsupError(f"'{data}' holds no image files: pass a folder of images or a built-in name")
        return FolderImageSet(paths, name=data, root=root), True
    train, test = open_labeled_split(modality, data, seed)
    return (test if split == "test" else train), folder


def _write_npy(out: Path, features: np.ndarray, key: str, names: Names, labels: list[str] | None) -> list[Path]:
    np.save(out, features)
    listing = out.with_suffix(".paths.txt")
    listing.write_text("".join(f"{n}\n" if labels is None else f"{n}\t{labels[i]}\n" for i, n in enumerate(names)))
    return [out, listing]


def _write_csv(out: Path, features: np.ndarray, key: str, names: Names, labels: list[str] | None) -> list[Path]:
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key, *(["label"] if labels else []), *(f"e{j}" for j in range(features.shape[1]))])
        for i, row in enumerate(features):
            writer.writerow([names[i], *([labels[i]] if labels else []), *(f"{v:.9g}" for v in row)])  # float32 exact
    return [out]


def _write_parquet(out: Path, features: np.ndarray, key: str, names: Names, labels: list[str] | None) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    embedding = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])  # (N,) of (D,)
    pq.write_table(pa.table({key: names, **({"label": labels} if labels else {}), "embedding": embedding}), out)
    return [out]


WRITERS = {".parquet": _write_parquet, ".npy": _write_npy, ".csv": _write_csv}
