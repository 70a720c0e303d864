import numpy as np
import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.video import MOTIONS, centre_clip, load_moving_objects, open_labeled_video


def test_moving_objects_is_read_back_as_written(tiny_moving_objects):
    train = load_moving_objects("train")
    assert len(train) == 16 and train.frames.shape == (16, 32, 64, 64, 3) and isinstance(train.frames, np.memmap)
    assert train.masks.shape == (16, 32, 64, 64) and train.masks.dtype == bool  # unpacked from bits
    ys, xs = np.nonzero(train.masks[3, 7])
    assert tuple(train.boxes[3, 7]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert train.clip(0).shape == (32, 64, 64, 3) and train.clip(0).dtype == torch.uint8


def test_labelled_clips_by_object_and_by_motion(tiny_moving_objects):
    train, test = open_labeled_video("moving-objects")
    assert (len(train), len(test)) == (16, 8) and len(train.classes) == 10 and train.name == "moving-objects/train"
    clip, label = train[2]
    assert clip.shape == (32, 64, 64, 3) and label == int(load_moving_objects("train").objects[2])
    train, test = open_labeled_video("moving-objects-motion")
    assert train.classes == list(MOTIONS) and set(train.labels.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(SelfsupError, match="split is fixed"):
        open_labeled_video("moving-objects", test_fraction=0.3)
    with pytest.raises(SelfsupError, match="pass moving-objects or moving-objects-motion"):
        open_labeled_video("clips")


def test_centre_clip_takes_the_middle_and_repeats_the_last_frame_of_a_short_video():
    video = torch.arange(20)
    assert centre_clip(video, 4, 2).tolist() == [6, 8, 10, 12]  # span 7, (20 - 7) // 2 = 6
    assert centre_clip(video[:5], 4, 2).tolist() == [0, 2, 4, 4]
