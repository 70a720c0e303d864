"""Evaluation of every modality through the method contract: frozen features (kNN, linear probe), fine-tuning,
distillation and figures."""

from selfsup.eval.features import FrozenEncoder, extract_features, frozen_encoder
from selfsup.eval.linear import linear_probe
from selfsup.eval.run import evaluate, open_labeled_split
from selfsup.nn.knn import knn_predict

__all__ = ["FrozenEncoder", "evaluate", "extract_features", "frozen_encoder", "knn_predict", "linear_probe",
           "open_labeled_split"]
