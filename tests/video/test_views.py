import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.video import MEAN, STD, ClipViews, eval_clip, random_boxes


@pytest.mark.parametrize("size", [4, 37, 64])
def test_every_box_stays_inside_the_clip(size):
    g = torch.Generator().manual_seed(size)
    boxes = random_boxes(5000, size, (0.25, 0.75), g)  # (K, 4) x1, y1, x2, y2
    assert boxes.shape == (5000, 4)
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= size).all() and (y2 <= size).all()
    w, h = x2 - x1, y2 - y1
    assert (w >= 0.25 * size - 1e-4).all() and (w <= 0.75 * size + 1e-4).all()
    assert (h >= 0.25 * size - 1e-4).all() and (h <= 0.75 * size + 1e-4).all()
    assert x1.min() < 0.02 * size and x2.max() > 0.98 * size  # the whole frame is reached
    with pytest.raises(SelfsupError, match="box scale"):
        random_boxes(2, size, (0.5, 1.5))


def test_views_share_one_crop_and_the_boxes_fit_them():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8, generator=g)
    views = ClipViews(16, boxes=8)
    views.colour = torch.nn.Identity()  # geometry only: the same clip twice must give the same views
    x1, x2, boxes = views(clip, clip.clone())
    assert x1.shape == x2.shape == (3, 4, 16, 16) and x1.dtype == torch.float32
    assert torch.equal(x1, x2)
    assert boxes.shape == (8, 4) and (boxes >= 0).all() and (boxes <= 16).all()
    torch.manual_seed(1)
    y1, y2, _ = ClipViews(16, boxes=8)(clip, clip.clone())  # with colour: drawn per clip
    assert not torch.equal(y1, y2)


def test_the_same_seed_gives_the_same_views():
    clip = torch.randint(0, 256, (4, 20, 20, 3), dtype=torch.uint8)
    torch.manual_seed(3)
    a = ClipViews(16)(clip, clip)
    torch.manual_seed(3)
    b = ClipViews(16)(clip, clip)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_eval_clip_resizes_crops_and_normalises():
    clip = torch.full((3, 20, 40, 3), 255, dtype=torch.uint8)
    x = eval_clip(clip, 16)
    assert x.shape == (3, 3, 16, 16)
    expected = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)])
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), expected)
    with pytest.raises(SelfsupError, match="uint8 \\(T, H, W, 3\\)"):
        eval_clip(torch.zeros(3, 20, 20, dtype=torch.uint8), 16)
