"""Evaluation of every modality through the method contract: frozen features (kNN, linear probe), fine-tuning,
distillation, figures, and the dense protocols (segmentation mIoU, video label propagation J)."""

from selfsup.eval.change import evaluate_change
from selfsup.eval.features import FrozenEncoder, extract_features, frozen_encoder
from selfsup.eval.linear import linear_probe
from selfsup.eval.propagate import evaluate_propagate
from selfsup.eval.run import evaluate, open_labeled_split
from selfsup.eval.segment import evaluate_segment
from selfsup.nn.knn import knn_predict

__all__ = ["FrozenEncoder", "evaluate", "evaluate_change", "evaluate_propagate", "evaluate_segment", "extract_features",
           "frozen_encoder", "knn_predict", "linear_probe", "open_labeled_split"]
