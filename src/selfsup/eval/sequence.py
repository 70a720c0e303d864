"""`selfsup eval` for text and audio encoders: a checkpoint (or its random-init twin, or the TF-IDF / MFCC baseline)
on a labeled text or audio task; writes and returns the result like the image protocols.

Text (`--data bible-genres`): a verse's genre, train/test split by book (text/evaluate.py); protocols knn, linear,
finetune, and mlm (masked-token accuracy on the held-out books). Audio (`--data spoken-words`,
`tuxpaint-languages` or a labeled folder DIR/<class>/...): knn and linear on mean-pooled frozen features.
"""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from selfsup.checkpoints import load_method, read_checkpoint
from selfsup.errors import SelfsupError

BASELINES = {"tfidf": "text", "mfcc": "audio"}  # --checkpoint NAME: the no-pretraining reference of a modality
DEFAULT_DATA = {"text": "bible-genres", "audio": "spoken-words"}
PROTOCOLS = {"text": ("knn", "linear", "finetune", "mlm"), "audio": ("knn", "linear")}
EVAL_SECONDS = 2.0  # audio features (and MFCCs) describe the first 2 s of a clip, the training crop's length


def modality_of(checkpoint: str) -> str | None:
    """"text" or "audio" for a text/audio checkpoint or baseline, None for an image one ('random', 'pixels', ...)."""
    if checkpoint in BASELINES:
        return BASELINES[checkpoint]
    if checkpoint in ("random", "pixels"):
        return None
    return read_checkpoint(checkpoint)["selfsup"].get("modality")


def evaluate_sequence(protocol: str, checkpoint: str, data: str | None = None, random_init: bool = False,
                      pooling: str = "mean", k: int = 20, limit: tuple[int, int] | None = None, seed: int = 0,
                      out: str | None = None, steps: int = 300, lr: float | None = None, batch_size: int = 32,
                      progress: bool = True) -> dict[str, Any]:
    """Top-1 (or masked-token accuracy) of `protocol` for a text/audio `checkpoint`, 'tfidf' or 'mfcc'.
    random_init: the checkpoint's network (and tokenizer) with fresh weights, the twin the figure is read against."""
    start = time.time()
    torch.manual_seed(seed)  # before building the network: the random-init twin is seeded
    if checkpoint in BASELINES:
        method, modality, encoder = None, BASELINES[checkpoint], checkpoint
    else:  # one read of the checkpoint gives the network and its modality
        method, meta = load_method(checkpoint, weights=not random_init)
        modality = meta.get("modality")
        encoder = f"{meta['method']} {type(method.backbone).__name__}{' at random init' if random_init else ''}"
    if modality is None:
        raise SelfsupError(f"'{checkpoint}' holds an image model: evaluate it with `selfsup eval` on image data")
    if protocol not in PROTOCOLS[modality]:
        raise SelfsupError(f"{protocol} does not apply to {modality} encoders; use {' or '.join(PROTOCOLS[modality])}")
    data = data or DEFAULT_DATA[modality]
    path = Path(out) if out else _default_out(protocol, checkpoint, data, random_init)
    path.parent.mkdir(parents=True, exist_ok=True)
    if modality == "text":
        scores = _text(protocol, method, data, pooling, k, limit, seed, steps, lr, batch_size, progress)
    else:
        cache = _features_file(path.parent, checkpoint, data, seed, random_init)
        scores = _audio(protocol, method, data, k, seed, batch_size, cache)
    result = {"protocol": protocol, **scores, "encoder": encoder, "checkpoint": checkpoint, "random_init": random_init,
              "data": data, "seconds": round(time.time() - start, 1)}
    path.write_text(json.dumps(result, indent=2))
    result["json"] = str(path)
    return result


def _text(protocol: str, method: Any, data: str, pooling: str, k: int, limit: tuple[int, int] | None, seed: int,
          steps: int, lr: float | None, batch_size: int, progress: bool) -> dict[str, Any]:
    from selfsup.text.evaluate import (
        finetune_genre,
        genre_split,
        masked_token_accuracy,
        probe_genre,
        texts_labels,
        tfidf_baseline,
        verse_documents,
    )

    if data != "bible-genres":
        raise SelfsupError(f"text encoders are evaluated on bible-genres (a verse's genre, split by book), not {data!r}")
    train, test = genre_split(seed=0, limit=limit)  # seed 0: the split `selfsup train bert` held out
    sizes = {"n_train": len(train), "n_test": len(test)}
    (train_x, train_y), (test_x, test_y) = texts_labels(train), texts_labels(test)
    if method is None:  # tfidf
        if protocol != "linear":
            raise SelfsupError("the tfidf baseline is a linear classifier: use `selfsup eval linear --checkpoint tfidf`")
        return {"top1": round(tfidf_baseline(train_x, train_y, test_x, test_y), 4), **sizes}
    if protocol == "mlm":
        scores = masked_token_accuracy(method.model, method.tokenizer, verse_documents(test),
                                       method.config.max_len, seed, whole_word=method.config.whole_word)
        return {"top1": round(scores["mlm"], 4), **{k: round(v, 4) for k, v in scores.items()}, **sizes}
    if protocol == "finetune":
        top1 = finetune_genre(method.backbone, method.tokenizer, train_x, train_y, test_x, test_y, steps=steps,
                              lr=lr or 1e-4, batch_size=batch_size, pooling=pooling, max_len=method.config.max_len,
                              seed=seed, progress=progress)
        return {"top1": round(top1, 4), "steps": steps, "pooling": pooling, **sizes}
    scores = probe_genre(method.backbone, method.tokenizer, (train_x, train_y), (test_x, test_y), pooling, k,
                         max_len=method.config.max_len)  # texts cut to the positions the network has
    return {"top1": round(scores[protocol], 4), "pooling": pooling, **({"k": k} if protocol == "knn" else {}),
            **sizes}


def _audio(protocol: str, method: Any, data: str, k: int, seed: int, batch_size: int, cache: Path) -> dict[str, Any]:
    from selfsup.audio import mfcc_dataset_features, open_labeled_audio, pooled_features, probe

    train, test, classes = open_labeled_audio(data, seed=seed, max_seconds=EVAL_SECONDS)
    if cache.exists():  # knn after linear (or a rerun): the same encoder's features of the same clips
        train_x, train_y, test_x, test_y = torch.load(cache, weights_only=True)
    elif method is None:  # mfcc
        (train_x, train_y), (test_x, test_y) = mfcc_dataset_features(train), mfcc_dataset_features(test)
    else:
        with torch.no_grad():
            train_x, train_y = pooled_features(method.embed, train, batch_size)
            test_x, test_y = pooled_features(method.embed, test, batch_size)
    if not cache.exists():
        torch.save((train_x, train_y, test_x, test_y), cache)
    scores = probe(train_x, train_y, test_x, test_y, k=k)
    return {"top1": round(scores[protocol], 4), **({"k": k} if protocol == "knn" else {}), "classes": len(classes),
            "n_train": len(train), "n_test": len(test)}


def _features_file(folder: Path, checkpoint: str, data: str, seed: int, random_init: bool) -> Path:
    """FOLDER/features-HASH.pt for this encoder (the checkpoint file as it is now) on this split."""
    stamp = [os.path.realpath(checkpoint), os.stat(checkpoint).st_mtime_ns] if checkpoint not in BASELINES else checkpoint
    key = json.dumps([stamp, os.path.realpath(data) if os.path.exists(data) else data, seed, random_init, EVAL_SECONDS])
    return folder / f"features-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _default_out(protocol: str, checkpoint: str, data: str, random_init: bool) -> Path:
    tag = data.replace("/", "_").replace(":", "_").strip("_.")
    if checkpoint in BASELINES:
        return Path("runs") / "baselines" / f"{checkpoint}-{protocol}-{tag}.json"
    twin = "-random-init" if random_init else ""
    return Path(checkpoint).resolve().parent.parent / "eval" / f"{protocol}-{tag}{twin}.json"
