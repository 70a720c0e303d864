import math

import kornia
import pytest
import torch

from selfsup.views.exemplar import ExemplarViews

SIZE = 64


def _blobs() -> torch.Tensor:
    """(3, 64, 64): channel 0 a Gaussian blob at the image centre, channel 1 one 10 px to its right."""
    ys, xs = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    c = (SIZE - 1) / 2
    blob = lambda x0, y0: torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 2.0 ** 2))
    return torch.stack([blob(c, c), blob(c + 10, c), torch.zeros(SIZE, SIZE)])


def _centroid(channel: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
    w = channel.clamp(min=0)
    return torch.stack([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def _geometry(out: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Translation (2,), scale and rotation (degrees) that moved the two blobs."""
    centre, other = _centroid(out[0]), _centroid(out[1])
    v = other - centre
    return centre - (SIZE - 1) / 2, float(v.norm() / 10), math.degrees(math.atan2(float(v[1]), float(v[0])))


@pytest.mark.parametrize("path", ["per-sample", "batched"])
def test_translation_scale_and_rotation_stay_in_and_span_the_paper_ranges(path):
    torch.manual_seed(0)
    views = ExemplarViews(SIZE, 3)
    image = _blobs()
    if path == "per-sample":
        outs = [views.geometric(image) for _ in range(300)]
    else:
        outs = views.batch_geometric(image.expand(300, -1, -1, -1))
    shifts, scales, angles = zip(*(_geometry(out) for out in outs))
    shifts = torch.stack(shifts).abs()
    assert shifts.max() <= 0.2 * SIZE + 1 and shifts.max() > 0.15 * SIZE  # ±0.2 of the side
    assert 0.7 - 0.03 <= min(scales) < 0.78 and 1.32 < max(scales) <= 1.4 + 0.03  # scale 0.7-1.4
    assert max(abs(a) for a in angles) <= 21 and max(abs(a) for a in angles) > 16  # ±20°


def _two_level(n: int) -> torch.Tensor:
    x = torch.full((n, 1, 8, 8), 0.4)
    x[..., 4:] = 0.6
    return x


@pytest.mark.parametrize("path", ["per-sample", "batched"])
def test_one_channel_gets_brightness_and_contrast_in_the_paper_ranges(path):
    torch.manual_seed(1)
    views = ExemplarViews(8, 1)
    x = _two_level(400)
    out = torch.stack([views.photometric(im) for im in x]) if path == "per-sample" else views.batch_photometric(x)
    # brightness b multiplies, contrast c blends with the mean 0.5: values b(0.5 ± 0.1c), in either order
    b = out.mean(dim=(1, 2, 3)) / 0.5
    c = (out[..., 4:].mean(dim=(1, 2, 3)) - out[..., :4].mean(dim=(1, 2, 3))) / (0.2 * b)
    assert 0.7 - 1e-4 <= b.min() < 0.75 and 1.35 < b.max() <= 1.4 + 1e-4
    assert 0.5 - 1e-4 <= c.min() < 0.6 and 1.9 < c.max() <= 2.0 + 1e-4


@pytest.mark.parametrize("path", ["per-sample", "batched"])
def test_colour_images_get_hue_shifts_up_to_a_tenth_of_the_circle(path):
    torch.manual_seed(2)
    views = ExemplarViews(8, 3)
    x = torch.tensor([0.5, 0.4, 0.4])[None, :, None, None].expand(300, 3, 8, 8).contiguous()  # pale red
    out = torch.stack([views.photometric(im) for im in x]) if path == "per-sample" else views.batch_photometric(x)
    hue = kornia.color.rgb_to_hsv(out)[:, 0].mean(dim=(1, 2)) / (2 * math.pi)  # turns; red is 0
    shift = (hue + 0.5) % 1 - 0.5
    assert shift.abs().max() <= 0.1 + 1e-3 and shift.abs().max() > 0.09
    saturation = kornia.color.rgb_to_hsv(out)[:, 1].mean(dim=(1, 2))
    assert saturation.std() > 0.01  # saturation and contrast vary too


def test_views_are_normalised_floats_of_the_requested_size():
    torch.manual_seed(3)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    views = ExemplarViews(16, 1, n_views=3)(image)
    assert [tuple(v.shape) for v in views] == [(1, 16, 16)] * 3 and all(v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1]) and all(-1 <= v.min() and v.max() <= 1 for v in views)
    batches = ExemplarViews(16, 3, n_views=2).batch(torch.randint(0, 256, (5, 3, 28, 28), dtype=torch.uint8))
    assert [tuple(b.shape) for b in batches] == [(5, 3, 16, 16)] * 2 and not torch.equal(*batches)
