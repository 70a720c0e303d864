"""`selfsup eval knn|linear|mlm` for every modality: one labelled split, features through the encoder's `embed`,
one kNN, one linear probe, one result file.

Labelled data per modality: images (built-in sets, DIR/train|test/CLASS or DIR/CLASS), text (`bible-genres`: a
verse's genre, split by book), audio (`spoken-words`, `tuxpaint-languages`, or a folder of class folders).
"""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from selfsup.data import FolderImageSet
from selfsup.data.folder import folder_image_size
from selfsup.errors import SelfsupError
from selfsup.eval.features import checkpoint_modality, extract_features, frozen_encoder
from selfsup.eval.linear import linear_probe
from selfsup.eval.propagate import DATA as VIDEO_DATA
from selfsup.eval.propagate import framewise
from selfsup.nn.knn import knn_predict

DEFAULT_DATA = {"image": "fashion-mnist", "text": "bible-genres", "audio": "spoken-words", "video": "moving-objects"}
DEFAULT_K = {"image": 200, "text": 20, "audio": 20, "video": 20}
AUDIO_EVAL_SECONDS = 2.0  # audio features (and MFCCs) describe the first 2 s of a clip, the training crop's length
CACHE_BYTES = 64 * 2**20  # features up to this size are kept beside the result, for the other probe to reuse


def open_labeled_split(modality: str, data: str, seed: int = 0, test_fraction: float | None = None,
                       limit: tuple[int, int] | None = None) -> tuple[Any, Any]:
    """(train, test) data sets of (input, label) items for `modality`; each has `classes`. limit=(n_train, n_test):
    text keeps about that many verses; images a sample of each split seeded by `seed`, the online probe's own
    (data.seeded_subset: `--limit 2000,1000` scores the images the probe of a run on that data scores)."""
    if limit is not None and modality not in ("text", "image"):
        raise SelfsupError(f"--limit picks verses of the text task or a sample of images; {modality} evaluation uses "
                           "the whole split")
    if limit is not None and min(limit) < 1:
        raise SelfsupError(f"--limit needs at least one example on each side, got {limit[0]},{limit[1]}")
    if modality == "image":
        from selfsup.data import open_labeled
        from selfsup.data import seeded_subset

        train, test = open_labeled(data, 0.2 if test_fraction is None else test_fraction, seed)
        if limit is not None:
            train, test = seeded_subset(train, limit[0], seed), seeded_subset(test, limit[1], seed)
        return train, test
    if modality == "text":
        from selfsup.text import open_labeled_text

        if test_fraction is not None:
            raise SelfsupError("--test-fraction does not apply to bible-genres, whose split by book is fixed; drop it")
        return open_labeled_text(data, limit)
    if modality == "audio":
        from selfsup.audio import open_labeled_audio

        train, test, _ = open_labeled_audio(data, seed, 0.2 if test_fraction is None else test_fraction,
                                            max_seconds=AUDIO_EVAL_SECONDS)
        return train, test
    if modality == "video":
        from selfsup.video import open_labeled_video

        return open_labeled_video(data, test_fraction)
    raise SelfsupError(f"no labelled {modality} data to evaluate on yet")


def evaluate(protocol: str, checkpoint: str, data: str | None = None, k: int | None = None,
             temperature: float = 0.07, random_init: bool = False, pooling: str | None = None,
             limit: tuple[int, int] | None = None, test_fraction: float | None = None, seed: int = 0,
             out: str | None = None, batch_size: int | None = None, num_workers: int = 0,
             **image_options: Any) -> dict[str, Any]:
    """Top-1 of `protocol` (knn, linear; mlm for text) of `checkpoint`'s frozen encoder (or a baseline: 'random',
    'pixels', 'tfidf', 'mfcc') on `data`'s labelled split; writes the result JSON and returns it.

    An image encoder on a labelled video set (moving-objects, moving-objects-motion) embeds each clip frame by frame,
    the mean of its frames' embeddings (eval.propagate.framewise).
    image_options (backbone, small_stem, backbone_kwargs for 'random'; image_size) apply to images only; pooling
    to encoders whose method has that option (BERT, ALBERT); random_init to checkpoint files. Anything else is
    refused with a SelfsupError naming what to pass."""
    start = time.time()
    modality = checkpoint_modality(checkpoint)
    check_options(protocol, checkpoint, modality, random_init, pooling, image_options)
    data = data or DEFAULT_DATA.get(modality, "")
    k = k or DEFAULT_K.get(modality, 20)
    if k < 1:
        raise SelfsupError(f"--k must be at least 1, got {k}")
    torch.manual_seed(seed)  # before building the network: a random-init twin is seeded
    by_frame = modality == "image" and data in VIDEO_DATA  # an image encoder on clips, frame by frame
    train_set, test_set = open_labeled_split("video" if by_frame else modality, data, seed, test_fraction, limit)
    check_classes(train_set, data)
    if checkpoint == "tfidf":
        scores = {"top1": _tfidf(protocol, train_set, test_set), "encoder": "TF-IDF + logistic regression"}
    elif protocol == "mlm":
        scores = _mlm(checkpoint, random_init, limit, seed)
    else:
        channels, native = getattr(train_set, "channels", 3), getattr(train_set, "native_size", None)
        image_options = baseline_image_options(checkpoint, train_set, image_options)
        encoder = frozen_encoder(checkpoint, random_init, {"pooling": pooling} if pooling else None, channels,
                                 native, **{key: v for key, v in image_options.items() if v is not None})
        encoder = framewise(encoder) if by_frame else encoder
        batch_size = batch_size or (256 if modality == "image" and not by_frame else 64)
        path = Path(out) if out else _default_out(protocol, checkpoint, data, random_init, image_options.get("backbone"),
                                                  seed=seed)
        cache = _features_file(path.parent, checkpoint, data, seed, random_init, pooling, test_fraction, limit,
                               image_options)
        if cache.exists():  # knn after linear (or a rerun): the same encoder's features of the same split
            train_x, train_y, test_x, test_y = torch.load(cache, weights_only=True)
        else:
            train_x, train_y = extract_features(encoder, train_set, batch_size, num_workers, desc="train features")
            test_x, test_y = extract_features(encoder, test_set, batch_size, num_workers, desc="test features")
            if (train_x.numel() + test_x.numel()) * 4 <= CACHE_BYTES:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save((train_x, train_y, test_x, test_y), cache)
        k = min(k, len(train_x))  # the k actually used, also in the printed line
        scores = {"top1": top1(protocol, train_x, train_y, test_x, test_y, k, temperature),
                  "encoder": encoder.description,
                  **({"k": k, "temperature": temperature} if protocol == "knn" else {}),
                  "feature_dim": int(train_x.shape[1]), **({"pooling": pooling} if pooling else {}),
                  **({"framewise": True} if by_frame else {}),
                  **({"image_size": encoder.image_size} if encoder.image_size else {})}
    result = {"protocol": protocol, **scores, "top1": round(scores["top1"], 4), "checkpoint": checkpoint,
              "random_init": random_init, "modality": modality, "data": data, "n_train": len(train_set),
              "n_test": len(test_set), "classes": len(train_set.classes), "seconds": round(time.time() - start, 1)}
    return write_result(result, Path(out) if out else _default_out(protocol, checkpoint, data, random_init,
                                                                   image_options.get("backbone"), seed=seed))


def top1(protocol: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
         k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 on test features (M, D) of the weighted kNN ('knn', k neighbours, vote exp(s/temperature)) or the
    linear probe ('linear') fit on train features (N, D) with labels (N,)."""
    train_x, test_x = torch.as_tensor(train_x).float(), torch.as_tensor(test_x).float()
    train_y, test_y = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
    if protocol == "knn":
        predicted = knn_predict(train_x, train_y, test_x, k, temperature)
    else:
        predicted = torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy()))
    return float((predicted == test_y).float().mean())


def check_options(protocol: str, checkpoint: str, modality: str, random_init: bool, pooling: str | None,
                   image_options: dict[str, Any]) -> None:
    """Refuse, with one line, every option that would be ignored for this checkpoint."""
    if protocol not in ("knn", "linear", "mlm"):
        raise SelfsupError(f"unknown evaluation '{protocol}'; use knn, linear or mlm")
    if protocol == "mlm" and modality != "text":
        raise SelfsupError(f"mlm does not apply to {modality} encoders: mlm evaluates text models, pass a bert or "
                           "albert checkpoint")
    if checkpoint == "tfidf" and protocol != "linear":
        raise SelfsupError("the tfidf baseline is a linear classifier: use `selfsup eval linear --checkpoint tfidf`")
    if random_init and checkpoint in ("random", "pixels", "tfidf", "mfcc"):
        raise SelfsupError(f"--random-init makes the random twin of a checkpoint file; '{checkpoint}' has no weights")
    given = [key for key, value in image_options.items() if value not in (None, False, {})]
    if modality != "image" and given:
        raise SelfsupError(f"--{given[0].replace('_', '-')} applies to image encoders; this is a {modality} one")
    if checkpoint != "random" and [key for key in given if key != "image_size"]:
        raise SelfsupError(f"--{given[0].replace('_', '-')} sizes the network of --checkpoint random; "
                           f"'{checkpoint}' fixes its own")
    if pooling is not None and (modality != "text" or checkpoint == "tfidf"):
        raise SelfsupError("--pooling chooses how a text encoder's token states become one feature; "
                           f"drop it for {checkpoint if checkpoint == 'tfidf' else f'{modality} encoders'}")


def check_classes(train_set: Any, data: str) -> None:
    """A classifier needs two classes among the training labels."""
    labels = getattr(train_set, "labels", None)
    if labels is not None and len(torch.unique(torch.as_tensor(labels))) < 2:
        raise SelfsupError(f"the training side of {data} holds a single class; a classifier needs at least two: "
                           "add class folders")


def _tfidf(protocol: str, train_set: Any, test_set: Any) -> float:
    from selfsup.text import tfidf_baseline

    return tfidf_baseline(train_set.texts, train_set.labels, test_set.texts, test_set.labels)


def _mlm(checkpoint: str, random_init: bool, limit: tuple[int, int] | None, seed: int) -> dict[str, Any]:
    """Masked-token accuracy of a BERT/ALBERT on the held-out books (their chapters as documents)."""
    from selfsup.checkpoints import load_method
    from selfsup.text import genre_split, masked_token_accuracy, verse_documents

    method, meta = load_method(checkpoint, weights=not random_init)
    test = genre_split(seed=0, limit=limit)[1]
    scores = masked_token_accuracy(method.model, method.tokenizer, verse_documents(test), method.config.max_len,
                                   seed, whole_word=method.config.whole_word)
    twin = " at random init" if random_init else ""
    return {"top1": scores["mlm"], **{key: round(v, 4) for key, v in scores.items()},
            "encoder": f"{meta['method']} {method.network_name()}{twin}"}


def write_result(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write `result` as JSON to `path`; returns it with "json": the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return {**result, "json": str(path)}


def _features_file(folder: Path, checkpoint: str, data: str, *settings: Any) -> Path:
    """FOLDER/features-HASH.pt for this encoder (the checkpoint file as it is now) on this split."""
    stamp = [os.path.realpath(checkpoint), os.stat(checkpoint).st_mtime_ns] if os.path.isfile(checkpoint) \
        else checkpoint
    key = json.dumps([stamp, os.path.realpath(data) if os.path.exists(data) else data, *settings,
                      AUDIO_EVAL_SECONDS], sort_keys=True, default=str)
    return folder / f"features-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def data_tag(data: str) -> str:
    return data.replace("/", "_").replace(":", "_").strip("_.")


def _default_out(protocol: str, checkpoint: str, data: str, random_init: bool, backbone: str | None,
                 seed: int | None = None) -> Path:
    """runs/baselines/NAME-PROTOCOL-DATA.json for a baseline, RUN/eval/PROTOCOL-DATA.json for a checkpoint; a
    random-init encoder's name carries its seed (given `seed`), so runs with another --seed keep their own file."""
    seeded = f"-seed{seed}" if seed is not None else ""
    if checkpoint in ("random", "pixels", "tfidf", "mfcc"):
        name = f"random-{(backbone or 'resnet18').replace(':', '_')}{seeded}" if checkpoint == "random" else checkpoint
        return Path("runs") / "baselines" / f"{name}-{protocol}-{data_tag(data)}.json"
    twin = f"-random-init{seeded}" if random_init else ""
    return Path(checkpoint).resolve().parent.parent / "eval" / f"{protocol}-{data_tag(data)}{twin}.json"


def baseline_image_options(checkpoint: str, train_set: Any, image_options: dict[str, Any]) -> dict[str, Any]:
    """`image_options` with image_size set for a 'random' or 'pixels' baseline on an image folder when none was
    given: the side `selfsup train` picks for those images (data.folder.folder_image_size), so the baseline is
    measured with the protocol of the checkpoints it is compared with. Anything else is returned as it is."""
    if checkpoint not in ("random", "pixels") or image_options.get("image_size") or \
            not isinstance(train_set, FolderImageSet):
        return image_options
    found = folder_image_size(train_set.paths)
    return {**image_options, "image_size": found[0]} if found else image_options
