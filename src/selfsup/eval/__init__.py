"""Evaluation of frozen encoders: weighted kNN and linear probe."""

from selfsup.eval.features import Encoder, extract_features, load_encoder
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import evaluate

__all__ = ["Encoder", "evaluate", "extract_features", "knn_predict", "linear_probe", "load_encoder"]
