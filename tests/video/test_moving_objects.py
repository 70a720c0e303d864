import numpy as np
import pytest

from selfsup.errors import SelfsupError
from selfsup.video import MOTIONS, load_moving_objects, make_clips
from selfsup.video.moving_objects import S


def _objects() -> tuple[np.ndarray, np.ndarray]:
    """Three 28 x 28 'objects': filled squares of different sizes, classes 0, 1, 2."""
    objects = np.zeros((3, 28, 28), np.uint8)
    for k, half in enumerate((6, 9, 12)):
        objects[k, 14 - half: 14 + half, 14 - half: 14 + half] = 200
    return objects, np.arange(3)


def test_objects_move_in_their_direction_inside_the_frame_with_exact_masks_and_boxes():
    backgrounds = [np.full((40, 70, 80, 3), 30, np.uint8), np.full((35, 64, 64, 3), 60, np.uint8)]
    clips = make_clips(40, 0, backgrounds, *_objects(), frames=32)
    assert clips["frames"].shape == (40, 32, S, S, 3) and clips["masks"].shape == (40, 32, S, S)
    assert set(clips["objects"]) <= {0, 1, 2} and set(clips["motions"]) == set(range(len(MOTIONS)))
    for i in range(40):
        masks, boxes = clips["masks"][i], clips["boxes"][i]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= S).all()
        for t in (0, 15, 31):
            ys, xs = np.nonzero(masks[t])
            assert tuple(boxes[t]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            object_pixels = clips["frames"][i, t][masks[t]]
            for grey in (30, 60):  # drawn over the background: no object pixel keeps a background's colour
                assert (object_pixels != grey).any(axis=1).all()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (T, 2) x, y
        step = centre[-1] - centre[0]
        expected = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}[MOTIONS[clips["motions"][i]]]
        assert np.dot(step, expected) >= 0.6 * 31 - 1  # at least 0.6 px per frame along its direction
        assert abs(np.cross(step, expected)) <= 1  # and not across it


def test_the_same_seed_gives_the_same_clips():
    backgrounds = [np.random.default_rng(0).integers(0, 255, (33, 64, 70, 3), dtype=np.uint8)]
    a = make_clips(3, 7, backgrounds, *_objects())
    b = make_clips(3, 7, backgrounds, *_objects())
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_an_unknown_split_is_refused():
    with pytest.raises(SelfsupError, match="pass 'train' or 'test'"):
        load_moving_objects("val")
