"""Seeded, stratified train/test splits for sets that come without one."""

from __future__ import annotations

import numpy as np

from selfsup.errors import SelfsupError


def check_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise SelfsupError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}; pass e.g. 0.2")


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), both sorted: round(test_fraction * n) of each class's n go to test (at least 1, at most n-1)."""
    check_fraction(test_fraction)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            name = classes[c] if classes is not None else c
            raise SelfsupError(
                f"class '{name}' has only {len(members)} image; a train/test split needs at least 2 per class: "
                "add images, or provide separate train/ and test/ folders"
            )
        # One generator per (seed, class): a class's split does not change when other classes are added.
        rng = np.random.default_rng([seed & (2**64 - 1), int(c)])
        members = rng.permutation(members)
        k = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
