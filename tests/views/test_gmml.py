import math

import pytest
import torch

from selfsup.views.gmml import GMMLCorruption, _derangement


def images(n=64, size=28):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(0)) + 5.0  # far from 0 and noise


def test_noise_and_zero_fills_cover_the_ratio_and_leave_the_rest_untouched():
    x = images()
    for fill in ("noise", "zeros"):
        corrupted, mask = GMMLCorruption(ratio=0.5, fills=(fill,))(x, torch.Generator().manual_seed(1))
        coverage = mask.mean(dim=(1, 2, 3))
        # rectangles are added until 0.5 is covered; the last one adds at most 7 x 7 of 28 x 28 px
        assert torch.all(coverage >= 0.5) and torch.all(coverage < 0.5 + 49 / 784 + 1e-6)
        keep = mask == 0
        assert torch.equal(corrupted[keep], x[keep])
        hidden = corrupted[mask == 1]
        if fill == "zeros":
            assert torch.all(hidden == 0)
        else:  # N(0, 1) noise, nothing like the images' values near 5
            assert abs(float(hidden.mean())) < 0.05 and abs(float(hidden.std()) - 1) < 0.05


def test_replace_takes_the_same_pixels_of_another_image():
    x = images(16)
    g = torch.Generator().manual_seed(2)
    donors = _derangement(16, torch.Generator().manual_seed(2))
    corrupted, mask = GMMLCorruption(ratio=0.5, replace_ratio=0.3, fills=("replace",))(x, g)
    coverage = mask.mean(dim=(1, 2, 3))
    assert torch.all(coverage >= 0.3) and torch.all(coverage < 0.3 + 49 / 784 + 1e-6)
    for b in range(16):
        hidden = mask[b, 0] == 1
        assert torch.equal(corrupted[b, 0][hidden], x[donors[b], 0][hidden]) and donors[b] != b


def test_noise_plus_replace_replaces_first_then_adds_noise_up_to_the_total():
    x = images(32)
    corrupted, mask = GMMLCorruption(ratio=0.6, replace_ratio=0.3, fills=("noise+replace",))(
        x, torch.Generator().manual_seed(3))
    assert torch.all(mask.mean(dim=(1, 2, 3)) >= 0.6)
    hidden = mask == 1
    from_images = (corrupted - 5).abs() < 4  # replaced pixels still look like images (values near 5)
    replaced_share = (from_images & hidden).float().sum(dim=(1, 2, 3)) / 784
    assert torch.all(replaced_share >= 0.3) and torch.all(replaced_share < 0.6)


def test_each_image_draws_its_fill_from_the_list():
    x = images(200)
    corrupted, mask = GMMLCorruption(fills=("noise", "zeros"))(x, torch.Generator().manual_seed(4))
    zeroed = [bool(torch.all(corrupted[b][mask[b] == 1] == 0)) for b in range(200)]
    assert 60 < sum(zeroed) < 140


def test_sides_stay_between_the_fractions_and_align_snaps_to_the_grid():
    corruption = GMMLCorruption(side=(0.05, 0.25))
    sides = [corruption._side(28, torch.Generator().manual_seed(s)) for s in range(300)]
    assert min(sides) == math.ceil(0.05 * 28) and max(sides) == math.floor(0.25 * 28)
    aligned = GMMLCorruption(side=(0.05, 0.3), align=4)
    _, mask = aligned(images(16), torch.Generator().manual_seed(5))
    blocks = mask.view(16, 1, 7, 4, 7, 4)
    assert torch.equal(blocks.amin(dim=(3, 5)), blocks.amax(dim=(3, 5)))  # every 4x4 patch all or nothing
    one = aligned.rectangles((28, 28), 1e-6, torch.zeros(28, 28, dtype=torch.bool), torch.Generator().manual_seed(6))
    rows, cols = one.any(dim=1).nonzero().flatten(), one.any(dim=0).nonzero().flatten()
    assert len(rows) % 4 == 0 and len(cols) % 4 == 0 and 4 <= len(rows) <= 8 and rows[0] % 4 == 0


def test_the_seed_fixes_the_corruption():
    x, corruption = images(8), GMMLCorruption(fills=("noise", "replace", "noise+replace"))
    a = corruption(x, torch.Generator().manual_seed(7))
    b = corruption(x, torch.Generator().manual_seed(7))
    c = corruption(x, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown GMML fill"):
        GMMLCorruption(fills=("blur",))
    with pytest.raises(ValueError, match="replace_ratio <= ratio"):
        GMMLCorruption(ratio=0.2, replace_ratio=0.3)
