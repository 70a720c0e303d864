"""Labelled clips for evaluation: the built-in `moving-objects` clips labelled by the moving object's class
(`moving-objects`, 10 Fashion-MNIST classes) or by its motion (`moving-objects-motion`, 4 directions), on the
set's own train/test split (test backgrounds come from videos the train clips never show)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

from .moving_objects import MovingObjects, load_moving_objects

LABELED_VIDEO = {"moving-objects": "objects", "moving-objects-motion": "motions"}


class LabeledClips(Dataset):
    """Item i -> (clip i uint8 (T, S, S, 3), label i) of a moving-objects split; `labels` (N,) int64, `classes`."""

    def __init__(self, clips: MovingObjects, labels: np.ndarray, classes: list[str], name: str):
        self.clips, self.labels, self.classes, self.name = clips, torch.as_tensor(labels), classes, name

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.clips.clip(i), int(self.labels[i])


def open_labeled_video(data: str | os.PathLike, test_fraction: float | None = None) -> tuple[LabeledClips,
                                                                                             LabeledClips]:
    """(train, test) LabeledClips of `moving-objects` (label: object class) or `moving-objects-motion` (label:
    motion class); their split is fixed. A SelfsupError for any other name or a --test-fraction."""
    data = os.fspath(data)
    if data not in LABELED_VIDEO:
        raise SelfsupError(f"no labelled video set '{data}': pass {' or '.join(LABELED_VIDEO)} (labelled folders of "
                           "videos are not read yet)")
    if test_fraction is not None:
        raise SelfsupError(f"--test-fraction does not apply to {data}, whose train/test split is fixed; drop it")
    sides = []
    for split in ("train", "test"):
        clips = load_moving_objects(split)
        field = LABELED_VIDEO[data]
        classes = clips.object_classes if field == "objects" else clips.motion_classes
        sides.append(LabeledClips(clips, getattr(clips, field), classes, f"{data}/{split}"))
    return sides[0], sides[1]
