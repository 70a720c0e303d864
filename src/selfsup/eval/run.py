"""`selfsup eval knn|linear`: features of the train and test splits, a classifier, top-1, JSON."""

import json
import time
from pathlib import Path
from typing import Any

import torch

from selfsup.data import open_labeled
from selfsup.errors import SelfsupError
from selfsup.eval.features import extract_features, load_encoder
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import linear_probe


def evaluate(protocol: str, checkpoint: str, data: str = "fashion-mnist", k: int = 200,
             temperature: float = 0.07, backbone: str = "resnet18", small_stem: bool = False,
             image_size: int | None = None, test_fraction: float = 0.2, seed: int = 0,
             out: str | None = None, batch_size: int = 256, num_workers: int = 0,
             backbone_kwargs: dict | None = None) -> dict[str, Any]:
    """Top-1 of `protocol` ('knn' or 'linear') on frozen features; writes and returns the result."""
    if protocol not in ("knn", "linear"):
        raise SelfsupError(f"unknown evaluation '{protocol}'; use knn or linear")
    start = time.time()
    train_set, test_set = open_labeled(data, test_fraction=test_fraction, seed=seed)
    encoder = load_encoder(checkpoint, train_set.channels, train_set.native_size, backbone, small_stem, image_size,
                           backbone_kwargs)
    torch.manual_seed(seed)
    train_x, train_y = extract_features(encoder, train_set, batch_size, num_workers, desc="train features")
    test_x, test_y = extract_features(encoder, test_set, batch_size, num_workers, desc="test features")
    if protocol == "knn":
        predicted = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature)
        settings = {"k": k, "temperature": temperature}
    else:
        predicted = torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy()))
        settings = {}
    result = {
        "protocol": protocol, "top1": round(float((predicted == test_y).float().mean()), 4), **settings,
        "encoder": encoder.description, "checkpoint": checkpoint, "data": data,
        "n_train": len(train_set), "n_test": len(test_set), "feature_dim": int(train_x.shape[1]),
        "image_size": encoder.image_size, "seconds": round(time.time() - start, 1),
    }
    path = Path(out) if out else _default_out(protocol, checkpoint, data, backbone)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    result["json"] = str(path)
    return result


def _default_out(protocol: str, checkpoint: str, data: str, backbone: str) -> Path:
    tag = data.replace("/", "_").replace(":", "_").strip("_.")
    if checkpoint in ("random", "pixels"):
        name = "pixels" if checkpoint == "pixels" else f"random-{backbone.replace(':', '_')}"
        return Path("runs") / "baselines" / f"{name}-{protocol}-{tag}.json"
    return Path(checkpoint).resolve().parent.parent / "eval" / f"{protocol}-{tag}.json"
