"""Linear probe: multinomial logistic regression on frozen, standardised features (scikit-learn)."""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 max_iter: int = 200, C: float = 1.0) -> np.ndarray:
    """Predicted labels for test_features (M, D) from a classifier fit on (N, D) features."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    with warnings.catch_warnings():  # a probe stopped at max_iter is still a fair probe
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_features, train_labels)
    return probe.predict(test_features)
