import pytest
import torch

from selfsup.views.multicrop import MultiCropViews, local_crop_size


def _image(channels: int = 1, size: int = 28) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)


@pytest.mark.parametrize("size, local", [(224, 96), (28, 12), (32, 14), (96, 41), (8, 4), (4, 4), (3, 3)])
def test_local_size_is_96_of_224_rounded_at_least_4_px(size, local):
    assert local_crop_size(size) == local


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (1, 8)])
def test_two_global_then_n_local_crops_from_one_image_on_both_paths(channels, size):
    torch.manual_seed(0)
    recipe = MultiCropViews(size, channels, n_local=4)
    s = local_crop_size(size)
    expected = [(channels, size, size)] * 2 + [(channels, s, s)] * 4
    views = recipe(_image(channels, size + 5))  # any input size: crops are resized
    assert [tuple(v.shape) for v in views] == expected
    assert all(v.dtype == torch.float32 for v in views)
    assert len({v.sum().item() for v in views}) == 6  # independently drawn crops
    batches = recipe.batch(_image(channels, size).expand(5, -1, -1, -1))
    assert [tuple(b.shape) for b in batches] == [(5, *shape) for shape in expected]
    assert all(b.dtype == torch.float32 for b in batches)


def test_crop_counts_and_local_size_are_options():
    views = MultiCropViews(28, 1, n_local=0, local_size=20)(_image())
    assert len(views) == 2
    views = MultiCropViews(28, 1, n_local=3, local_size=20)(_image())
    assert [v.shape[-1] for v in views] == [28, 28, 20, 20, 20]


def _area_fractions(recipe: MultiCropViews, size: int, n: int = 2000) -> dict[str, torch.Tensor]:
    """Crop areas / image area drawn by each path's random resized crop (the first operation)."""
    image = _image(1, size)
    areas = {}
    for name, transform, batch in (("global", recipe.global_transform, recipe.global_batch),
                                   ("local", recipe.local_transform, recipe.local_batch)):
        boxes = [transform.transforms[0].make_params([image]) for _ in range(n)]
        areas[f"{name} per-sample"] = torch.tensor([b["height"] * b["width"] for b in boxes]) / size**2
        src = batch[0].forward_parameters(torch.Size([n, 1, size, size]))["src"]  # (n, 4, 2) corners, inclusive
        wh = src.amax(dim=1) - src.amin(dim=1) + 1  # (n, 2)
        areas[f"{name} batched"] = wh.prod(dim=1) / size**2
    return areas


def test_global_crops_cover_14_to_100_percent_and_local_crops_5_to_14_percent():
    torch.manual_seed(0)
    areas = _area_fractions(MultiCropViews(224, 3), 224)
    for path in ("per-sample", "batched"):
        g, loc = areas[f"global {path}"], areas[f"local {path}"]
        assert g.min() >= 0.14 - 0.01 and g.max() <= 1.0 and g.max() > 0.9, path
        assert loc.min() >= 0.05 - 0.01 and loc.max() <= 0.14 + 0.01, path
        # areas are drawn uniformly from the scale range (rejected boxes retried), so the means are near the middle
        assert abs(g.mean() - 0.57) < 0.08 and abs(loc.mean() - 0.095) < 0.01, path


def test_scale_options_reach_both_paths():
    torch.manual_seed(0)
    areas = _area_fractions(MultiCropViews(224, 3, global_scale=(0.5, 1.0), local_scale=(0.2, 0.3)), 224, n=300)
    for path in ("per-sample", "batched"):
        assert areas[f"global {path}"].min() >= 0.49 and areas[f"local {path}"].max() <= 0.31
        assert areas[f"local {path}"].min() >= 0.19


def test_blur_only_on_crops_of_64_pixels_or_more():
    def blurred(size):
        recipe = MultiCropViews(size, 3)
        return [("GaussianBlur" in repr(t)) for t in (recipe.global_transform, recipe.global_batch,
                                                       recipe.local_transform, recipe.local_batch)]
    assert blurred(32) == [False] * 4
    assert blurred(96) == [True, True, False, False]  # local crops 41 px
    assert blurred(224) == [True] * 4  # local crops 96 px


def test_one_channel_crops_get_brightness_and_contrast_only():
    recipe = MultiCropViews(28, 1)
    for transform in (recipe.global_transform, recipe.local_transform):
        text = repr(transform)
        assert "Grayscale" not in text and "saturation" not in text and "hue" not in text
    for batch in (recipe.global_batch, recipe.local_batch):
        jitter = batch[2]
        assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.8, 0.8, 0.0, 0.0)
        assert not any("Grayscale" in type(m).__name__ for m in batch)


def test_rgb_crops_get_grayscale_and_full_jitter():
    recipe = MultiCropViews(32, 3)
    for text in (repr(recipe.global_transform), repr(recipe.local_batch)):
        assert "Grayscale" in text and "ColorJitter" in text


def test_batched_crops_draw_parameters_per_sample():
    torch.manual_seed(0)
    same = _image(1, 28).expand(16, -1, -1, -1)  # sixteen copies of one image
    batches = MultiCropViews(28, 1, n_local=2).batch(same)
    for b in batches:
        assert len({tuple(row.tolist()) for row in b.flatten(1)}) == 16  # every copy got its own crop/jitter
    assert not torch.equal(batches[2], batches[3])


@pytest.mark.parametrize("crop", ["global", "local"])
def test_batched_crops_match_the_per_sample_recipe_in_distribution(crop):
    from selfsup.data import load_builtin

    images = load_builtin("fashion-mnist").images[:1024]
    recipe = MultiCropViews(28, 1, n_local=1)
    torch.manual_seed(0)
    index = 0 if crop == "global" else 2
    batched = recipe.batch(images)[index]
    per_sample = torch.stack([recipe(im)[index] for im in images])
    assert batched.shape == per_sample.shape
    # per-image means spread ~0.4, so their average over 1024 images has a standard error ~0.013
    for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3))):
        assert abs(stat(batched).mean() - stat(per_sample).mean()) < 0.06
        assert abs(stat(batched).std() - stat(per_sample).std()) < 0.06
    dark = lambda v: (v < -0.9).float().mean()  # background share: a function of the crop scale
    assert abs(dark(batched) - dark(per_sample)) < 0.05

